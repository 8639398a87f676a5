"""Bad input: a one-line error, exit 2, and nothing changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from stomper.cli import main
from stomper.testing.repos import commit_all, module
from tests.conftest import run_json, sh


def fix(repo: Path, *args: str) -> int:
    return main(["fix", "--repo", str(repo), "--no-progress", *args])


def assert_refused(code: int, capsys: pytest.CaptureFixture[str], *needles: str) -> None:
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out == ""
    message = " ".join(captured.err.split())
    for needle in needles:
        assert needle in message, message


def bound_by_permissions(*args: str) -> subprocess.CompletedProcess[str]:
    """Run stomper in a child that file permissions bind, also when the tests run as root
    (as in CI): it runs without the capabilities that let root override them."""
    argv = [sys.executable, "-m", "stomper", *args]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("root cannot be bound by file permissions without setpriv")
        caps = "-dac_override,-dac_read_search"
        argv = [setpriv, f"--inh-caps={caps}", f"--bounding-set={caps}", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def assert_refused_child(done: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    message = " ".join(done.stderr.split())
    for needle in needles:
        assert needle in message, message


def snapshot(repo: Path) -> tuple[str, str, str]:
    return (
        sh(repo, "rev-parse", "HEAD"),
        sh(repo, "status", "--porcelain", "--untracked-files=all"),
        sh(repo, "for-each-ref"),
    )


def test_not_a_repository(tmp_path, capsys) -> None:
    assert_refused(fix(tmp_path), capsys, "not a git repository", "--repo")


def test_bare_repository(tmp_path, capsys) -> None:
    sh(tmp_path, "init", "--quiet", "--bare")
    assert_refused(fix(tmp_path), capsys, "is a bare repository", "no working tree")


def test_inside_the_git_directory(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    assert_refused(fix(repo / ".git"), capsys, "inside a repository's git directory")


def test_corrupt_index(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD")
    (repo / ".git" / "index").write_bytes(b"DIRC garbage")
    assert_refused(fix(repo), capsys, "git cannot read the index", "git reset")
    assert sh(repo, "rev-parse", "HEAD") == head
    assert (repo / ".git" / "index").read_bytes() == b"DIRC garbage"
    assert "import os" in (repo / "a.py").read_text()


@pytest.mark.parametrize("where", ["stomper", "stomper/cache"])
def test_state_folder_that_is_a_file(make, capsys, where) -> None:
    repo = make({"a.py": module(["F401"])})
    blocker = repo / ".git" / where
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("mine\n")
    before = snapshot(repo)
    assert_refused(fix(repo), capsys, f"{blocker} is a file", "move it away")
    assert snapshot(repo) == before
    assert blocker.read_text() == "mine\n"


def test_read_only_git_directory(make) -> None:
    repo = make({"a.py": module(["F401"])})
    before = snapshot(repo)
    (repo / ".git").chmod(0o555)
    try:
        done = bound_by_permissions("fix", "--repo", str(repo), "--no-progress")
        cleaned = bound_by_permissions("clean", "--repo", str(repo))
    finally:
        (repo / ".git").chmod(0o755)
    for refused in (done, cleaned):
        assert_refused_child(refused, "cannot write its runs in", "writable")
        assert "ruff" not in refused.stderr
    assert snapshot(repo) == before


def test_repository_without_commits(tmp_path, capsys) -> None:
    sh(tmp_path, "init", "--quiet")
    assert_refused(fix(tmp_path), capsys, "no commits")


@pytest.mark.parametrize(
    ("marker", "words"),
    [("MERGE_HEAD", "merge"), ("rebase-merge", "rebase"), ("CHERRY_PICK_HEAD", "cherry-pick")],
)
def test_operation_in_progress(make, capsys, marker, words) -> None:
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    target = repo / ".git" / marker
    if marker.endswith("HEAD"):
        target.write_text(head + "\n")
    else:
        target.mkdir()
    before = snapshot(repo)
    assert_refused(fix(repo), capsys, words, "in progress")
    assert snapshot(repo) == before


def test_detached_head_needs_branch(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    sh(repo, "checkout", "--quiet", "--detach")
    before = snapshot(repo)
    assert_refused(fix(repo), capsys, "detached", "--branch")
    assert snapshot(repo) == before
    assert fix(repo, "--branch", "fixes") == 0
    assert "import os" in (repo / "a.py").read_text()


def test_unknown_tool(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    code = fix(repo, "--tool", "pylint")
    err = capsys.readouterr().err
    assert code == 2 and "--tools" not in err
    assert "unknown tool 'pylint'" in err and "set by --tool)" in err


def test_invalid_variable_names_the_variable_and_no_flag(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("STOMPER_REQUEST_TIMEOUT", "abc")
    code = fix(repo)
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert "set by STOMPER_REQUEST_TIMEOUT" in captured.err
    assert "--request-timeout" not in captured.err


def test_stomper_setting_that_is_no_table(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool]\nstomper = 5\n")
    commit_all(repo, "config")
    before = snapshot(repo)
    assert_refused(fix(repo), capsys, "tool.stomper", "is 5, not a table", "[tool.stomper]")
    assert snapshot(repo) == before


def test_malformed_base_url_is_refused_before_any_request(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    before = snapshot(repo)
    code = fix(repo, "--agent", "openai", "--model", "m", "--base-url", "not-a-url")
    err = capsys.readouterr().err
    assert "cannot reach" not in err
    assert code == 2 and "base_url: give an http:// or https:// URL" in err
    assert snapshot(repo) == before


def test_tool_not_installed(make, capsys, monkeypatch) -> None:
    import stomper.diagnostics.mypy as mypy_module

    repo = make({"a.py": module(["F401"])})
    monkeypatch.setattr(mypy_module, "mypy_command", lambda: None)
    before = snapshot(repo)
    assert_refused(fix(repo, "--tool", "mypy"), capsys, "mypy is not installed", "pip install mypy")
    assert snapshot(repo) == before


def test_invalid_config_value_names_the_key(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.stomper]\nmax_parallel_files = 'many'\n")
    commit_all(repo, "config")
    assert_refused(fix(repo), capsys, "max_parallel_files")
    assert len(capsys.readouterr().err.strip().splitlines()) <= 1


def test_unknown_config_key(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(pyproject.read_text() + "\n[tool.stomper]\nmax_paralel_files = 2\n")
    commit_all(repo, "config")
    assert_refused(fix(repo), capsys, "unknown key", "max_paralel_files")


def test_invalid_environment_value(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    monkeypatch.setenv("STOMPER_MAX_PARALLEL_FILES", "-3")
    assert_refused(fix(repo), capsys, "max_parallel_files", "STOMPER_MAX_PARALLEL_FILES")


def test_zero_parallel_files(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    before = snapshot(repo)
    assert_refused(fix(repo, "--max-parallel-files", "0"), capsys, "max_parallel_files")
    assert snapshot(repo) == before


def test_path_that_does_not_exist(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    assert_refused(fix(repo, str(repo / "nope.py")), capsys, "no such file", "nope.py")


def test_path_outside_the_repository(make, tmp_path, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    outside = tmp_path / "elsewhere.py"
    outside.write_text("import os\n")
    assert_refused(fix(repo, str(outside)), capsys, "outside the repository")


def test_a_path_in_a_submodule_says_whose_it_is(make, capsys) -> None:
    library = make({"lib.py": module(["F401"]), "pkg/x.py": module(["F401"])}, name="lib")
    repo = make({"a.py": module(["F401"])})
    sh(
        repo,
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        str(library),
        "vendor/lib",
    )
    sh(repo, "commit", "-qm", "a submodule")
    before = snapshot(repo)
    for given, said in [
        ("vendor/lib/lib.py", "is inside the submodule vendor/lib"),
        ("vendor/lib/pkg", "is inside the submodule vendor/lib"),
        ("vendor/lib", "is a submodule"),
    ]:
        assert_refused(fix(repo, str(repo / given)), capsys, said, "stomper fix --repo")
    # Not checked out, it is still a submodule: not a file that does not exist.
    sh(repo, "submodule", "deinit", "-q", "-f", "vendor/lib")
    assert_refused(
        fix(repo, str(repo / "vendor/lib/lib.py")), capsys, "is inside the submodule vendor/lib"
    )
    assert snapshot(repo)[0] == before[0]


def test_a_path_outside_the_sparse_checkout_says_so(make, capsys) -> None:
    repo = make({"a.py": module(["F401"]), "docs/d.py": module(["F401"])})
    sh(repo, "sparse-checkout", "set", "--no-cone", "/a.py", "/pyproject.toml")
    assert not (repo / "docs").exists()
    for given in ("docs/d.py", "docs"):
        assert_refused(fix(repo, str(repo / given)), capsys, "outside the sparse checkout")
    assert_refused(fix(repo, str(repo / "nope.py")), capsys, "no such file", "nope.py")


def test_existing_branch_is_refused(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    sh(repo, "branch", "taken")
    assert_refused(fix(repo, "--branch", "taken"), capsys, "taken", "exists already")


def test_invalid_branch_name(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    assert_refused(fix(repo, "--branch", "no..dots"), capsys, "invalid branch name")


def test_unknown_agent(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    assert_refused(fix(repo, "--agent", "wizard"), capsys, "unknown agent 'wizard'")


def raising_factory(settings: object) -> object:
    raise RuntimeError("no such model\nsee the log")


def no_agent_factory(settings: object) -> object:
    return 42


class NamelessAgent:
    def __init__(self, settings: object) -> None:
        self.settings = settings

    async def fix(self, task: object) -> None:
        return None


@pytest.mark.parametrize(
    ("agent", "words"),
    [
        ("os:sep", ["cannot load agent 'os:sep'", "is a str, not a factory"]),
        ("os:no_such_name", ["cannot load agent 'os:no_such_name'", "AttributeError"]),
        ("no_such_module_here:x", ["cannot load agent", "ModuleNotFoundError"]),
        (":x", ["cannot load agent ':x'"]),
        (
            "tests.test_cli_errors:raising_factory",
            ["factory", "failed: RuntimeError: no such model see the log"],
        ),
        (
            "tests.test_cli_errors:no_agent_factory",
            ["returned a int, which is no agent", "async fix(task)"],
        ),
        ("tests.test_cli_errors:NamelessAgent", ["returned a NamelessAgent, which is no agent"]),
    ],
)
def test_an_agent_of_ones_own_that_cannot_work_is_refused(make, capsys, agent, words) -> None:
    repo = make({"a.py": module(["F401"])})
    before = snapshot(repo)
    code = fix(repo, "--agent", agent)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    message = " ".join(err.split())
    for needle in words:
        assert needle in message, message
    assert snapshot(repo) == before


def test_unknown_flag(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    code = fix(repo, "--frobnicate")
    assert code == 2
    assert "frobnicate" in capsys.readouterr().err


def test_flag_overrides_environment_overrides_config(make, capsys, monkeypatch) -> None:
    from stomper.config import load_settings

    repo = make({"a.py": module(["F401"])})
    pyproject = repo / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text() + '\n[tool.stomper]\nmax_parallel_files = 2\nignore = ["E7"]\n'
    )
    assert load_settings(repo, {}).max_parallel_files == 2
    assert load_settings(repo, {}).ignore == ["E7"]
    monkeypatch.setenv("STOMPER_MAX_PARALLEL_FILES", "3")
    monkeypatch.setenv("STOMPER_TOOLS", "ruff,mypy")
    assert load_settings(repo, {}).max_parallel_files == 3
    assert load_settings(repo, {}).tools == ["ruff", "mypy"]
    assert load_settings(repo, {"max_parallel_files": 5}).max_parallel_files == 5


def test_checkpointer_that_is_no_postgres_url(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    before = snapshot(repo)
    code = fix(repo, "--checkpointer", "mysql://me:hunter2@db/stomper")
    err = capsys.readouterr().err
    assert code == 2
    assert "hunter2" not in err
    message = " ".join(err.split())
    for needle in ("checkpointer", "mysql://me:***@db/stomper", "set by --checkpointer"):
        assert needle in message, message
    assert snapshot(repo) == before


def fake_ruff(folder: Path, script: str) -> Path:
    """A program called ruff, first on PATH: ``script`` is its shell body."""
    folder.mkdir()
    ruff = folder / "ruff"
    ruff.write_text("#!/bin/sh\n" + script)
    ruff.chmod(0o755)
    return ruff


def test_a_ruff_that_prints_no_json(make, tmp_path, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    fake_ruff(tmp_path / "bin", 'if [ "$1" = --version ]; then echo "ruff 0.9.0"; fi\necho hello\n')
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    before = snapshot(repo)
    assert_refused(fix(repo), capsys, "ruff printed no JSON report", "'hello'", "reinstall")
    assert snapshot(repo) == before


@pytest.mark.parametrize(
    ("script", "words"),
    [
        ("exit 7\n", ["ruff does not run", "--version exited 7", "reinstall ruff"]),
        ("echo 'broken: 7' >&2\nexit 7\n", ["exited 7: broken: 7"]),
        ("echo 'Python 3.11'\n", ["is not ruff", "'Python 3.11'"]),
    ],
    ids=["silent", "talking", "not-ruff"],
)
def test_a_ruff_that_does_not_run_is_not_called_missing(
    make, tmp_path, capsys, monkeypatch, script, words
) -> None:
    repo = make({"a.py": module(["F401"])})
    fake_ruff(tmp_path / "bin", script)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    code = fix(repo)
    err = capsys.readouterr().err
    assert "not installed" not in err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    message = " ".join(err.split())
    for needle in words:
        assert needle in message, message


def units_of(document: str) -> dict[str, tuple[str, str | None]]:
    units = json.loads(document)["units"]
    return {unit["path"]: (unit["status"], unit["reason"]) for unit in units}


LATIN_1 = b'# coding: latin-1\nimport os\nx = "\xe9"\n'


def test_a_file_that_is_not_utf8_is_skipped_with_the_reason(make, capsys) -> None:
    repo = make({"latin.py": LATIN_1, "a.py": module(["F401"])})
    code, document = run_json(repo, capsys=capsys)
    assert code == 1
    units = {unit["path"]: unit for unit in document["units"]}
    assert units["a.py"]["status"] == "fixed"
    latin = units["latin.py"]
    assert latin["status"] == "skipped" and latin["commit"] is None
    assert "UTF-8" in latin["reason"] and "CalledProcessError" not in latin["reason"]
    assert (repo / "latin.py").read_bytes() == LATIN_1


@pytest.mark.parametrize(
    ("unreadable", "unit", "mode"), [("a.py", "a.py", 0o644), ("sub", "sub/a.py", 0o755)]
)
def test_an_unreadable_file_or_folder_is_skipped_as_unreadable(
    make, unreadable, unit, mode
) -> None:
    repo = make({unit: module(["F401"]), "b.py": module(["F401"])})
    (repo / unreadable).chmod(0)
    try:
        done = bound_by_permissions("fix", "--repo", str(repo), "--no-progress", "--json")
    finally:
        (repo / unreadable).chmod(mode)
    assert done.returncode == 1, done.stderr
    units = units_of(done.stdout)
    assert units["b.py"] == ("fixed", None)
    status, reason = units[unit]
    assert status == "skipped" and reason is not None
    assert "cannot read the file" in reason and "Permission denied" in reason
    assert "changed" not in reason
    assert (repo / unit).read_text() == module(["F401"])


def interrupted_run(make, capsys) -> tuple[Path, Path]:
    """A repository with one finished run, recorded as interrupted: its run.json."""
    repo = make({"a.py": module(["F401"]), "b.py": module(["F821"])})
    assert fix(repo) == 1
    capsys.readouterr()
    (meta_file,) = (repo / ".git" / "stomper" / "runs").glob("*/run.json")
    meta = json.loads(meta_file.read_text())
    meta["status"] = "interrupted"
    meta_file.write_text(json.dumps(meta))
    return repo, meta_file


def tamper(meta_file: Path, change) -> None:
    meta = json.loads(meta_file.read_text())
    change(meta)
    meta_file.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda meta: meta.pop("run_id"), ["damaged (no run_id)"]),
        (lambda meta: meta.update(run_id="other"), ["run_id 'other' is not the name"]),
        (lambda meta: meta.update(base="f" * 40), ["is not a commit of this repository"]),
        (lambda meta: meta.update(target=7), ["target is 7, not a str"]),
        (lambda meta: meta.update(checked_out="yes"), ["checked_out is 'yes', not a bool"]),
        (
            lambda meta: meta["settings"].update(max_parallel_files="many"),
            ["setting max_parallel_files: give a number from 1 to 1024, or auto"],
        ),
        (lambda meta: meta["settings"].update(frobnicate=1), ["setting frobnicate"]),
        (lambda meta: meta.update(settings=[]), ["settings is [], not a dict"]),
    ],
    ids=["no-run-id", "other-run-id", "base", "target", "checked-out", "value", "key", "list"],
)
def test_resume_refuses_a_tampered_journal_in_one_line(make, capsys, change, words) -> None:
    repo, meta_file = interrupted_run(make, capsys)
    tamper(meta_file, change)
    before = snapshot(repo)
    code = main(["resume", "--repo", str(repo), "--no-progress", meta_file.parent.name])
    assert_refused(code, capsys, "cannot be resumed", str(meta_file), *words)
    assert snapshot(repo) == before


def test_a_journal_that_is_no_object_is_refused_and_listed_as_damaged(make, capsys) -> None:
    repo, meta_file = interrupted_run(make, capsys)
    meta_file.write_text("[1, 2]")
    before = snapshot(repo)
    code = main(["resume", "--repo", str(repo), "--no-progress"])
    assert_refused(code, capsys, "holds no JSON object", "stomper runs", str(meta_file.parent))
    assert main(["resume", "--repo", str(repo), meta_file.parent.name]) == 2
    assert main(["runs", "--repo", str(repo), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["run_id"] == meta_file.parent.name and listed["status"] == "damaged"
    assert main(["clean", "--repo", str(repo), "--journals"]) == 0
    assert meta_file.exists()
    assert snapshot(repo) == before


def test_demo_in_a_folder_that_cannot_be_made(tmp_path, capsys) -> None:
    (tmp_path / "a-file").write_text("mine\n")
    code = main(["demo", "--dir", str(tmp_path / "a-file" / "demo")])
    assert_refused(code, capsys, "cannot make the sample repository", "Not a directory", "--dir")
    code = main(["demo", "--dir", str(tmp_path / "a-file")])
    assert_refused(code, capsys, "is not an empty folder")
    assert (tmp_path / "a-file").read_text() == "mine\n"


def test_demo_in_a_folder_that_cannot_be_written(tmp_path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    done = bound_by_permissions("demo", "--dir", str(locked / "demo"))
    assert_refused_child(done, "cannot make the sample repository", "Permission denied", "--dir")
    assert list(locked.iterdir()) == []


def test_a_select_that_matches_nothing_is_warned_of(make, capsys) -> None:
    repo = make({"a.py": module(["F401", "E713"])})
    before = snapshot(repo)
    assert fix(repo, "--select", "XYZ") == 0
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if line.startswith("warning:")]
    assert "select XYZ matches no diagnostic" in warning and "E713, F401" in warning
    assert snapshot(repo) == before
    assert fix(repo, "--select", "F4,XYZ") == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert "select XYZ matches" in warning and "F4" not in warning.split("matches")[0]
    assert fix(repo, "--select", "E7") == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["fix", "review", "run", "resume"])
def test_the_help_names_the_table_of_prices(command, capsys, monkeypatch) -> None:
    """A name in brackets is text, not the help's markup (which would drop it)."""
    monkeypatch.setenv("COLUMNS", "200")
    assert main([command, "--help"]) == 0
    assert "at the model's price in [tool.stomper.prices]." in capsys.readouterr().out
