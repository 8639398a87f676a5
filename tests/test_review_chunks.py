from __future__ import annotations

from stomper.review.chunks import OVERLAP, Chunk, chunked, imports


def python_module(functions: int, body: int) -> str:
    parts = ["import os\nfrom pathlib import Path\n"]
    for number in range(functions):
        lines = "".join(f"    x{line} = {line}\n" for line in range(body))
        parts.append(f"\n\n@decorated\ndef f{number}():\n{lines}")
    return "".join(parts)


def covers(parts: list[Chunk], count: int) -> bool:
    seen = {line for part in parts for line in range(part.first, part.last + 1)}
    return seen == set(range(1, count + 1))


def test_a_small_file_is_one_part() -> None:
    assert chunked("a.py", "x = 1\ny = 2\n") == [Chunk(1, 2)]


def test_a_large_python_file_is_cut_only_where_a_definition_begins() -> None:
    source = python_module(functions=10, body=97)  # 101 lines a function, blank lines included
    count = len(source.splitlines())
    parts = chunked("m.py", source, chunk_lines=400)
    assert covers(parts, count) and all(part.last - part.first < 400 for part in parts)
    starts = {n for n, line in enumerate(source.splitlines(), 1) if line.startswith("@")}
    # Each part after the first begins at a decorator: no definition is split, and three
    # functions fill a part of 400 lines as far as they can.
    assert all(part.first in starts for part in parts[1:])
    assert [part.last - part.first + 1 for part in parts] == [307, 303, 303, 99]


def test_a_definition_longer_than_a_part_is_cut_into_overlapping_windows() -> None:
    source = python_module(functions=1, body=900)
    parts = chunked("m.py", source, chunk_lines=400)
    assert covers(parts, len(source.splitlines()))
    for before, after in zip(parts, parts[1:], strict=False):
        assert before.last - after.first + 1 >= OVERLAP or before.last + 1 == after.first


def test_c_is_cut_at_its_functions_by_its_grammar() -> None:
    body = "    a += 1;\n" * 60
    functions = [f"int f{n}(int a) {{\n{body}    return a;\n}}\n" for n in range(12)]
    source = "#include <stdio.h>\n\n" + "\n".join(functions)
    lines = source.splitlines()
    parts = chunked("x.c", source, chunk_lines=200)
    assert covers(parts, len(lines))
    assert all(lines[part.first - 1].startswith(("int f", "#include")) for part in parts)


def test_a_file_no_parser_reads_is_cut_into_windows() -> None:
    source = "".join(f"line {n}\n" for n in range(1, 1001))
    parts = chunked("notes.txt", source, chunk_lines=400)
    assert parts == [Chunk(1, 400), Chunk(381, 780), Chunk(761, 1000)]
    broken = "def f(:\n" + source
    assert covers(chunked("broken.py", broken, chunk_lines=400), 1001)


def test_imports_are_the_lines_that_bring_in_other_modules() -> None:
    source = "import os\nfrom a import b\n#include <x.h>\nuse std::io;\nx = 1\n"
    assert imports(source) == ["import os", "from a import b", "#include <x.h>", "use std::io;"]
