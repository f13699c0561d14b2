"""Processes started here (servers, tools): is one alive, stop it for sure, run a command with a timeout."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from opsverify.errors import LocalServerError


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (reaps it when it is our finished child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def cmdline(pid: int) -> str:
    """The command line of ``pid`` joined by spaces, or "" when it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_gone(pid: int, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to end; whether it did."""
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def stop_process(proc_or_pid: subprocess.Popen[bytes] | int, timeout: float = 10) -> None:
    """SIGTERM, wait up to ``timeout`` s, then SIGKILL; raise ``LocalServerError`` if the process survives."""
    if isinstance(proc_or_pid, subprocess.Popen):
        proc = proc_or_pid
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    raise LocalServerError(
                        f"process {proc.pid} survived SIGKILL: check it with `ps -p {proc.pid}`"
                    ) from None
        return
    pid = proc_or_pid
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if not pid_alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_gone(pid, wait):
            return
    raise LocalServerError(f"process {pid} survived SIGKILL: check it with `ps -p {pid}`")


def run(
    args: Sequence[str],
    what: str,
    timeout: float = 60,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a command to completion; its stdout, or ``LocalServerError`` naming ``what`` failed and why."""
    try:
        done = subprocess.run(
            list(args),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env else None,
            input=input_text,
            check=False,
            cwd=cwd,
            stdin=None if input_text is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise LocalServerError(f"{what} failed: {args[0]} is not installed (run `make setup`)") from None
    except subprocess.TimeoutExpired:
        raise LocalServerError(f"{what} did not finish within {timeout:g}s: retry, or look at its log") from None
    if done.returncode != 0:
        detail = (done.stderr.strip() or done.stdout.strip()).splitlines()
        last = detail[-1] if detail else f"exit code {done.returncode}"
        raise LocalServerError(f"{what} failed ({last})")
    return done.stdout
