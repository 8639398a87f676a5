"""File names in commit messages and trailers: quoted as git quotes paths, read back exactly."""

from __future__ import annotations

import json

import pytest

from stomper.cli import main
from stomper.testing.repos import module
from stomper.unit import quote_path, unquote_path
from tests.conftest import run_json, sh

NAMES = ["a.py", "new\nline.py", "tab\there.py", 'say "hi".py', "back\\slash.py", "é.py"]


@pytest.mark.parametrize("name", [*NAMES, "bell\a.py", " lead.py", "trail.py ", '"a"'])
def test_a_quoted_name_reads_back_exactly(name) -> None:
    quoted = quote_path(name)
    assert "\n" not in quoted and quoted == quoted.strip()
    assert unquote_path(quoted) == name


def test_names_are_quoted_as_git_quotes_them(make) -> None:
    repo = make({name: "x = 1\n" for name in NAMES})
    # Without -z, git quotes each name that needs it, one a line.
    listed = sh(repo, "-c", "core.quotepath=off", "ls-files").splitlines()
    assert sorted(listed) == sorted(quote_path(name) for name in [*NAMES, "pyproject.toml"])


def test_a_name_with_a_newline_lands_with_one_subject_and_resumes(make, capsys) -> None:
    name = "new\nline.py"
    repo = make({name: module(["F401"]), "b.py": module(["F401"])})
    code, document = run_json(repo, capsys=capsys)
    assert code == 0
    commits = {unit["path"]: unit["commit"] for unit in document["units"]}
    message = sh(repo, "log", "-1", "--format=%B", commits[name])
    subject, blank, *_ = message.splitlines()
    assert subject == 'fix(ruff): resolve 1 diagnostic in "new\\nline.py"' and blank == ""
    trailer = "--format=%(trailers:key=Stomper-Unit,valueonly)"
    assert sh(repo, "log", "-1", trailer, commits[name]).strip() == '"new\\nline.py"'

    # Cut short after the landing, before its journal line: resume must know it landed.
    run_dir = repo / ".git" / "stomper" / "runs" / document["run_id"]
    meta = json.loads((run_dir / "run.json").read_text())
    (run_dir / "run.json").write_text(json.dumps({**meta, "status": "interrupted"}))
    kept = [
        line
        for line in (run_dir / "units.jsonl").read_text().splitlines()
        if json.loads(line)["path"] != name
    ]
    (run_dir / "units.jsonl").write_text("".join(line + "\n" for line in kept))
    head = sh(repo, "rev-parse", "HEAD")
    code = main(["resume", "--repo", str(repo), "--json", "--no-progress"])
    resumed = {unit["path"]: unit for unit in json.loads(capsys.readouterr().out)["units"]}
    assert code == 0
    assert resumed[name]["status"] == "fixed"
    assert resumed[name]["commit"] == commits[name]
    assert sh(repo, "rev-parse", "HEAD") == head
    assert sh(repo, "status", "--porcelain") == ""
