"""The embedded agent: the tools' own fixes, offline and deterministic."""

from __future__ import annotations

from collections.abc import Sequence

from stomper.agents import AgentOutcome, AgentTask
from stomper.diagnostics import ruff


class AutofixAgent:
    """Applies ruff's fixes for the unit's ruff diagnostics (safe ones unless told otherwise).

    Diagnostics of tools that have no fixes of their own (mypy) are left for an AI agent.
    """

    name = "autofix"
    needs_tree = False

    def __init__(
        self, *, unsafe_fixes: bool = False, select: Sequence[str] = (), ignore: Sequence[str] = ()
    ) -> None:
        self.unsafe_fixes = unsafe_fixes
        self.select = tuple(select)
        self.ignore = tuple(ignore)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if not any(diag.tool == "ruff" for diag in task.unit.diagnostics):
            return AgentOutcome(note="no diagnostic this agent can fix")
        source = task.file.read_bytes()
        fixed = await ruff.fix_source(
            source,
            task.settings_path,
            select=self.select,
            ignore=self.ignore,
            unsafe=self.unsafe_fixes,
        )
        if fixed != source:
            task.file.write_bytes(fixed)
        return AgentOutcome()
