"""The paths a task names: globs over the repository's tracked files, and files to create.

A pattern is a path from the repository's root. Without a wildcard it names one file (to
change, or to create when nothing is there) or a folder (everything below it). With one,
``*``, ``?`` and ``[...]`` match within one name of the path and ``**``, as a whole name,
matches any number of folders, none included: ``src/**/*.py`` is every Python file below
``src``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePosixPath

_WILDCARDS = frozenset("*?[")


class BadPattern(ValueError):
    """A pattern that names no path of the repository: absolute, or reaching outside it."""


def is_glob(pattern: str) -> bool:
    return not _WILDCARDS.isdisjoint(pattern)


def normal(pattern: str) -> str:
    """``pattern`` without ``./`` and doubled slashes; :class:`BadPattern` for one that
    is absolute or climbs out of the repository."""
    if pattern.startswith("/"):
        raise BadPattern(f"{pattern!r} is absolute: name paths from the repository's root")
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise BadPattern(f"{pattern!r} reaches outside the repository")
    if not parts:
        raise BadPattern(f"{pattern!r} names no path")
    return "/".join(parts)


@dataclass(frozen=True)
class Pattern:
    """One pattern of a task's ``files`` or ``reads``, normalised."""

    text: str

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile(_translate(self.text))

    @property
    def wild(self) -> bool:
        return is_glob(self.text)

    def covers(self, path: str) -> bool:
        """Whether ``path`` is one this pattern names (a file below a named folder too)."""
        if self.wild:
            return self._regex.fullmatch(path) is not None
        return path == self.text or path.startswith(self.text + "/")

    def matches(self, tracked: Iterable[str]) -> list[str]:
        """The tracked files this pattern names."""
        return [path for path in tracked if self.covers(path)]


def patterns(texts: Sequence[str]) -> tuple[Pattern, ...]:
    return tuple(Pattern(normal(text)) for text in texts)


def _translate(glob: str) -> str:
    """A regular expression for the whole of a path ``glob`` names."""
    names = PurePosixPath(glob).parts
    out = []
    for at, name in enumerate(names):
        last = at == len(names) - 1
        if name == "**":
            out.append(".*" if last else "(?:[^/]+/)*")
        else:
            out.append(_name(name) + ("" if last else "/"))
    return "".join(out)


def _name(glob: str) -> str:
    """A regular expression for one name of a path (no ``/``)."""
    out = []
    at = 0
    while at < len(glob):
        char = glob[at]
        at += 1
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = glob.find("]", at + 1 if glob[at : at + 1] in ("!", "]") else at)
            if end < 0:
                out.append(re.escape(char))
                continue
            inside = glob[at:end].replace("\\", "\\\\")
            at = end + 1
            if inside.startswith("!"):
                inside = "^" + inside[1:]
            out.append(f"(?!/)[{inside}]")
        else:
            out.append(re.escape(char))
    return "".join(out)
