"""Scratch names, made in one place: prefix, run id, worker id, a counter, what it is for."""

from __future__ import annotations

import itertools
import re

from opsverify.localserver.scratch import SCRATCH_PREFIX


class ScratchNames:
    """``names("dump")`` -> ``opsverify_scratch_<run>_<worker>_<n>_dump``, unique in this run and worker.

    The counter belongs to the instance (one per session and worker), never to the module.
    """

    def __init__(self, run_id: str, worker: str) -> None:
        self.run_prefix = f"{SCRATCH_PREFIX}{re.sub(r'[^a-z0-9]', '', run_id.lower())[:8]}_"
        self.worker = re.sub(r"[^a-z0-9]", "", worker.lower()) or "main"
        self._counter = itertools.count(1)

    def __call__(self, what: str) -> str:
        safe = re.sub(r"[^a-z0-9_]", "_", what.lower())
        return f"{self.run_prefix}{self.worker}_{next(self._counter)}_{safe}"[:63]  # PostgreSQL's name limit

    def is_own(self, name: str) -> bool:
        """Whether ``name`` was made by this run (any worker)."""
        return name.startswith(self.run_prefix)
