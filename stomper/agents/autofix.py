"""The embedded agent: the tools' own fixes, offline and deterministic."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from stomper.agents import AgentOutcome, AgentTask
from stomper.diagnostics import ruff
from stomper.diagnostics.ruff_server import Vetted


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
        # ruff server's "Fix all" applies the project's settings and nothing else: the
        # agent's own choices need ruff check.
        plain = not (self.select or self.ignore or self.unsafe_fixes)
        self._server = Vetted(ruff.ruff_binary() if plain else None)
        self._safe_roots: dict[Path, bool] = {}

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if not any(diag.tool == "ruff" for diag in task.unit.diagnostics):
            return AgentOutcome(note="no diagnostic this agent can fix")
        source = task.file.read_bytes()

        async def checked() -> bytes:
            return await ruff.fix_source(
                source,
                task.settings_path,
                select=self.select,
                ignore=self.ignore,
                unsafe=self.unsafe_fixes,
            )

        root = _tree_root(task.settings_path, task.unit.path)
        if root is None or not await self._server_may_fix(root):
            fixed = await checked()
        else:
            path = task.unit.path
            fixed = await self._server.answer(
                root, source, lambda server: server.fix_all(path, source), checked
            )
        if fixed != source:
            task.file.write_bytes(fixed)
        return AgentOutcome()

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _server_may_fix(self, root: Path) -> bool:
        """Whether no ruff configuration under ``root`` speaks of unsafe fixes: stomper
        applies safe fixes only unless told otherwise, and ruff server would follow a
        project's ``unsafe-fixes = true``."""
        if root not in self._safe_roots:
            self._safe_roots[root] = not await asyncio.to_thread(_mentions_unsafe_fixes, root)
        return self._safe_roots[root]


_CONFIG_FILES = frozenset({"pyproject.toml", "ruff.toml", ".ruff.toml"})
_UNSAFE = re.compile(rb"unsafe[-_]fixes")


def _tree_root(settings_path: Path, path: str) -> Path | None:
    """The tree ``settings_path`` (the file ``path`` in it) belongs to."""
    parts = Path(path).parts
    if settings_path.parts[-len(parts) :] != parts:
        return None
    return Path(*settings_path.parts[: -len(parts)])


def _mentions_unsafe_fixes(root: Path) -> bool:
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in _CONFIG_FILES.intersection(files):
            with contextlib.suppress(OSError):
                if _UNSAFE.search((Path(folder) / name).read_bytes()):
                    return True
    return False
