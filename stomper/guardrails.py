"""Guardrails: what an agent's change must not do, whatever the diagnostics say.

Every patch passes these before it can land: it stays inside the unit's one file (no other
file, no new, deleted or renamed file, no change of mode, no symlink), and it neither
silences a tool nor deletes the flagged code instead of fixing it (unless the project
allows suppressions).
"""

from __future__ import annotations

import ast
import re
import stat
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from stomper import git, pysource
from stomper.diagnostics import Diagnostic

# Each with a word every match holds (in lower case): a source without it has no match. A
# match lies within one line (white space but line ends: ``[^\S\r\n]``), as a comment does.
SUPPRESSIONS = (
    ("# noqa", "noqa", re.compile(r"#[^\S\r\n]*noqa\b", re.IGNORECASE)),
    ("# type: ignore", "ignore", re.compile(r"#[^\S\r\n]*type:[^\S\r\n]*ignore\b")),
    ("pyright: ignore", "ignore", re.compile(r"pyright:[^\S\r\n]*ignore\b")),
    ("pytest.mark.skip", "skip", re.compile(r"\bpytest\.mark\.skip(if)?\b|\bpytest\.skip\(")),
    ("pytest.mark.xfail", "xfail", re.compile(r"\bpytest\.mark\.xfail\b|\bpytest\.xfail\(")),
)


async def scope_violation(repo: git.PrivateRepo, unit_path: str, mode: str) -> str | None:
    """Why the change in a pooled tree reaches beyond the unit's file, if it does.

    The tree is compared with stomper's own HEAD and index for it, not with the agent's
    repository in the tree: what the agent committed, staged or checked out there counts
    as the change it is, in the files.
    """
    state = await git.private_state(repo)
    outside = sorted(path for path in state.changed if path != unit_path)
    if outside:
        return f"the change touches files outside the unit: {', '.join(outside)}"
    return file_violation(repo.tree / unit_path, unit_path, mode)


def file_violation(file: Path, unit_path: str, mode: str) -> str | None:
    """Why the unit's file is no longer a regular file of its mode, if it is not."""
    try:
        info = file.lstat()
    except FileNotFoundError:
        return f"the change deletes {unit_path}"
    if stat.S_ISLNK(info.st_mode):
        return f"the change turns {unit_path} into a symlink (to {file.readlink()})"
    if not stat.S_ISREG(info.st_mode):
        return f"the change makes {unit_path} something other than a regular file"
    if bool(info.st_mode & stat.S_IXUSR) != (mode == "100755"):
        return f"the change alters the mode of {unit_path}"
    return None


def suppression_violation(before: str, after: str, targeted: Sequence[Diagnostic]) -> str | None:
    """Why the change silences a tool instead of fixing the code, if it does."""
    # A match lies within a line: the lines both sources share hold the same ones.
    old, new, _ = _changed_lines(before, after)
    lowered = new.lower()
    added = [
        name
        for name, word, pattern in SUPPRESSIONS
        if word in lowered and len(pattern.findall(new)) > len(pattern.findall(old))
    ]
    if added:
        return f"the change adds suppressions instead of fixes: {', '.join(added)}"
    deleted = _deleted_definitions(before, after, targeted)
    if deleted:
        return f"the change deletes the flagged code instead of fixing it: {', '.join(deleted)}"
    return None


def suppression_violations(
    changes: Sequence[tuple[str, str, Sequence[Diagnostic]]],
) -> list[str | None]:
    """:func:`suppression_violation` of each change (before, after, targeted): a list in a
    list out, to be split among worker processes (:mod:`stomper.offload`)."""
    return [suppression_violation(*change) for change in changes]


