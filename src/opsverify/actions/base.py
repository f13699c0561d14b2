"""The action base: every state-changing fixture is one ``Action``, run by ``performed``.

``performed(action)``: guard (refuse what is not the action's own), snapshot, act, yield, undo,
re-read the live state, and raise one ``CleanupError`` naming what is left. The undo runs also
when the body or the act itself failed half-way, so it must be idempotent (safe on something
created only in part, or already gone). A team's own action::

    class TempTable(Action[str]):
        kind = "scratch table"

        def __init__(self, conn: psycopg.Connection, name: str) -> None:
            super().__init__(name)
            self.conn = conn

        def act(self) -> str:
            self.conn.execute(sql.SQL("CREATE TABLE {} (x int)").format(sql.Identifier(self.name)))
            return self.name

        def undo(self) -> None:
            self.conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(self.name)))

        def leftovers(self, before: object) -> list[str]:
            found = self.conn.execute("SELECT to_regclass(%s)", (self.name,)).fetchone()
            return [f"table {self.name}"] if found and found[0] else []
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar, Generic, TypeVar

from opsverify.errors import ActionRefused, CleanupError
from opsverify.localserver.scratch import require_scratch_name

T = TypeVar("T")


class Action(Generic[T]):
    """One state change with its undo and the proof that the undo worked.

    ``touches_production``: a ``role: production`` profile refuses the action unless the run
    passes ``--allow-maintenance`` (scratch resources on a staging target set it False).
    ``guard`` by default refuses a ``name`` without the scratch prefix; an action on a live
    resource (BGSAVE on the production Redis) overrides it with its own refusal.
    """

    kind: ClassVar[str] = "scratch resource"
    touches_production: ClassVar[bool] = True

    def __init__(self, name: str) -> None:
        self.name = name

    def guard(self) -> None:
        """Raise ``ActionRefused`` when the action would touch something that is not its own."""
        require_scratch_name(self.name, self.kind)

    def snapshot(self) -> object:
        """The live state before the change, for ``leftovers`` to compare with (default: nothing)."""
        return None

    def act(self) -> T:
        raise NotImplementedError

    def undo(self) -> None:
        """Reverse the change; idempotent, and safe after an ``act`` that failed half-way."""
        raise NotImplementedError

    def leftovers(self, before: object) -> list[str]:
        """Re-read the live state: what the action left behind (``[]`` when clean)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name})"


class NotApplicable(ActionRefused):
    """The action cannot run against what the profile declares (no ``maintenance_user``, a remote host):
    ``perform`` skips, with this sentence naming what to declare."""


class Permanent(Action[T]):
    """An action whose change is the runbook's own and stays (VACUUM, archiving jobs, dropping temporary
    tables, deleting old files): nothing to undo. ``act`` proves the change was exactly what it declared and
    records any other difference in ``differences``; ``leftovers`` re-reads the live state and names them.
    It acts on live resources by their declared name: the production gate decides, not the scratch prefix.
    """

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.differences: list[str] = []

    def guard(self) -> None:
        """Nothing to refuse by name; subclasses refuse what the profile does not declare (``NotApplicable``)."""

    def undo(self) -> None:
        """Nothing to reverse: the change is the maintenance itself."""

    def leftovers(self, before: object) -> list[str]:
        return list(self.differences)


@contextmanager
def performed(action: Action[T]) -> Iterator[T]:
    """Guard, snapshot, act, yield its result; then undo, verify, and raise ``CleanupError`` on a leftover."""
    action.guard()
    before = action.snapshot()
    try:
        yield action.act()
    finally:
        verify_undone(action, before)


def verify_undone(action: Action[T], before: object) -> None:
    """Undo (whatever happened before), then prove it by the live state."""
    undo_error = ""
    try:
        action.undo()
    except Exception as exc:  # noqa: BLE001 - the live state below decides; the error is named if it matters
        undo_error = f" (the undo failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    try:
        left = action.leftovers(before)
    except CleanupError:
        raise  # the action's own sentence (a flushed cache's lost keys: where their only copy is kept)
    except Exception as exc:  # noqa: BLE001
        raise CleanupError(f"cannot verify that {action.kind} {action.name} is gone: {exc}{undo_error}") from None
    if left:
        raise CleanupError(f"{action.kind} {action.name} left {'; '.join(left)} behind{undo_error}: remove it by hand")
