"""``stomper fix`` end to end, on real repositories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from stomper.agents import AgentOutcome, AgentTask
from stomper.cli import main
from stomper.diagnostics.ruff import ruff_binary
from stomper.testing.repos import FIXABLE, UNFIXABLE, make_repo, module, sample_project
from tests.conftest import run_json, sh


def trailer_units(repo: Path, since: str) -> list[str]:
    out = sh(repo, "log", "--format=%(trailers:key=Stomper-Unit,valueonly)", f"{since}..HEAD")
    return [line for line in out.splitlines() if line]


def test_fix_lands_one_commit_per_file_with_trailers(make, capsys) -> None:
    repo = make(sample_project(8))
    base = sh(repo, "rev-parse", "HEAD").strip()
    code, doc = run_json(repo, capsys=capsys)
    assert doc["status"] == "completed"
    assert doc["base"] == base
    assert doc["target"] == "refs/heads/main"
    landed = [unit for unit in doc["units"] if unit["commit"]]
    assert landed, doc
    commits = sh(repo, "rev-list", "--reverse", f"{base}..HEAD").split()
    assert len(commits) == len(landed) == doc["totals"]["commits"]
    for sha in commits:
        files = sh(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split()
        assert len(files) == 1
        message = sh(repo, "log", "-1", "--format=%B", sha)
        assert f"Stomper-Run: {doc['run_id']}" in message
        assert f"Stomper-Unit: {files[0]}" in message
        assert message.startswith("fix(ruff): resolve ")
    assert sorted(trailer_units(repo, base)) == sorted(unit["path"] for unit in landed)
    # Units whose diagnostics ruff cannot fix remain: exit 1.
    assert code == 1
    assert sh(repo, "status", "--porcelain") == ""


def test_statuses_follow_what_was_fixed(make, capsys) -> None:
    repo = make(
        {
            "pyproject.toml": sample_project(0)["pyproject.toml"],
            "all.py": module(["F401", "F541"]),
            "some.py": module(["F401", "F821"]),
            "none.py": module(["E722"]),
            "clean.py": "X = 1\n",
        }
    )
    code, doc = run_json(repo, capsys=capsys)
    by_path = {unit["path"]: unit for unit in doc["units"]}
    assert set(by_path) == {"all.py", "some.py", "none.py"}
    assert by_path["all.py"]["status"] == "fixed"
    assert by_path["all.py"]["diagnostics_after"] == 0
    assert by_path["some.py"]["status"] == "partial"
    assert [d["code"] for d in by_path["some.py"]["remaining"]] == ["F821"]
    assert by_path["some.py"]["commit"]
    assert by_path["none.py"]["status"] == "unchanged"
    assert by_path["none.py"]["commit"] is None
    assert code == 1


def test_nothing_to_do_exits_zero(make, capsys) -> None:
    repo = make({"clean.py": "X = 1\n"})
    code, doc = run_json(repo, capsys=capsys)
    assert code == 0
    assert doc["units"] == []
    assert doc["totals"]["units"] == 0


def test_all_fixed_exits_zero(make, capsys) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F541", "E713"])})
    code, doc = run_json(repo, capsys=capsys)
    assert code == 0, doc
    assert doc["totals"]["fixed"] == 2
    assert doc["totals"]["diagnostics_remaining"] == 0


def test_counts_equal_a_recount_from_git_and_ruff(make, capsys) -> None:
    from stomper.diagnostics.ruff import ruff_binary

    repo = make(sample_project(12))
    base = sh(repo, "rev-parse", "HEAD").strip()

    def ruff_count() -> int:
        import json
        import subprocess

        done = subprocess.run(
            [ruff_binary(), "check", "--output-format", "json", "--exit-zero", "--no-cache", "."],
            cwd=repo,
            capture_output=True,
            check=True,
        )
        return len(json.loads(done.stdout))

    before = ruff_count()
    _, doc = run_json(repo, capsys=capsys)
    totals = doc["totals"]
    assert totals["diagnostics_before"] == before
    assert totals["diagnostics_remaining"] == ruff_count()
    assert totals["diagnostics_fixed"] == before - ruff_count()
    assert totals["commits"] == len(sh(repo, "rev-list", f"{base}..HEAD").split())
    assert totals["units"] == len(doc["units"])
    statuses = [unit["status"] for unit in doc["units"]]
    for status in ("fixed", "partial", "failed", "skipped", "unchanged"):
        assert totals[status] == statuses.count(status)
    assert totals["diagnostics_fixed"] == sum(len(unit["fixed"]) for unit in doc["units"])


def test_user_work_is_untouched_and_dirty_file_skipped(make, capsys) -> None:
    repo = make(
        {
            "staged.py": module(["F401"]),
            "unstaged.py": module(["F401"]),
            "other.py": module(["F401"]),
            "notes.txt": "keep\n",
        }
    )
    (repo / "staged.py").write_text((repo / "staged.py").read_text() + "STAGED = 1\n")
    sh(repo, "add", "staged.py")
    (repo / "unstaged.py").write_text((repo / "unstaged.py").read_text() + "UNSTAGED = 1\n")
    (repo / "notes.txt").write_text("changed but not staged\n")
    (repo / "untracked.py").write_text("import os\n")
    snapshot = {
        name: (repo / name).read_bytes()
        for name in ("staged.py", "unstaged.py", "notes.txt", "untracked.py")
    }
    index_before = sh(repo, "ls-files", "--stage")
    staged_diff = sh(repo, "diff", "--cached")
    unstaged_diff = sh(repo, "diff")

    code, doc = run_json(repo, capsys=capsys)
    by_path = {unit["path"]: unit for unit in doc["units"]}
    assert by_path["staged.py"]["status"] == "skipped"
    assert "uncommitted" in by_path["staged.py"]["reason"]
    assert by_path["unstaged.py"]["status"] == "skipped"
    assert "untracked.py" not in by_path
    assert by_path["other.py"]["status"] == "fixed"

    for name, content in snapshot.items():
        assert (repo / name).read_bytes() == content, name
    assert sh(repo, "diff", "--cached") == staged_diff
    assert sh(repo, "diff") == unstaged_diff
    landed = sh(repo, "ls-files", "--stage", "other.py")
    assert landed != [line for line in index_before.splitlines() if line.endswith("other.py")][0]
    assert "import os" not in (repo / "other.py").read_text()
    assert sh(repo, "status", "--porcelain", "other.py") == ""
    show = sh(repo, "show", "--name-only", "--format=", "HEAD").split()
    assert show == ["other.py"]
    assert code == 1


def test_branch_lands_elsewhere_and_leaves_checkout(make, capsys) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F541"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    before = (repo / "a.py").read_bytes()
    code, doc = run_json(repo, "--branch", "stomper/fixes", capsys=capsys)
    assert code == 0
    assert doc["target"] == "refs/heads/stomper/fixes"
    assert sh(repo, "rev-parse", "HEAD").strip() == head
    assert sh(repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    assert (repo / "a.py").read_bytes() == before
    assert len(sh(repo, "rev-list", f"{head}..stomper/fixes").split()) == 2
    assert sh(repo, "status", "--porcelain") == ""


def test_dry_run_lands_nothing_and_prints_diffs(make, capsys) -> None:
    from stomper.cli import main

    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    code = main(["fix", "--repo", str(repo), "--dry-run", "--no-progress"])
    out = capsys.readouterr().out
    assert "--- a/a.py" in out and "+++ b/a.py" in out
    assert "-import os" in out
    assert sh(repo, "rev-parse", "HEAD").strip() == head
    assert code == 0


def test_dry_run_json_says_so_and_holds_each_units_diff(make, capsys) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F821"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    _, doc = run_json(repo, "--dry-run", capsys=capsys)
    assert doc["dry_run"] is True
    by_path = {unit["path"]: unit for unit in doc["units"]}
    diff = by_path["a.py"]["diff"]
    assert diff.startswith("diff --git a/a.py b/a.py") and "\n-import os\n" in diff
    assert by_path["b.py"]["status"] == "unchanged" and by_path["b.py"]["diff"] is None
    assert sh(repo, "rev-parse", "HEAD").strip() == head

    _, landed = run_json(repo, capsys=capsys)
    assert landed["dry_run"] is False
    assert all(unit["diff"] is None for unit in landed["units"])


def test_select_and_ignore_narrow_the_targets(make, capsys) -> None:
    repo = make({"a.py": module(["F401", "F541"])})
    _, doc = run_json(repo, "--select", "F541", capsys=capsys)
    (unit,) = doc["units"]
    assert [d["code"] for d in unit["fixed"]] == ["F541"]
    assert "import os" in (repo / "a.py").read_text()
    _, doc = run_json(repo, "--ignore", "F541,I", capsys=capsys)
    assert [d["code"] for d in doc["units"][0]["fixed"]] == ["F401"]


def test_paths_and_max_files_limit_the_units(make, capsys) -> None:
    repo = make({f"pkg/m{i}.py": module(["F401"]) for i in range(5)} | {"top.py": module(["F401"])})
    _, doc = run_json(repo, "pkg", "--max-files", "2", capsys=capsys)
    assert [unit["path"] for unit in doc["units"]] == ["pkg/m0.py", "pkg/m1.py"]
    _, doc = run_json(repo, "top.py", capsys=capsys)
    assert [unit["path"] for unit in doc["units"]] == ["top.py"]


def test_git_diff_limits_to_changed_files(make, capsys) -> None:
    from stomper.testing.repos import commit_all

    repo = make({"old.py": module(["F401"])})
    base = sh(repo, "rev-parse", "HEAD").strip()
    (repo / "new.py").write_text(module(["F401"]))
    commit_all(repo, "add new")
    _, doc = run_json(repo, "--git-diff", base, capsys=capsys)
    assert [unit["path"] for unit in doc["units"]] == ["new.py"]


@pytest.mark.parametrize("name", ["with space.py", "ünïcode.py", "-dash.py"])
def test_awkward_file_names(make, capsys, name) -> None:
    repo = make({name: module(["F401"])})
    code, doc = run_json(repo, capsys=capsys)
    assert code == 0, doc
    assert doc["units"][0]["path"] == name
    assert trailer_units(repo, "HEAD~1") == [name]


def test_peak_concurrency_is_min_of_limit_and_units(make, capsys) -> None:
    repo = make({f"m{i}.py": module(["F401"]) for i in range(6)})
    _, doc = run_json(repo, "-j", "4", capsys=capsys)
    assert doc["metrics"]["peak_concurrency"] == 4
    assert doc["max_parallel_files"] == 4
    repo = make({f"m{i}.py": module(["F401"]) for i in range(3)})
    _, doc = run_json(repo, "-j", "8", capsys=capsys)
    assert doc["metrics"]["peak_concurrency"] == 3


def test_no_worktree_or_lock_is_left(make, capsys) -> None:
    repo = make(sample_project(6))
    run_json(repo, capsys=capsys)
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    state = repo / ".git" / "stomper"
    assert list((state / "worktrees").iterdir()) == []
    assert list((state / "locks").iterdir()) == []
    assert sh(repo, "branch", "--list").split() == ["*", "main"]


def test_unfixable_only_tools_keep_their_snippets() -> None:
    assert set(FIXABLE).isdisjoint(UNFIXABLE)


def test_findings_whose_message_names_a_line_survive_a_fix_above_them(make, capsys) -> None:
    # F811 and F402 name the line of what they refer to; removing `import sys` moves it.
    source = (
        "import sys\nimport os\n\n\ndef f():\n    pass\n\n\ndef f():\n    return os\n\n\n"
        "for os in range(3):\n    print(os)\n"
    )
    repo = make({"pyproject.toml": '[tool.ruff.lint]\nselect = ["E", "F"]\n', "a.py": source})
    _, doc = run_json(repo, capsys=capsys)
    [unit] = doc["units"]
    assert unit["status"] == "partial", unit["reason"]
    assert [d["code"] for d in unit["fixed"]] == ["F401"]
    assert sorted(d["code"] for d in unit["remaining"]) == ["F402", "F811"]
    assert (repo / "a.py").read_text() == source.removeprefix("import sys\n")


def test_a_fix_that_brings_in_a_finding_is_held_back_and_the_rest_lands(make, capsys) -> None:
    # ruff's fix for B009 turns `getattr(x, "attr")` into `x.attr`, a useless expression
    # (B018); its fix for F401 is sound.
    source = 'import os\n\n\ndef f(x):\n    getattr(x, "attr")\n'
    repo = make({"pyproject.toml": '[tool.ruff.lint]\nselect = ["B", "F"]\n', "a.py": source})
    _, doc = run_json(repo, capsys=capsys)
    [unit] = doc["units"]
    assert unit["status"] == "partial", unit["reason"]
    assert [d["code"] for d in unit["fixed"]] == ["F401"]
    assert [d["code"] for d in unit["remaining"]] == ["B009"]
    assert "B009" in unit["reason"] and "B018" in unit["reason"]
    assert unit["attempts"] == 2
    assert (repo / "a.py").read_text() == source.removeprefix("import os\n")
    assert sh(repo, "status", "--porcelain") == ""


def test_autofix_is_not_asked_twice_and_a_partial_unit_says_what_is_left(make, capsys) -> None:
    repo = make({"some.py": module(["F401", "F821", "F821"])})
    _, doc = run_json(repo, capsys=capsys)
    [unit] = doc["units"]
    assert unit["status"] == "partial"
    assert unit["attempts"] == 1
    assert unit["reason"] == "left: F811, F821 x2"


def test_every_file_is_fixed_as_one_ruff_run_from_the_root_fixes_it_whatever_j(
    tmp_path: Path, capsys
) -> None:
    # No configuration in the project: ruff roots it where it runs, and only from the root
    # is `app` a first-party package, sorted apart from pytest.
    user_config = Path(os.environ["XDG_CONFIG_HOME"]) / "ruff" / "ruff.toml"
    user_config.parent.mkdir(parents=True)
    user_config.write_text('[lint]\nextend-select = ["I"]\n')
    test = "import app\nimport os\n\nimport pytest\n\nprint(os, app, pytest)\n"
    files = {"app/__init__.py": "", **{f"tests/test_{n}.py": test for n in range(6)}}
    reference = make_repo(tmp_path / "reference", files)
    subprocess.run(
        [ruff_binary(), "check", "--fix", "--no-cache", "--quiet", "."], cwd=reference, check=False
    )
    expected = {name: (reference / name).read_bytes() for name in files}
    assert expected != {name: content.encode() for name, content in files.items()}
    for jobs in ("1", "4"):
        repo = make_repo(tmp_path / f"j{jobs}", files)
        _, doc = run_json(repo, "-j", jobs, capsys=capsys)
        assert {unit["status"] for unit in doc["units"]} == {"fixed"}, doc["units"]
        assert {name: (repo / name).read_bytes() for name in files} == expected


TYPED = {
    "pyproject.toml": '[tool.ruff.lint]\nselect = ["F"]\n',
    "both.py": 'import os\n\nCOUNT: int = "many"\n',
    "typed.py": 'LIMIT: int = "none"\n',
}


def test_no_unit_is_made_for_what_the_agent_cannot_fix(make, capsys) -> None:
    repo = make(TYPED)
    code, doc = run_json(repo, "--tool", "ruff", "--tool", "mypy", capsys=capsys)
    [unit] = doc["units"]
    assert (unit["path"], unit["status"]) == ("both.py", "fixed")
    assert [d["code"] for d in unit["fixed"]] == ["F401"]
    left = doc["left_out"]
    assert (left["diagnostics"], left["files"]) == (2, 1)
    assert "autofix" in left["reason"] and "mypy" in left["reason"]
    assert code == 1  # what was left out is still there
    # Again, with nothing left that the agent can fix: no unit at all, and the summary says
    # what was left out, and why.
    code = main(["fix", "--repo", str(repo), "--no-progress", "--tool", "ruff", "--tool", "mypy"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1
    assert "left out │ 2 diagnostics (2 files with nothing else): autofix fixes only" in err


class TypeFixer:
    """Fixes this module's one kind of mypy error: a string where an int is declared."""

    name = "type-fixer"

    async def fix(self, task: AgentTask) -> AgentOutcome:
        text = task.file.read_text()
        task.file.write_text(text.replace('"many"', "3").replace('"none"', "0"))
        return AgentOutcome()


