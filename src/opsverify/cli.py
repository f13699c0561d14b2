"""``opsverify``: profile validation and schema, backup manifests, the run history, and the embedded sandbox.

Every error reaches the user as one sentence with the fix, and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opsverify import __version__
from opsverify.errors import OpsverifyError, ProfileError

DEFAULT_STATE = Path(".sandbox")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsverify",
        description="Operational verification: runbook procedures as a pytest suite. "
        "Run the checks with pytest (e.g. `pytest -m daily --profile=FILE`); this command manages "
        "profiles, backup manifests and the embedded sandbox, and reads the run history.",
    )
    parser.add_argument("--version", action="version", version=f"opsverify {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    profile = commands.add_parser("profile", help="validate a profile or print its JSON Schema")
    profile_commands = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = profile_commands.add_parser(
        "check",
        help="validate FILE (a regular UTF-8 YAML file of at most 8 MiB); print every problem with its YAML path "
        "and line",
        description="Validate FILE and print every problem with its YAML path and line (exit 1 if any). Warns (exit "
        "status unchanged) where an objective's RPO is shorter than the fastest recovery path the profile declares, "
        "and for each waiver that has expired.",
    )
    check.add_argument("file", type=Path)
    check.add_argument(
        "--connect",
        action="store_true",
        help="after validating, try every declared component once (databases and their backup_user, replicas, "
        "restore target, Redis, "
        "HTTP services, dependencies, hosts, backup directories, offsite buckets: connect, authenticate, read one "
        "fact), in parallel and bounded by the profile's timeouts, and print a table; exit 1 unless all are ok",
    )
    profile_commands.add_parser(
        "schema",
        help="print the profile's JSON Schema (for editors; defaults in the profile's own syntax, e.g. 1d); "
        "exits 141 quietly when the reader closes the pipe (`| head`)",
    )

    _manifest_parser(commands)
    _evidence_parser(commands)
    _history_parser(commands)

    sandbox = commands.add_parser("sandbox", help="the embedded sandbox: real servers on loopback")
    sandbox.add_argument("action", choices=["up", "down", "status"], help="start, stop, or show what runs where")
    sandbox.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="where it keeps data (./.sandbox)")
    sandbox.add_argument("--purge", action="store_true", help="with down: also delete the state dir")
    return parser


def _manifest_parser(commands: Any) -> None:
    manifest = commands.add_parser(
        "manifest", help="write or show <backup>.manifest.json, what a drill compares a restore with",
        description="A manifest records what a backup held (table rows, or Redis keys), bound to the backup's "
        "size and SHA-256; the restore drills compare the restored copy with it. Format: `opsverify manifest "
        "schema` (its JSON Schema), described field by field in docs/manifest.md of the opsverify repository.",
    )
    actions = manifest.add_subparsers(dest="action", required=True, metavar="ACTION")
    write = actions.add_parser(
        "write", help="write BACKUP.manifest.json beside BACKUP (call it right after the backup job)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write BACKUP.manifest.json atomically (a temporary file renamed into place).\n\n"
        "Without --from-source the facts are read from the backup itself: a plain or gzipped SQL dump is streamed\n"
        "and the rows of each table's COPY section counted; a pg_dump -Fc/-Fd archive is streamed through\n"
        "`pg_restore --data-only -f -` and counted the same way (constant memory; no checksums: those need a\n"
        "server); an RDB is loaded by a throwaway redis-server on a free loopback port (as the Redis drill does)\n"
        "and its persistent keys counted per database and sampled with their types; the server is gone after.\n\n"
        "With --from-source the facts are read from the live source of backup source NAME in the profile: its\n"
        "`database` in one REPEATABLE READ, READ ONLY snapshot (row counts and checksums) as the profile's\n"
        "monitoring role, or its Redis; with the profile's timeouts. Run it right after the dump, on a\n"
        "quiescent source: a write made in between is recorded but not in the backup, and the drill fails.\n"
        "BACKUP must be one of the source's files (its path and pattern; for an s3:// or ssh source, a local\n"
        "copy under its own name), finished (mtime) at most --max-lag ago; an older one is refused: write its\n"
        "manifest from the backup itself.\n\n"
        "An existing manifest is not replaced without --force, unless it already records the same facts (then\n"
        "it is left as it is, and the command succeeds). A backup that changes while it is read (a job still\n"
        "writing it) is refused.",
    )
    write.add_argument("backup", type=Path, metavar="BACKUP", help="the backup file, or a pg_dump -Fd directory")
    write.add_argument("--from-source", action="store_true", help="read the facts from the live source (see above)")
    write.add_argument("--profile", type=Path, metavar="FILE", help="with --from-source: the profile")
    write.add_argument("--source", metavar="NAME", help="with --from-source: the backup source's name in the profile")
    write.add_argument("--max-lag", type=_duration, metavar="DURATION",
                       help="with --from-source: refuse a backup finished (mtime) longer ago than this; default 15m, "
                       "room for gzip after pg_dump (gzip keeps pg_dump's mtime)")
    write.add_argument("--force", action="store_true", help="replace an existing manifest (one recording other facts, "
                       "or another file's)")
    show = actions.add_parser(
        "show", help="print BACKUP's manifest and whether it still matches the file (exit 1 when not)"
    )
    show.add_argument("backup", type=Path, metavar="BACKUP")
    actions.add_parser("schema", help="print the manifest format's JSON Schema")


def _evidence_parser(commands: Any) -> None:
    evidence = commands.add_parser(
        "evidence", help="the evidence.json format: print its JSON Schema, or validate a run's file",
        description="Every run writes reports/<run>/evidence.json (format version 1.0, described field by field in "
        "docs/evidence.md of the opsverify repository; its JSON Schema is docs/evidence.schema.json).",
    )
    actions = evidence.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("schema", help="print the JSON Schema of evidence.json")
    validate = actions.add_parser("validate", help="check FILE (an evidence.json, or a run folder holding one) "
                                  "against the schema; print its run and totals")
    validate.add_argument("file", type=Path, metavar="FILE")


def _evidence(args: argparse.Namespace) -> int:
    from opsverify.reporting.evidence import EvidenceFormatError, evidence_schema, read_evidence

    if args.action == "schema":
        print(json.dumps(evidence_schema(), indent=2))
        return 0
    path = args.file / "evidence.json" if args.file.is_dir() else args.file  # reports/latest, a run folder
    try:
        doc = read_evidence(path)
    except EvidenceFormatError as err:
        print(f"opsverify: {err}", file=sys.stderr)
        return 1
    totals = ", ".join(f"{n} {k}" for k, n in sorted(doc.run.totals.items())) or "no checks"
    print(f"{path}: evidence {doc.schema_version} of run {doc.run.id} (profile {doc.run.profile}, "
          f"{doc.run.role}) is valid: {totals}")
    return 0


def _history_parser(commands: Any) -> None:
    history = commands.add_parser(
        "history", help="the last runs, or one measured value's trend, from the run history",
        description="Read the history store each pytest run appends to: --store PATH (an SQLite file), else the "
        "profile's reporting.history (SQLite or PostgreSQL), else reports/history.sqlite. Without --metric: the "
        "newest runs (start, profile, role, selection, totals, exit status). With --metric NAME (e.g. "
        "database_size_bytes, backup_size_bytes, restore_rto_seconds, backup_age_seconds): its values over time per "
        "component, first -> last, and the least-squares change per 30 days.",
    )
    history.add_argument("--profile", type=Path, metavar="FILE",
                         help="read this profile's store and only its runs")
    history.add_argument("--store", type=Path, metavar="PATH", help="an SQLite history file (overrides the profile's)")
    history.add_argument("--reports-root", type=Path, metavar="DIR", default=Path("reports"),
                         help="where the default history.sqlite is (default: reports/)")
    history.add_argument("--last", type=int, default=20, metavar="N", help="at most N runs, or N points per "
                         "component (default 20)")
    history.add_argument("--metric", metavar="NAME", help="show this metric's trend instead of the runs")
    history.add_argument("--component", metavar="C", help="with --metric: only this component (the check's "
                         "parameter, e.g. a database name)")
    history.add_argument("--json", action="store_true", help="print JSON instead of text")


def _history(args: argparse.Namespace) -> int:
    from opsverify.profile import load_profile
    from opsverify.reporting.historyview import Request, show

    if args.component and not args.metric:
        raise OpsverifyError("--component needs --metric NAME: name the measured value whose trend to show")
    if args.last < 1:
        raise OpsverifyError(f"--last {args.last}: give a number of runs of at least 1")
    loaded = load_profile(args.profile) if args.profile else None
    print(show(Request(loaded, args.store, args.reports_root, args.last, args.metric, args.component, args.json)))
    return 0


def _duration(text: str) -> Any:
    from opsverify.durations import parse_duration

    try:
        return parse_duration(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _manifest(args: argparse.Namespace) -> int:
    from opsverify import manifests
    from opsverify.facts.manifest import SCHEMA

    if args.action == "schema":
        print(json.dumps(SCHEMA, indent=2))
        return 0
    if args.action == "write":
        written = manifests.write(args.backup, from_source=args.from_source, profile_file=args.profile,
                                  source=args.source, force=args.force, max_lag=args.max_lag)  # None: 15m
        print(written.summary)
        return 0
    text, matches = manifests.show(args.backup)
    print(text)
    return 0 if matches else 1


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
    if loaded.reporting.inventory is not None:  # a pytest run would stop on it at the start: say so now
        from opsverify.reporting.inventory import InventoryError, load_inventory

        try:
            load_inventory([loaded.reporting.inventory])
        except InventoryError as err:
            print(f"opsverify: profile {args.file} is not valid: reporting.inventory: {err}", file=sys.stderr)
            return 1
    counts = ", ".join(
        f"{len(getattr(loaded, s))} {s}" for s in ("services", "databases", "redis", "dependencies", "hosts", "backups")
    )
    print(f"{args.file}: profile {loaded.name} ({loaded.role}) is valid: {counts}", flush=True)
    from opsverify.profile.advice import rpo_warnings

    for warning in rpo_warnings(loaded):  # stdout flushed first: under 2>&1 each warning is a line of its own
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    from opsverify.reporting.waivers import expired_warnings, today_utc

    for warning in expired_warnings(loaded.waivers, today_utc()):  # not an error: the expired waiver no longer holds
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    if getattr(args, "connect", False):
        from opsverify.connect import reach_all, render

        rows = reach_all(loaded)
        print(render(rows))
        failed = sum(not r.ok for r in rows)
        print(f"{len(rows) - failed} of {len(rows)} components answered" + (f", {failed} failed" if failed else ""))
        return 1 if failed else 0
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
        if args.command == "manifest":
            code = _manifest(args)
        elif args.command == "evidence":
            code = _evidence(args)
        elif args.command == "history":
            code = _history(args)
        else:
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
