"""``stomper runs``: the table a user reads, and pipes."""

from __future__ import annotations

import pytest

from stomper.cli import main
from stomper.testing.repos import module
from tests.conftest import run_json


@pytest.mark.parametrize("columns", ["80", "60"])
def test_runs_prints_whole_run_ids_on_stdout_and_names_a_dry_run(
    make, capsys, monkeypatch, columns
) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"])})
    _, dry = run_json(repo, "--dry-run", capsys=capsys)
    _, real = run_json(repo, capsys=capsys)
    monkeypatch.setenv("COLUMNS", columns)

    assert main(["runs", "--repo", str(repo)]) == 0

    captured = capsys.readouterr()
    rows = {line.split()[0]: line for line in captured.out.splitlines() if line.startswith(" 2")}
    assert set(rows) == {dry["run_id"], real["run_id"]}
    assert "completed" in rows[real["run_id"]] and "dry run" not in rows[real["run_id"]]
    assert "dry run" in captured.out.split(dry["run_id"], 1)[1]
    assert dry["run_id"] not in captured.err and real["run_id"] not in captured.err