def type_fixer(settings: object) -> TypeFixer:
    return TypeFixer()


def test_a_tree_tools_baseline_is_taken_once_for_the_whole_run(
    make, capsys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {**TYPED, **{f"more{n}.py": f'SIZE{n}: int = "none"\n' for n in range(3)}}
    repo = make(files)
    log = tmp_path / "mypy-runs"
    wrapper = tmp_path / "bin" / "mypy"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {sys.executable} -m mypy "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}{os.pathsep}{os.environ['PATH']}")
    _, doc = run_json(
        repo, "--tool", "mypy", "--agent", f"{__name__}:type_fixer", "-j", "2", capsys=capsys
    )
    assert {unit["status"] for unit in doc["units"]} == {"fixed"}
    assert len(doc["units"]) == 5
    # One run to plan, one for every unit's baseline, then one to verify each unit.
    checks = [line for line in log.read_text().splitlines() if "--output json" in line]
    assert len(checks) == 1 + 1 + 5
    assert 'int = "' not in "".join(
        (repo / name).read_text() for name in files if name != "pyproject.toml"
    )


def test_only_the_finding_whose_fix_brings_in_a_new_one_is_held_back(make, capsys) -> None:
    # Removing the unused `import json` of the except clause leaves `simplejson` unused, which
    # ruff cannot fix; the fixes of the other unused imports are sound.
    source = (
        "import os\nimport sys\n\ntry:\n    import simplejson as json\nexcept ImportError:\n"
        "    import json\n\nfrom collections import OrderedDict\n"
    )
    repo = make({"pyproject.toml": '[tool.ruff.lint]\nselect = ["F"]\n', "a.py": source})
    _, doc = run_json(repo, capsys=capsys)
    [unit] = doc["units"]
    assert unit["status"] == "partial", unit["reason"]
    assert len(unit["fixed"]) == 3
    assert [d["line"] for d in unit["remaining"]] == [7]
    assert "line 7" in unit["reason"]
    assert (repo / "a.py").read_text() == (
        "\ntry:\n    import simplejson as json\nexcept ImportError:\n    import json\n\n"
    )
    assert "noqa" not in (repo / "a.py").read_text()
