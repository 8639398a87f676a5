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
    """The same file gives the same fixes: an attempt is repeated only with new input."""
    tools = frozenset({"ruff"})

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
        self._safe_folders: dict[Path, bool] = {}

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if not _fixable(task):
            return AgentOutcome(note=_NOTHING_TO_FIX)
        source = task.file.read_bytes()
        note = None
        if task.introduced:
            fixed, note = await self._fix_holding_back(task, source)
        else:
            fixed = await self._fix(task, source)
        if fixed != source:
            task.file.write_bytes(fixed)
        return AgentOutcome(note=note)

    async def fix_many(self, tasks: Sequence[AgentTask]) -> list[AgentOutcome]:
        """ruff's fixes for every task's file, in one call of ruff over the tree they share:
        as it fixes the whole repository, from the tree's root."""
        paths = [task.unit.path for task in tasks if _fixable(task)]
        if paths:
            await ruff.fix_files(
                tasks[0].workspace,
                paths,
                select=self.select,
                ignore=self.ignore,
                unsafe=self.unsafe_fixes,
            )
        return [
            AgentOutcome() if _fixable(task) else AgentOutcome(note=_NOTHING_TO_FIX)
            for task in tasks
        ]

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

        if unfixable or not await self._server_may_fix(task.settings_path.parent, root):
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
                    if held:
                        return fixed, _held_back([*held, rule], task.introduced)
                    return await self._narrowed(task, source, before, rule, fixed)
                tried.append((len(new), rule))
            rule = min(tried)[1]
            held.append(rule)
            rules.remove(rule)
        return (
            source,
            f"ruff's fixes brought in {counted(task.introduced)}, whichever were held back",
        )

    async def _narrowed(
        self, task: AgentTask, source: bytes, before: list[Diagnostic], rule: str, fixed: bytes
    ) -> tuple[bytes, str]:
        """Held back, of ``rule``'s fixes, only those of the fewest of its findings that bring
        in something new (found by halving), when ``fixed`` (all of them held back) holds
        back more; what was held back.

        A fix is held back for one finding by a ``# noqa`` comment on its line while ruff
        fixes, taken out again after: when removing one unused import makes another unused
        (``import json`` in the ``except`` of ``try: import simplejson as json``), the fixes
        of every other unused import in the file still land.
        """
        findings = [diag for diag in before if diag.code == rule]
        held = findings
        while len(held) > 1:
            half = len(held) // 2
            for part in (held[:half], held[half:]):
                narrower = await self._fix_sparing(task, source, before, part)
                if narrower is not None:
                    held, fixed = part, narrower
                    break
            else:
                break
        if len(held) == len(findings):
            return fixed, _held_back([rule], task.introduced)
        lines = ", ".join(str(diag.line) for diag in held[:5])
        return fixed, (
            f"ruff's fix for {rule} on line {lines} was held back: "
            f"it brought in {counted(task.introduced)}"
        )

    async def _fix_sparing(
        self, task: AgentTask, source: bytes, before: list[Diagnostic], spared: list[Diagnostic]
    ) -> bytes | None:
        """ruff's fixes but those of ``spared``, when that brings in nothing new; else None."""
        marked = _mark(source, spared)
        if marked is None:
            return None
        fixed = _unmark(await self._fix(task, marked), spared)
        if fixed is None:
            return None
        after = await ruff.check_source(fixed, task.settings_path, root=task.settings_root)
        return fixed if not match(before, after)[2] else None

    async def aclose(self) -> None:
        await self._server.aclose()

    async def _server_may_fix(self, folder: Path, root: Path) -> bool:
        """Whether no ruff configuration that may apply in ``folder`` of the tree at ``root``
        speaks of unsafe fixes, or of another configuration it extends: stomper applies safe
        fixes only unless told otherwise, and ruff server would follow a configuration's
        ``unsafe-fixes = true``."""
        if folder not in self._safe_folders:
            found = await asyncio.to_thread(_may_fix_unsafely, folder, root)
            self._safe_folders[folder] = not found
        return self._safe_folders[folder]


_NOTHING_TO_FIX = "no diagnostic this agent can fix"


def _fixable(task: AgentTask) -> bool:
    return any(diag.tool == "ruff" for diag in task.unit.diagnostics)


def _marker(code: str) -> bytes:
    return f"  # noqa: {code}".encode()


def _mark(source: bytes, findings: Sequence[Diagnostic]) -> bytes | None:
    """``source`` with a ``# noqa`` for each of ``findings`` at the end of its line; None
    where that could be read otherwise: a line with a ``#`` already (perhaps in a string),
    or a source that holds such a comment of its own."""
    lines = source.splitlines(keepends=True)
    for diag in findings:
        marker = _marker(diag.code)
        if marker in source or not 0 < diag.line <= len(lines) or b"#" in lines[diag.line - 1]:
            return None
        line = lines[diag.line - 1]
        body = line.rstrip(b"\r\n")
        lines[diag.line - 1] = body + marker + line[len(body) :]
    return b"".join(lines)


def _unmark(fixed: bytes, findings: Sequence[Diagnostic]) -> bytes | None:
    """``fixed`` without the comments :func:`_mark` put in; None unless each is found whole
    at the end of a line, as many times as it was put in."""
    for code in {diag.code for diag in findings}:
        marker = _marker(code)
        wanted = sum(1 for diag in findings if diag.code == code)
        pattern = re.compile(re.escape(marker) + rb"(?=\r\n|\r|\n|$)")
        fixed, found = pattern.subn(b"", fixed)
        if found != wanted or marker in fixed:
            return None
    return fixed


def _held_back(rules: Sequence[str], introduced: Sequence[Diagnostic]) -> str:
    if len(rules) == 1:
        return f"ruff's fix for {rules[0]} was held back: it brought in {counted(introduced)}"
    return (
        f"ruff's fixes for {', '.join(rules)} were held back: they brought in {counted(introduced)}"
    )


_UNSAFE = re.compile(rb"unsafe[-_]fixes|\bextend\s*=")


def _may_fix_unsafely(folder: Path, root: Path) -> bool:
    """Whether a ruff configuration ruff may read for a file in ``folder`` (one in it or in
    a folder above it, up to ``root``, or the user's own) speaks of unsafe fixes or extends
    another one."""
    places = [place for place in (folder, *folder.parents) if place.is_relative_to(root)]
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    places.append(Path(config_home) / "ruff")
    for place in places:
        for name in ruff.CONFIG_FILES:
            with contextlib.suppress(OSError):
                if _UNSAFE.search((place / name).read_bytes()):
                    return True
    return False
