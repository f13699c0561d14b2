"""tar and tar.gz archives: every header parsed and every member's data read to the end, streamed.

A ``.tar.gz`` is inflated by the verifying gzip reader, not tarfile's own (which does not check
the CRC), and drained to its end after the last member so the trailer is checked too. tarfile
in stream mode (``r|``) reads each header and member once, in order; a header with a bad checksum
or cut short in the middle of the archive is an error here, where tarfile would quietly stop.
A failure names the member (or header) being read when the damage showed: gzip CRC and ISIZE
only show at the end of the gzip member, usually while the last tar member is read.
``facts["holds_secrets"]`` is ``yes`` when a member is an environment file (``.env``, ``.env.*``,
``*.env``, as the runbook's ``tar -czf env_backup.tar.gz .env* …`` packs them), ``no`` when the
whole archive was read without one, and absent when it broke before one was seen.
"""

from __future__ import annotations

import fnmatch
import io
import posixpath
import tarfile
from pathlib import Path
from typing import IO

from opsverify.backups.gzipstream import READ_SIZE, GunzipReader
from opsverify.backups.verdict import CorruptBackup, Expectations, Verdict, failed, passed

TAR_BUFFER = 1 << 18
SECRET_MEMBERS = (".env", ".env.*", "*.env")  # environment files: passwords, API keys


def is_secret_member(name: str) -> bool:
    """An environment file (``.env``, ``.env.production``, ``app.env``), by its base name."""
    base = posixpath.basename(name.rstrip("/"))
    return any(fnmatch.fnmatchcase(base, pattern) for pattern in SECRET_MEMBERS)


class StrictTarInfo(tarfile.TarInfo):
    """A TarInfo whose bad or short header is an error anywhere in the archive, not only at its start."""

    @classmethod
    def fromtarfile(cls, tarfile_: tarfile.TarFile) -> StrictTarInfo:
        try:
            return super().fromtarfile(tarfile_)
        except tarfile.HeaderError as exc:
            if type(exc).__name__ == "EOFHeaderError":  # an all-zero block: the regular end of the archive
                raise
            reason = "the archive ends without its end-of-archive blocks" if str(exc) == "empty header" else str(exc)
            raise tarfile.ReadError(reason) from None


class _Walk:
    """Members and bytes read so far, and where the reader is (for the message when it breaks)."""

    def __init__(self) -> None:
        self.members = 0
        self.size = 0
        self.secrets: list[str] = []
        self.last: str | None = None
        self.reading = False
        self.draining = False

    @property
    def where(self) -> str:
        if self.draining:
            return f"the end of the archive, after member '{self.last}'" if self.last else "the end of the archive"
        if self.last is None:
            return "the first header"
        return f"member '{self.last}'" if self.reading else f"the header after member '{self.last}'"

    def run(self, raw: IO[bytes]) -> None:
        with tarfile.open(fileobj=raw, mode="r|", bufsize=TAR_BUFFER, tarinfo=StrictTarInfo) as tar:
            while (member := tar.next()) is not None:
                self.members += 1
                self.last, self.reading = member.name, True
                if member.isreg() and is_secret_member(member.name):
                    self.secrets.append(member.name)
                if member.isreg():
                    self._read(tar, member)
                self.reading = False
                tar.members.clear()  # type: ignore[attr-defined]  # stream mode would keep every TarInfo
        self.draining = True
        while raw.read(READ_SIZE):  # the end-of-archive padding, and with it the gzip trailer
            pass

    def _read(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        data = tar.extractfile(member)
        if data is None:
            return
        while chunk := data.read(READ_SIZE):
            self.size += len(chunk)


def _facts(walk: _Walk, complete: bool) -> dict[str, str]:
    facts = {"members": str(walk.members), "bytes": str(walk.size)}
    if walk.secrets:
        facts["holds_secrets"], facts["secret_members"] = "yes", ",".join(walk.secrets)
    elif complete:
        facts["holds_secrets"] = "no"
    return facts


def verify_tar_stream(raw: IO[bytes], fmt: str, name: str = "<stream>") -> Verdict:
    """Walk a tar stream (already decompressed) member by member."""
    walk = _Walk()
    try:
        walk.run(raw)
    except (CorruptBackup, tarfile.TarError, EOFError) as exc:
        return failed(name, fmt, f"corrupt {fmt} at {walk.where}: {exc}", _facts(walk, complete=False))
    facts = _facts(walk, complete=True)
    return passed(name, fmt, f"intact: {walk.members:,} members, {walk.size:,} bytes", facts)


def verify_tar(path: Path, expect: Expectations) -> Verdict:
    """A plain ``.tar`` file."""
    with path.open("rb") as stream:
        return verify_tar_stream(stream, "tar", str(path))


def verify_tar_gz(path: Path, expect: Expectations) -> Verdict:
    """A ``.tar.gz``/``.tgz`` file, through the CRC-checking gzip reader."""
    with path.open("rb") as stream:
        gunzip = GunzipReader(stream)
        verdict = verify_tar_stream(io.BufferedReader(gunzip, READ_SIZE), "tar.gz", str(path))
    if verdict.ok:
        gz = gunzip.gzip
        facts = {**verdict.facts, "bytes_in": str(gz.bytes_in), "bytes_out": str(gz.bytes_out)}
        facts["gzip_members"] = str(gz.members)
        return passed(verdict.path, verdict.format, verdict.detail, facts)
    return verdict
