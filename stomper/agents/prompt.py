"""What every agent is told: the file, its diagnostics, the rules, and the last feedback."""

from __future__ import annotations

import ast
from collections.abc import Sequence

from stomper import pysource
from stomper.diagnostics import Diagnostic
from stomper.redaction import redact

SYSTEM = (
    "You fix diagnostics (lint and type errors) in one file of a Python repository. "
    "Fix the cause of each diagnostic so the tool no longer reports it, keep the code's "
    "behaviour, and change nothing else."
)

RULES = (
    "Fix the cause: never add `# noqa`, `# type: ignore`, `pyright: ignore`, "
    "`pytest.mark.skip` or `xfail`, and never delete the flagged code to silence a tool.",
    "Change only this file: do not create, delete, rename or edit any other file.",
    "Do not introduce new diagnostics.",
)

# Past this size the model is shown the functions that hold the diagnostics, not the file.
WHOLE_FILE_UP_TO = 40_000
_WINDOW = 15


def describe_diagnostics(diagnostics: Sequence[Diagnostic]) -> str:
    return "\n".join(
        f"- line {d.line}: {d.tool} {d.code}: {d.message}" for d in sorted(diagnostics, key=_line)
    )


def _line(diagnostic: Diagnostic) -> int:
    return diagnostic.line


def numbered(lines: Sequence[str], start: int, end: int) -> str:
    """Lines ``start``..``end`` (1-based, inclusive), each behind its number."""
    width = len(str(end))
    return "\n".join(f"{number:>{width}} | {lines[number - 1]}" for number in range(start, end + 1))


def enclosing_ranges(source: str, line_numbers: Sequence[int]) -> list[tuple[int, int]]:
    """For each line, the outermost function or class holding it (else a window around it),
    merged where they overlap."""
    lines = source.splitlines()
    try:
        tree = pysource.parse(source)
        blocks = [
            (node.lineno, node.end_lineno or node.lineno)
            for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        ]
    except SyntaxError:
        blocks = []
    ranges = []
    for number in line_numbers:
        found = next(((a, b) for a, b in blocks if a <= number <= b), None)
        if found is None:
            found = (max(1, number - _WINDOW), min(len(lines), number + _WINDOW))
        ranges.append(found)
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def show_source(path: str, source: str, diagnostics: Sequence[Diagnostic]) -> str:
    """The file as the model sees it: whole when small, else the parts that matter, numbered."""
    if len(source) <= WHOLE_FILE_UP_TO:
        return f"The file `{path}`:\n```python\n{source}```"
    lines = source.splitlines()
    parts = [
        numbered(lines, start, end)
        for start, end in enclosing_ranges(source, [d.line for d in diagnostics])
    ]
    return (
        f"The file `{path}` has {len(lines)} lines; these are the parts with diagnostics, "
        "each line behind its number (the numbers are not part of the file):\n```\n"
        + "\n...\n".join(parts)
        + "\n```"
    )


def task_prompt(
    path: str,
    diagnostics: Sequence[Diagnostic],
    *,
    source: str | None = None,
    feedback: str | None = None,
    answer_format: str = "",
) -> str:
    """The user prompt for one attempt at one unit."""
    parts = [
        f"Fix these diagnostics in `{path}`:\n{describe_diagnostics(diagnostics)}",
        "Rules:\n" + "\n".join(f"- {rule}" for rule in RULES),
    ]
    if source is not None:
        parts.append(show_source(path, source, diagnostics))
    if feedback:
        # It quotes tools and agents, which may have quoted a secret.
        parts.append(f"Your previous attempt was not accepted:\n{redact(feedback)}")
    if answer_format:
        parts.append(answer_format)
    return "\n\n".join(parts) + "\n"