def _deleted_definitions(before: str, after: str, targeted: Sequence[Diagnostic]) -> list[str]:
    """Top-level functions and classes that held a targeted diagnostic and are gone."""
    # Parsing costs milliseconds a file. A change whose lines cannot remove a definition
    # needs none; without a name the old source could define at its top level, nothing
    # can be gone; when the new source still defines every one of them, nothing is, and
    # the old source need not be parsed.
    if _keeps_every_definition(before, after):
        return []
    names = _top_level_names(before)
    if not names:
        return []
    new = _definitions(after)
    if new is None or names <= new.keys():
        return []
    old = _definitions(before)
    if old is None:
        return []
    lines = {diag.line for diag in targeted}
    return sorted(
        name
        for name, (start, end) in old.items()
        if name not in new and any(start <= line <= end for line in lines)
    )


def _definitions(source: str) -> dict[str, tuple[int, int]] | None:
    try:
        tree = pysource.parse(source)
    except (SyntaxError, ValueError, RecursionError):
        # ValueError: a NUL in the source (early 3.11); RecursionError: nesting too deep.
        return None
    return {
        node.name: (node.lineno, node.end_lineno or node.lineno)
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }


# Where a top-level ``def`` or ``class`` can begin: at the start of a line (any of Python's
# line ends), after form feeds (which reset the indentation), or after ``async`` and any
# white space or line continuation. Then the name, up to what may follow it.
_TOP_LEVEL_DEFINITION = re.compile(
    r"(?:^|(?<=\r))(?:[ \t]*\f)*(?:async[\s\\]+)?(?:def|class)[\s\\]+([^\s(\[:\\]+)",
    re.MULTILINE,
)


def _top_level_names(source: str) -> set[str]:
    """Every name a top-level definition of ``source`` may have (a superset: a match may
    also lie in a string), normalized as Python normalizes identifiers."""
    return {
        name if name.isascii() else unicodedata.normalize("NFKC", name)
        for name in _TOP_LEVEL_DEFINITION.findall(source)
    }


def _keeps_every_definition(before: str, after: str) -> bool:
    """Whether every top-level definition of ``before`` is one of ``after`` too, as far as
    the lines that differ tell without parsing (False: they do not tell).

    They tell when neither source's lines hold a backslash, a brace or a triple quote, and
    the line before them does not end in a backslash. Each of those lines then ends in a
    string exactly when it began in one: within a triple-quoted string it is text;
    elsewhere its strings close on it, or the source does not parse (and none is counted
    as gone). So the lines around them are read alike in both sources, and a definition
    there stays one, or the new source does not parse (a definition within brackets).
    A definition among them stays one when, of the new lines, one still begins a
    definition of that name.
    """
    old, new, previous = _changed_lines(before, after)
    if previous.rstrip("\r\n").endswith("\\"):
        return False
    if _UNSAFE.search(old) or _UNSAFE.search(new):
        return False
    return _top_level_names(old) <= _top_level_names(new)


# What can carry a string on to the next line, or end one begun on an earlier line: a
# backslash, a triple quote, a brace (from 3.12, a replacement field of an f-string, in
# which a quote opens a string).
_UNSAFE = re.compile(r"[\\{}]|'{3}|\"{3}")


def _changed_lines(before: str, after: str) -> tuple[str, str, str]:
    """The whole lines where ``before`` and ``after`` differ (each source's), and the line
    before them. Lines end at ``\n``: a block of them is also whole lines to Python."""
    size = min(len(before), len(after))
    # The longest common prefix and suffix, found by halving (each test a C comparison).
    low, high = 0, size
    while low < high:
        middle = (low + high + 1) // 2
        if before[:middle] == after[:middle]:
            low = middle
        else:
            high = middle - 1
    start = before.rfind("\n", 0, low) + 1
    low, high = 0, size - start
    while low < high:
        middle = (low + high + 1) // 2
        if before[len(before) - middle :] == after[len(after) - middle :]:
            low = middle
        else:
            high = middle - 1
    # Both from a line end within the common part: whole lines in both sources.
    newline = before.find("\n", len(before) - low)
    kept = 0 if newline < 0 else len(before) - newline - 1
    previous = before[before.rfind("\n", 0, max(start - 1, 0)) + 1 : start]
    return before[start : len(before) - kept], after[start : len(after) - kept], previous
