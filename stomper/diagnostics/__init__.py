"""Diagnostics and the collectors that produce them.

A collector runs one tool (ruff, mypy) over files of a tree and returns what it reports as
:class:`Diagnostic` values with repository-relative paths. Collectors are plugins: each
implements :class:`Collector` in a module of its own and is named in :data:`COLLECTORS`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from stomper.errors import ConfigError
from stomper.proc import Completed

_PLACE_IN_MESSAGE = re.compile(r"\b(line|column) \d+")


@dataclass(frozen=True)
class Diagnostic:
    """One finding of one tool in one file."""

    tool: str
    code: str
    message: str
    path: str
    line: int
    column: int = 0
    context: str = ""
    """The flagged line's text with its white space folded: what ties a finding to code."""

    def identity(self) -> tuple[str, str, str]:
        """What the finding says, wherever it is: a line number inside its message (ruff's
        "from line 5", mypy's "already defined on line 5") moves with every edit above it,
        so it does not count."""
        return (self.tool, self.code, _PLACE_IN_MESSAGE.sub(r"\1 #", self.message))

    def key(self) -> tuple[str, str, str, str]:
        return (*self.identity(), self.context)

    def to_json(self) -> dict[str, str | int]:
        return {"tool": self.tool, "code": self.code, "message": self.message, "line": self.line}

    def to_record(self) -> list[str | int]:
        """Every field, compactly, for the run's journal."""
        return [self.tool, self.code, self.message, self.path, self.line, self.column, self.context]

    @classmethod
    def from_record(cls, record: list[Any]) -> Diagnostic:
        tool, code, message, path, line, column, context = record
        return cls(tool, code, message, path, int(line), int(column), context)


@dataclass(frozen=True)
class ToolInfo:
    name: str
    found: bool
    """Whether the tool is there and runs."""
    version: str | None
    hint: str
    problem: str | None = None
    """What is wrong with a tool that is there but does not run, in one line."""


def unreadable(diag: Diagnostic) -> str | None:
    """Why the tool could not read the file, when that is what ``diag`` reports (ruff's
    E902: a file that is not UTF-8, or that cannot be opened). No edit of the file can
    resolve that, so such a file is no unit: this is the reason it is skipped."""
    if diag.tool != "ruff" or diag.code != "E902":
        return None
    if "UTF-8" in diag.message:
        return f"ruff reads UTF-8 only, and this file is not ({diag.message}): save it as UTF-8"
    return f"ruff cannot read the file ({diag.message}): make it readable to include it"


def failure(command: str, done: Completed) -> str:
    """What a tool that exited with an error said, on one line."""
    said = (done.stderr or done.stdout).decode(errors="replace")
    # A panic's backtrace says nothing the user can act on.
    said = said.split("Stack backtrace:")[0]
    text = " ".join(said.split())
    if len(text) > 300:
        text = text[:297] + "..."
    return f"{command} exited {done.returncode}: {text or '(no output)'}"


class Collector(Protocol):
    """Runs one tool and reports its diagnostics."""

    name: str

    per_file: bool
    """True when a file's findings depend on that file alone (ruff), so that findings
    collected over the whole tree hold for the file in a workspace; False (mypy) means the
    workspace is checked again before the agent runs."""

    async def info(self) -> ToolInfo:
        """Whether the tool is installed, and its version."""
        ...

    async def collect(
        self, root: Path, paths: Sequence[str], *, cache_dir: Path | None = None
    ) -> list[Diagnostic]:
        """Diagnostics for ``paths`` (relative to ``root``) in the tree at ``root``."""
        ...

    async def collect_source(self, root: Path, path: str, source: bytes) -> list[Diagnostic]:
        """Diagnostics for ``source`` as if it were ``root / path`` (per-file tools only)."""
        ...


def fold(text: str) -> str:
    return " ".join(text.split())


def attach_context(root: Path, found: Iterable[Diagnostic]) -> list[Diagnostic]:
    """Fill in each diagnostic's context: its line's text, read once per file."""
    lines_of: dict[str, list[str]] = {}
    out = []
    for diag in found:
        lines = lines_of.get(diag.path)
        if lines is None:
            try:
                text = (root / diag.path).read_text(encoding="utf-8", errors="replace")
            except OSError:
                text = ""
            lines = lines_of[diag.path] = text.splitlines()
        context = fold(lines[diag.line - 1]) if 0 < diag.line <= len(lines) else ""
        out.append(
            Diagnostic(
                diag.tool, diag.code, diag.message, diag.path, diag.line, diag.column, context
            )
        )
    return out


def code_matches(code: str, prefixes: Sequence[str]) -> bool:
    return any(code.startswith(prefix) for prefix in prefixes)


def select(
    found: Iterable[Diagnostic], *, select: Sequence[str], ignore: Sequence[str]
) -> list[Diagnostic]:
    """Keep the diagnostics whose code starts with a selected prefix and with no ignored one."""
    return [
        diag
        for diag in found
        if (not select or code_matches(diag.code, select)) and not code_matches(diag.code, ignore)
    ]


async def close_collectors(collectors: Iterable[Collector]) -> None:
    """End what collectors keep running between calls (those that have an ``aclose``)."""
    for collector in collectors:
        aclose = getattr(collector, "aclose", None)
        if aclose is not None:
            await aclose()


def collectors_named(names: Sequence[str]) -> list[Collector]:
    from stomper.diagnostics.mypy import MypyCollector
    from stomper.diagnostics.ruff import RuffCollector

    registry: dict[str, type[RuffCollector] | type[MypyCollector]] = {
        "ruff": RuffCollector,
        "mypy": MypyCollector,
    }
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ConfigError(f"unknown tool {unknown[0]!r}: choose from {', '.join(sorted(registry))}")
    return [registry[name]() for name in dict.fromkeys(names)]


TOOL_NAMES = ("ruff", "mypy")
