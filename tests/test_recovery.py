"""What the next command puts right after a run died mid-landing, and what it leaves."""

from __future__ import annotations

import json

from stomper.cli import main


def test_a_dead_run_whose_record_was_edited_by_hand_is_left_alone(make, capsys) -> None:
    repo = make({"a.py": "A = 1\n"})
    run_dir = repo / ".git" / "stomper" / "runs" / "20261202-000000-abcdef"
    run_dir.mkdir(parents=True)
    record = {"run_id": run_dir.name, "status": "running", "checked_out": True}
    (run_dir / "run.json").write_text(json.dumps({**record, "target": "refs/heads/main"}))

    assert main(["runs", "--repo", str(repo), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["status"] == "crashed"
    assert "checkout_repaired" not in json.loads((run_dir / "run.json").read_text())
