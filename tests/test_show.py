"""``stomper show``: a past run's results again, from its journal."""

from __future__ import annotations

import json

from stomper.cli import main
from stomper.testing.repos import module
from tests.conftest import run_json


def show_json(repo, *args: str, capsys) -> dict:
    assert main(["show", "--repo", str(repo), "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def same_run(shown: dict, ran: dict) -> None:
    """What the run printed, as ``show`` prints it again (the times are the journal's)."""
    keep = ("path", "status", "commit", "attempts", "fixed", "remaining", "reason")
    assert [{key: unit[key] for key in keep} for unit in shown["units"]] == [
        {key: unit[key] for key in keep} for unit in ran["units"]
    ]
    for key in ("run_id", "command", "status", "dry_run", "base", "target", "totals"):
        assert shown[key] == ran[key], key
    assert shown["max_parallel_files"] == ran["max_parallel_files"]
    assert shown["metrics"]["peak_concurrency"] == ran["metrics"]["peak_concurrency"]


def test_show_prints_a_past_runs_units_again(make, capsys) -> None:
    repo = make(
        {
            "a.py": module(["F401"]),
            "b.py": module(["F401", "F821"]),
            "c.py": module(["E741"]),
            "dirty.py": module(["F401"]),
        }
    )
    (repo / "dirty.py").write_text("import sys\n")
    _, first = run_json(repo, "-j", "2", capsys=capsys)
    _, second = run_json(repo, "--dry-run", capsys=capsys)

    same_run(show_json(repo, capsys=capsys), second)
    same_run(show_json(repo, first["run_id"], capsys=capsys), first)
    assert {unit["status"] for unit in first["units"]} >= {"fixed", "partial", "skipped"}

    assert main(["show", "--repo", str(repo), first["run_id"]]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    for unit in first["units"]:
        assert unit["path"] in captured.err
    assert f"run {first['run_id']}" in captured.err


def test_show_of_a_run_that_is_not_there_says_so(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    assert main(["show", "--repo", str(repo)]) == 2
    assert "no runs in this repository" in capsys.readouterr().err
    assert main(["show", "--repo", str(repo), "20260101-000000-abcdef"]) == 2
    assert "no run '20260101-000000-abcdef'" in capsys.readouterr().err


def test_a_run_id_is_never_taken_as_a_path(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    _, ran = run_json(repo, "--dry-run", capsys=capsys)
    # The run's journal is at these paths, but they are no run ids.
    for name in (f"../runs/{ran['run_id']}", f"./{ran['run_id']}"):
        assert main(["show", "--repo", str(repo), name]) == 2
        assert f"no run {name!r}" in capsys.readouterr().err
        assert main(["resume", "--repo", str(repo), name]) == 2
        assert f"no run {name!r}" in capsys.readouterr().err
