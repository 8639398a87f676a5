"""A unit's time holds for all it does, and a model's answer is bounded in size."""

from __future__ import annotations

import os

from stomper.diagnostics.ruff import ruff_binary
from stomper.testing.fake_openai import FakeOpenAI, Fault, FaultPolicy
from stomper.testing.repos import module
from tests.conftest import run_json

ALWAYS_HUGE = FaultPolicy(rates={Fault.HUGE: 1.0})


def openai(server: FakeOpenAI, *args: str) -> tuple[str, ...]:
    return ("--agent", "openai", "--model", "fake", "--base-url", server.base_url, *args)


def test_an_answer_past_the_bound_is_refused_unread(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(faults=ALWAYS_HUGE, huge_bytes=3_000_000) as server:
        code, document = run_json(repo, *openai(server, "--max-attempts", "2"), capsys=capsys)
    assert code == 1
    (unit,) = document["units"]
    assert unit["status"] == "failed" and unit["attempts"] == 2
    assert "more than the 1,000,000 allowed (max_answer_bytes)" in unit["reason"]
    assert (repo / "a.py").read_text() == module(["F401"])


def test_the_bound_is_a_setting(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("STOMPER_MAX_ANSWER_BYTES", "5000000")
    with FakeOpenAI(faults=ALWAYS_HUGE, huge_bytes=3_000_000) as server:
        code, document = run_json(repo, *openai(server, "--max-attempts", "1"), capsys=capsys)
    (unit,) = document["units"]
    assert code == 1 and "does not match" in unit["reason"]
    assert "max_answer_bytes" not in unit["reason"]


def test_the_timeout_holds_while_an_answer_is_matched(make, capsys) -> None:
    # An answer under the bound whose SEARCH part, like the file's lines, matches nothing:
    # matching it against a large file once ran for minutes past --agent-timeout.
    lines = "".join(f"value_{n} = compute(value_{n - 1})\n" for n in range(20000))
    repo = make({"a.py": module(["F401"]) + lines})
    with FakeOpenAI(faults=ALWAYS_HUGE, huge_bytes=900_000) as server:
        code, document = run_json(
            repo, *openai(server, "--agent-timeout", "5", "--max-attempts", "1"), capsys=capsys
        )
    assert code == 1
    (unit,) = document["units"]
    assert unit["status"] == "failed"
    assert (repo / "a.py").read_text() == module(["F401"]) + lines


def test_the_timeout_holds_while_a_change_is_checked(make, tmp_path, capsys, monkeypatch) -> None:
    # A ruff whose check of a file's bytes (verification) never ends; all else is ruff's.
    real = ruff_binary()
    assert real is not None
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ruff").write_text(
        "#!/bin/sh\n"
        'case " $* " in\n'
        '  *" server "*) exit 1 ;;\n'
        '  *" --fix-only "*) ;;\n'
        '  *" - "*) exec sleep 300 ;;\n'
        "esac\n"
        f'exec {real} "$@"\n'
    )
    (folder / "ruff").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    repo = make({"a.py": module(["F401"])})
    code, document = run_json(repo, "--agent-timeout", "3", capsys=capsys)
    assert code == 1
    (unit,) = document["units"]
    assert unit["status"] == "failed" and unit["commit"] is None
    assert "ran past 3s on this unit (while its attempt 1 was checked)" in unit["reason"]
    assert (repo / "a.py").read_text() == module(["F401"])
