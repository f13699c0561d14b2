"""``opsverify``: profile validation and schema, and the embedded sandbox.

Every error reaches the user as one sentence with the fix, and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from opsverify import __version__
from opsverify.errors import OpsverifyError, ProfileError

DEFAULT_STATE = Path(".sandbox")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsverify",
        description="Operational verification: runbook procedures as a pytest suite. "
        "Run the checks with pytest (e.g. `pytest -m daily --profile=FILE`); this command manages "
        "profiles and the embedded sandbox.",
    )
    parser.add_argument("--version", action="version", version=f"opsverify {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser("profile", help="validate a profile or print its JSON Schema")
    profile_commands = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = profile_commands.add_parser(
        "check",
        help="validate FILE (a regular UTF-8 YAML file of at most 8 MiB); print every problem with its YAML path "
        "and line, exit 1 if there is one",
    )
    check.add_argument("file", type=Path)
    profile_commands.add_parser(
        "schema",
        help="print the profile's JSON Schema (for editors; defaults in the profile's own syntax, e.g. 1d); "
        "exits 141 quietly when the reader closes the pipe (`| head`)",
    )

    sandbox = commands.add_parser("sandbox", help="the embedded sandbox: real servers on loopback")
    sandbox.add_argument("action", choices=["up", "down", "status"], help="start, stop, or show what runs where")
    sandbox.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="where it keeps data (./.sandbox)")
    sandbox.add_argument("--purge", action="store_true", help="with down: also delete the state dir")
    return parser


def _profile(args: argparse.Namespace) -> int:
    from opsverify.profile import load_profile, profile_schema

    if args.action == "schema":
        print(json.dumps(profile_schema(), indent=2))
        return 0
    try:
        loaded = load_profile(args.file)
    except ProfileError as err:
        # one problem: one line (`opsverify: profile F is not valid: PROBLEM`); several: one line each
        one = f"opsverify: profile {err.source} is not valid: {err.problems[0]}" if len(err.problems) == 1 else None
        print(one or err, file=sys.stderr)
        return 1
    counts = ", ".join(
        f"{len(getattr(loaded, s))} {s}" for s in ("services", "databases", "redis", "dependencies", "hosts", "backups")
    )
    print(f"{args.file}: profile {loaded.name} ({loaded.role}) is valid: {counts}")
    return 0


def _sandbox(args: argparse.Namespace) -> int:
    from opsverify import sandbox

    state_dir = args.state_dir.resolve()
    if args.action == "up":
        print(sandbox.up(state_dir).render())
    elif args.action == "down":
        sandbox.down(state_dir, purge=args.purge)
        print(f"sandbox in {state_dir} is down{' and purged' if args.purge else ''}")
    else:
        print(sandbox.status(state_dir).render())
    return 0


BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a C tool whose reader went away (`yes | head -1`)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code = _profile(args) if args.command == "profile" else _sandbox(args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # the reader closed the pipe (`opsverify profile schema | head -1`): stop quietly. Python docs, "Note on
        # SIGPIPE": point stdout at devnull so the interpreter's final flush does not fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return BROKEN_PIPE
    except OpsverifyError as err:
        print(f"opsverify: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("opsverify: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
