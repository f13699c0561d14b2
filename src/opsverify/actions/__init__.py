"""The action base: every state-changing fixture is an ``Action`` run by ``performed`` (guard, snapshot,
act, undo, verify), with scratch names made in one place and a janitor for what killed runs left.
"""

from opsverify.actions.base import Action, NotApplicable, Permanent, performed
from opsverify.actions.directory import ScratchDirectory
from opsverify.actions.names import ScratchNames

__all__ = ["Action", "NotApplicable", "Permanent", "ScratchDirectory", "ScratchNames", "performed"]
