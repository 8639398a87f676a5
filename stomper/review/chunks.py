"""A large file reviewed in parts: each part whole top-level definitions, each its own request.

A file of more lines than ``chunk_lines`` is cut where its top-level definitions begin (by
``ast`` for Python, by a tree-sitter grammar for the languages the pack has), and the
definitions are packed, in order, into parts of at most ``chunk_lines``; a definition longer
than that, or a file no parser reads, is cut into windows that overlap, so that no line is
seen only at a window's edge. Each request shows its part with the file's own line
numbers, and the file's imports for context.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, cast

from tree_sitter_language_pack import get_parser

from stomper import pysource

if TYPE_CHECKING:
    from tree_sitter import Parser
    from tree_sitter_language_pack import SupportedLanguage

CHUNK_LINES = 400
OVERLAP = 20

# The tree-sitter grammar of each suffix (the names of tree-sitter-language-pack).
_GRAMMARS = {
    ".c": "c",
    ".h": "c",
    ".cc": "cpp",
    ".cpp": "cpp",
    ".cxx": "cpp",
    ".hpp": "cpp",
    ".cs": "csharp",
    ".go": "go",
    ".java": "java",
    ".js": "javascript",
    ".jsx": "javascript",
    ".mjs": "javascript",
    ".kt": "kotlin",
    ".lua": "lua",
    ".php": "php",
    ".rb": "ruby",
    ".rs": "rust",
    ".scala": "scala",
    ".sh": "bash",
    ".swift": "swift",
    ".ts": "typescript",
    ".tsx": "tsx",
}
_IMPORT = re.compile(
    r"^\s*(import\s|from\s+\S+\s+import\s|#\s*include\s|use\s|using\s|require[ (]"
    r"|package\s|extern crate\s)"
)
_IMPORTS_SHOWN = 60


@dataclass(frozen=True)
class Chunk:
    """Lines ``first`` to ``last`` of a file (numbered from 1)."""

    first: int
    last: int


def chunked(path: str, source: str, *, chunk_lines: int = CHUNK_LINES) -> list[Chunk]:
    """The parts ``source`` is reviewed in: one, the whole file, unless it has more than
    ``chunk_lines`` lines."""
    count = len(source.splitlines())
    if count <= chunk_lines:
        return [Chunk(1, max(count, 1))]
    starts = _definition_starts(path, source)
    if not starts:
        return _windows(1, count, chunk_lines)
    bounds = sorted({1, *(start for start in starts if 1 < start <= count)})
    pieces = [
        Chunk(first, next_first - 1)
        for first, next_first in zip(bounds, [*bounds[1:], count + 1], strict=True)
    ]
    parts: list[Chunk] = []
    for piece in pieces:
        size = piece.last - piece.first + 1
        if size > chunk_lines:
            parts += _windows(piece.first, piece.last, chunk_lines)
        elif parts and piece.last - parts[-1].first + 1 <= chunk_lines:
            parts[-1] = Chunk(parts[-1].first, piece.last)
        else:
            parts.append(piece)
    return parts


def imports(source: str) -> list[str]:
    """The lines of ``source`` that import, include or use another module (at most a few
    dozen): what a part of the file needs shown to be read."""
    found = [line for line in source.splitlines() if _IMPORT.match(line)]
    return found[:_IMPORTS_SHOWN]


def _windows(first: int, last: int, size: int) -> list[Chunk]:
    """``first`` to ``last`` in windows of ``size`` lines, each overlapping the one before."""
    step = max(size - OVERLAP, 1)
    windows = []
    start = first
    while True:
        end = min(start + size - 1, last)
        windows.append(Chunk(start, end))
        if end >= last:
            return windows
        start += step


def _definition_starts(path: str, source: str) -> list[int]:
    """The first line of each top-level statement or definition (its decorators and the
    comments just above it included where the parser keeps them); empty when no parser
    reads the file."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in (".py", ".pyi"):
        try:
            module = pysource.parse(source)
        except (SyntaxError, ValueError):
            return []
        return [_first_line(node) for node in module.body]
    grammar = _GRAMMARS.get(suffix)
    if grammar is None:
        return []
    parser = _parser(grammar)
    if parser is None:
        return []
    tree = parser.parse(source.encode("utf-8"))
    return [int(child.start_point[0]) + 1 for child in tree.root_node.children]


def _first_line(node: ast.stmt) -> int:
    decorators: list[ast.expr] = getattr(node, "decorator_list", [])
    return min([node.lineno, *(decorator.lineno for decorator in decorators)])


def _parser(grammar: str) -> Parser | None:
    """The pack's parser of ``grammar``; None when the pack lacks it."""
    try:
        return get_parser(cast("SupportedLanguage", grammar))
    except Exception:  # a grammar the pack does not have, or one that fails to load
        return None


def parses(path: str, source: str) -> bool | None:
    """Whether ``source`` parses as the language of ``path`` (by ``ast`` for Python, by a
    tree-sitter grammar for the others of the pack); None when no parser reads it."""
    suffix = PurePosixPath(path).suffix.lower()
    if suffix in (".py", ".pyi"):
        try:
            pysource.parse(source)
        except (SyntaxError, ValueError):
            return False
        return True
    grammar = _GRAMMARS.get(suffix)
    parser = _parser(grammar) if grammar is not None else None
    if parser is None:
        return None
    return not parser.parse(source.encode("utf-8")).root_node.has_error
