"""A drill of a backup that is not on this machine (S3, an ssh:// host): the newest backup copied into
a private scratch directory through ``backups.fetch.download``, with the manifest beside it when the
source holds one; the directory (creator note inside) is deleted and proven gone after the drill.
"""

from __future__ import annotations

from pathlib import Path

from opsverify.actions.directory import ScratchDirectory
from opsverify.backups.catalog import BackupFile
from opsverify.backups.fetch import download
from opsverify.backups.remote import FetchError
from opsverify.facts.manifest import manifest_path
from opsverify.profile import BackupSource, Host, Timeouts


class DownloadedBackup(ScratchDirectory[Path]):
    """``backup`` downloaded into ``directory``: the local copy's path. ``FetchError`` when it cannot be had."""

    kind = "scratch download"
    touches_production = False  # a copy, on this machine

    def __init__(
        self, directory: Path, source: BackupSource, backup: BackupFile, timeouts: Timeouts, host: Host | None
    ) -> None:
        super().__init__(directory)
        self.source, self.backup, self.timeouts, self.host = source, backup, timeouts, host

    def act(self) -> Path:
        self.make_dir(backup=self.backup.location)
        local = self.directory / self.backup.name
        download(self.source, self.backup, self.timeouts, self.host, local)
        manifest = manifest_path(local)
        beside = BackupFile(manifest.name, self.backup.location + ".manifest.json", self.backup.taken, 0,
                            self.backup.time_from, host=self.backup.host,
                            path=self.backup.path + ".manifest.json" if self.backup.path else "")
        try:
            download(self.source, beside, self.timeouts, self.host, manifest)
        except FetchError:
            manifest.unlink(missing_ok=True)  # no manifest beside it (a drill then compares as without one)
        return local
