"""Matching findings before and after a change, by what they say."""

from __future__ import annotations

from stomper.diagnostics import Diagnostic
from stomper.verify import counted, match


def finding(code: str, message: str, line: int) -> Diagnostic:
    return Diagnostic("ruff", code, message, "a.py", line, 5, context="def f():")


def test_a_line_number_inside_a_message_does_not_make_a_finding_new() -> None:
    before = [
        finding("F811", "Redefinition of unused `f` from line 5: `f` redefined here", 9),
        finding("F402", "Import `os` from line 2 shadowed by loop variable", 13),
    ]
    # A fix above both moved every line up by one, the lines named in the messages too.
    after = [
        finding("F811", "Redefinition of unused `f` from line 4: `f` redefined here", 8),
        finding("F402", "Import `os` from line 1 shadowed by loop variable", 12),
    ]
    gone, kept, new = match(before, after)
    assert (gone, new) == ([], [])
    assert kept == before


def test_findings_that_differ_beside_the_line_number_stay_apart() -> None:
    before = [finding("F811", "Redefinition of unused `f` from line 5", 9)]
    after = [finding("F811", "Redefinition of unused `g` from line 5", 9)]
    gone, kept, new = match(before, after)
    assert (gone, kept, new) == (before, [], after)


def test_counted_names_each_code_with_how_often() -> None:
    found = [finding("F401", "x", 1), finding("E501", "y", 2), finding("F401", "z", 3)]
    assert counted(found) == "E501, F401 x2"
