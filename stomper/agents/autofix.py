"""The embedded agent: the tools' own fixes, offline and deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from stomper.agents import AgentOutcome, AgentTask
from stomper.diagnostics import Diagnostic, ruff
from stomper.diagnostics.ruff_server import Vetted
from stomper.verify import counted, match


class AutofixAgent:
    """Applies ruff's fixes for the unit's ruff diagnostics (safe ones unless told otherwise).

    Diagnostics of tools that have no fixes of their own (mypy) are left for an AI agent.
    """

    name = "autofix"
    needs_tree = False
    deterministic = True
    tools = frozenset({"ruff"})
    """The same file gives the same fixes: an attempt is repeated only with new input."""

    def __init__(
        self, *, unsafe_fixes: bool = False, select: Sequence[str] = (), ignore: Sequence[str] = ()
    ) -> None:
        self.unsafe_fixes = unsafe_fixes
        self.select = tuple(select)
        self.ignore = tuple(ignore)
        # ruff server's "Fix all" applies the project's settings and nothing else: the
        # agent's own choices need ruff check.
        plain = not (self.select or self.ignore or self.unsafe_fixes)
        self._server = Vetted(ruff.ruff_binary() if plain else None)
        self._safe_roots: dict[Path, bool] = {}

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if not any(diag.tool == "ruff" for diag in task.unit.diagnostics):
            return AgentOutcome(note="no diagnostic this agent can fix")
        source = task.file.read_bytes()
        note = None
        if task.introduced:
            fixed, note = await self._fix_holding_back(task, source)
        else:
            fixed = await self._fix(task, source)
        if fixed != source:
            task.file.write_bytes(fixed)
        return AgentOutcome(note=note)

    async def _fix(self, task: AgentTask, source: bytes, *, unfixable: Sequence[str] = ()) -> bytes:
        root = task.settings_root

        async def checked() -> bytes:
            return await ruff.fix_source(
                source,
                task.settings_path,
                root=root,
                select=self.select,
                ignore=self.ignore,
                unsafe=self.unsafe_fixes,
                unfixable=unfixable,
            )

        if unfixable or not await self._server_may_fix(root):
            return await checked()
        path = task.unit.path
        return await self._server.answer(
            root, source, lambda server: server.fix_all(path, source), checked
        )

    async def _fix_holding_back(self, task: AgentTask, source: bytes) -> tuple[bytes, str | None]:
        """ruff's fixes but those of the fewest rules whose fixes bring in new findings (the
        last attempt's ``task.introduced``), and what was held back; ``source`` itself when
        no fix is left that brings in nothing.

        Rules are held back one at a time, first the one that alone clears what is new, else
        the one that leaves least of it, until nothing new is left.
        """
        before = await ruff.check_source(source, task.settings_path, root=task.settings_root)
        rules = sorted({diag.code for diag in before})
        held: list[str] = []
        while rules:
            tried = []
            for rule in rules:
                fixed = await self._fix(task, source, unfixable=[*held, rule])
                after = await ruff.check_source(fixed, task.settings_path, root=task.settings_root)
                new = match(before, after)[2]
                if not new:
                    return fixed, _held_back([*held, rule], task.introduced)
                tried.append((len(new), rule))
            rule = min(tried)[1]
            held.append(rule)
            rules.remove(rule)
        return (
            source,
            f"ruff's fixes brought in {counted(task.introduced)}, whichever were held back",
        )

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _server_may_fix(self, root: Path) -> bool:
        """Whether no ruff configuration under ``root`` speaks of unsafe fixes: stomper
        applies safe fixes only unless told otherwise, and ruff server would follow a
        project's ``unsafe-fixes = true``."""
        if root not in self._safe_roots:
            self._safe_roots[root] = not await asyncio.to_thread(_mentions_unsafe_fixes, root)
        return self._safe_roots[root]


def _held_back(rules: Sequence[str], introduced: Sequence[Diagnostic]) -> str:
    if len(rules) == 1:
        return f"ruff's fix for {rules[0]} was held back: it brought in {counted(introduced)}"
    return (
        f"ruff's fixes for {', '.join(rules)} were held back: they brought in {counted(introduced)}"
    )


_CONFIG_FILES = frozenset({"pyproject.toml", "ruff.toml", ".ruff.toml"})
_UNSAFE = re.compile(rb"unsafe[-_]fixes")


def _mentions_unsafe_fixes(root: Path) -> bool:
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in _CONFIG_FILES.intersection(files):
            with contextlib.suppress(OSError):
                if _UNSAFE.search((Path(folder) / name).read_bytes()):
                    return True
    return False
