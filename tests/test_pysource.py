"""Python parsed where other threads parse too: agents' prompts, the guardrails, the fake
server, and :func:`inspect.signature` of a built-in, as LangGraph's loading calls it.

The race itself (CPython before 3.13 shares the AST constructor's depth counter between
threads) needs the GIL handed over in the middle of a parse, which no test can bring about at
will: the interpreter's error is raised here by a stand-in for :func:`ast.parse` instead.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

import pytest

from stomper import pysource

SOURCE = "def f(a, b):\n    return a or b\n"
MISMATCH = "AST constructor recursion depth mismatch (before=33, after=242)"


def _failing(times: int, error: str = MISMATCH) -> tuple[Callable[..., Any], list[int]]:
    """``ast.parse`` that raises SystemError(``error``) its first ``times`` calls."""
    calls: list[int] = []
    real = ast.parse

    def parse(source: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) <= times:
            raise SystemError(error)
        return real(source, *args, **kwargs)

    return parse, calls


def test_a_parse_upset_by_another_threads_is_made_again(monkeypatch) -> None:
    expected = ast.dump(ast.parse(SOURCE))
    parse, calls = _failing(2)
    monkeypatch.setattr(ast, "parse", parse)
    assert ast.dump(pysource.parse(SOURCE)) == expected
    assert len(calls) == 3


def test_a_parse_upset_every_time_raises_in_the_end(monkeypatch) -> None:
    parse, calls = _failing(100)
    monkeypatch.setattr(ast, "parse", parse)
    with pytest.raises(SystemError, match="recursion depth mismatch"):
        pysource.parse(SOURCE)
    assert len(calls) == 5


def test_another_system_error_is_not_taken_for_the_race(monkeypatch) -> None:
    parse, calls = _failing(1, "something else broke")
    monkeypatch.setattr(ast, "parse", parse)
    with pytest.raises(SystemError, match="something else broke"):
        pysource.parse(SOURCE)
    assert len(calls) == 1


def test_what_does_not_parse_raises_as_ast_does() -> None:
    with pytest.raises(SyntaxError):
        pysource.parse("def f(:\n")


def test_the_parsers_warnings_are_not_shown(recwarn: pytest.WarningsRecorder) -> None:
    pysource.parse('path = "C:\\d"\n')
    assert [str(warning.message) for warning in recwarn] == []
