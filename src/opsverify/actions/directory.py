"""Actions whose resources live in one scratch directory: a dump file, a standby, a scratch Redis.

The directory carries its creator note from the first instant, so a run killed at any point
leaves something the janitor recognises; the undo stops every server started from it and
deletes it, and the proof re-reads processes, ports and the directory itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from opsverify.actions.base import Action
from opsverify.errors import ActionRefused
from opsverify.localserver.scratch import Server, make_scratch_dir, remove_scratch_dir, servers_in, still_there

T = TypeVar("T")


class ScratchDirectory(Action[T]):
    """Base of directory actions: ``self.directory`` is created by ``make_dir`` and removed by ``undo``."""

    kind = "scratch directory"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory.name)
        self.directory = directory
        self.started: list[Server] = []

    def guard(self) -> None:
        super().guard()
        if self.directory.exists():
            raise ActionRefused(f"refusing to reuse {self.directory}: a scratch directory is made new for each action")

    def make_dir(self, **note: object) -> Path:
        return make_scratch_dir(self.directory, kind=self.kind, **note)

    def undo(self) -> None:
        self.started = [*self.started, *servers_in(self.directory)]
        remove_scratch_dir(self.directory, self._servers())

    def leftovers(self, before: object) -> list[str]:
        return still_there(self.directory, self._servers())

    def _servers(self) -> list[Server]:
        unique = {s.pid: s for s in self.started}
        return list(unique.values())
