"""Errors that reach a person on call as one sentence, never as a traceback."""

from __future__ import annotations


class OpsverifyError(Exception):
    """A problem the user can fix; ``str(err)`` names the problem and the fix."""


class ProfileError(OpsverifyError):
    """The profile cannot be loaded; ``problems`` lists each one with its YAML path."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"profile {source} is not valid ({len(problems)} problem(s)):\n{lines}")


class CleanupError(OpsverifyError):
    """A state-changing fixture left something behind after its undo step."""


class ActionRefused(OpsverifyError):
    """A guard stopped an action from touching something that is not its scratch resource."""


class LocalServerError(OpsverifyError):
    """A server or program started here (PostgreSQL, Redis, a tool) did not start, stop or finish."""


class SandboxError(LocalServerError):
    """The embedded sandbox could not be started, stopped or read."""
