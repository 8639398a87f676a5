"""Faults a run survives with nothing lost: locks, a moving target, a broken journal."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.autofix import AutofixAgent
from stomper.cli import main
from stomper.commands.fix import FixRequest, run_fix
from stomper.config import Settings
from stomper.testing.repos import commit_all, module
from stomper.workspace import MEMORY
from tests.conftest import memory_folders, sh, spaces


def fix(repo: Path, agent: object, **settings: object):
    request = FixRequest(cwd=repo, progress=False)
    return asyncio.run(run_fix(request, Settings(**settings), agent=agent))  # type: ignore[arg-type]


class Hook:
    """Autofix, after running ``before(task)`` (in the event loop's thread)."""

    name = "hook"

    def __init__(self, before) -> None:
        self.before = before

    async def fix(self, task: AgentTask) -> AgentOutcome:
        self.before(task)
        return await AutofixAgent().fix(task)


def stomper(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "stomper", "fix", "--repo", str(repo), "--no-progress", *args]
    return subprocess.run(argv, capture_output=True, check=False)


def slow_run(repo: Path) -> subprocess.Popen[bytes]:
    """``stomper fix`` with an agent that takes 30 s a unit, in a child process."""
    argv = [sys.executable, "-m", "stomper", "fix", "--repo", str(repo), "--no-progress"]
    return subprocess.Popen(
        [*argv, "--agent", "stomper.testing.agents:delayed"],
        env={**os.environ, "STOMPER_TEST_AGENT_DELAY": "30"},
        stderr=subprocess.DEVNULL,
    )


def wait_until(condition, what: str) -> None:
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_second_run_is_refused_and_a_dead_lock_is_taken_over(make, tmp_path) -> None:
    repo = make({f"m{i}.py": module(["F401"]) for i in range(8)})
    first = slow_run(repo)
    locks = repo / ".git" / "stomper" / "locks"
    wait_until(lambda: locks.exists() and any(locks.iterdir()), "the first run's lock")
    run_id = json.loads(next(locks.iterdir()).read_text())["run_id"]
    second = stomper(repo)
    assert second.returncode == 2
    assert run_id.encode() in second.stderr and b"--branch" in second.stderr
    # With --branch a second run lands elsewhere, beside the first.
    beside = stomper(repo, "--branch", "beside")
    assert beside.returncode == 0, beside.stderr.decode()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    # The lock of the killed run is stale: the next run takes it over.
    third = stomper(repo)
    assert third.returncode == 0, third.stderr.decode()
    assert sh(repo, "status", "--porcelain") == ""


def test_clean_after_sigkill_removes_what_the_run_left_and_nothing_else(make) -> None:
    repo = make({f"m{i}.py": module(["F401"]) for i in range(6)})
    sh(repo, "branch", "keep-me")
    (repo / "untracked.txt").write_text("mine\n")
    child = slow_run(repo)
    wait_until(lambda: len(spaces(repo)) >= 4, "four units in flight")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert spaces(repo)
    (run_id,) = (path.name for path in (repo / ".git" / "stomper" / "worktrees").iterdir())
    assert main(["clean", "--repo", str(repo)]) == 0
    assert memory_folders(run_id) == []
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not any((repo / ".git" / "stomper" / "worktrees").iterdir())
    assert not any((repo / ".git" / "stomper" / "locks").iterdir())
    assert sh(repo, "branch", "--list").split() == ["keep-me", "*", "main"]
    assert (repo / "untracked.txt").read_text() == "mine\n"
    assert len(list((repo / ".git" / "stomper" / "runs").iterdir())) == 1


@pytest.mark.skipif(not MEMORY.is_dir(), reason="no memory file system at /dev/shm")
def test_the_spaces_of_a_killed_run_whose_repository_is_gone_are_removed_by_any_clean(
    make,
) -> None:
    gone = make({f"m{i}.py": module(["F401"]) for i in range(6)})
    child = slow_run(gone)
    wait_until(lambda: len(spaces(gone)) >= 2, "two units in flight")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    (run_id,) = (path.name for path in (gone / ".git" / "stomper" / "worktrees").iterdir())
    assert memory_folders(run_id)
    shutil.rmtree(gone)
    other = make({"a.py": module(["F401"])})
    assert main(["clean", "--repo", str(other)]) == 0
    assert memory_folders(run_id) == []


def test_target_moved_by_the_user_during_the_run(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"]), "notes.md": "v1\n"})

    def user_commits(task: AgentTask) -> None:
        if task.unit.path == "a.py":
            (repo / "notes.md").write_text("v2\n")
            commit_all(repo, "the user's own commit")

    report = fix(repo, Hook(user_commits), max_parallel_files=1)
    assert all(result.commit for result in report.results)
    log = sh(repo, "log", "--format=%s", "HEAD").splitlines()
    assert "the user's own commit" in log
    assert (repo / "notes.md").read_text() == "v2\n"
    assert sh(repo, "show", "HEAD:notes.md") == "v2\n"
    assert sh(repo, "status", "--porcelain") == ""


def test_file_changed_on_target_during_the_run_is_not_overwritten(make) -> None:
    """The user's commit of the file makes it theirs: skipped, and no reason for exit 1."""
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"])})

    def user_fixes_it(task: AgentTask) -> None:
        if task.unit.path == "a.py":
            (repo / "a.py").write_text("X = 1\n")
            commit_all(repo, "the user's fix")

    report = fix(repo, Hook(user_fixes_it), max_parallel_files=1)
    ours, theirs = sorted(report.results, key=lambda result: result.path != "b.py")
    assert theirs.status == "skipped" and theirs.commit is None
    assert "a.py was changed by a commit on main during the run" in (theirs.reason or "")
    assert ours.status == "fixed" and ours.commit is not None
    assert report.exit_code() == 0
    assert report.totals()["diagnostics_remaining"] == 0
    assert (repo / "a.py").read_text() == "X = 1\n"
    assert sh(repo, "log", "-1", "--format=%s", "--", "a.py") == "the user's fix\n"


def test_index_lock_held_at_landing_fails_the_unit_after_a_bounded_wait(make, monkeypatch) -> None:
    import stomper.landing as landing

    monkeypatch.setattr(landing, "_INDEX_LOCK_WAIT", 0.3)
    repo = make({"a.py": module(["F401"])})
    head = sh(repo, "rev-parse", "HEAD").strip()
    lock = repo / ".git" / "index.lock"

    def hold_lock(task: AgentTask) -> None:
        lock.write_text("")

    (result,) = fix(repo, Hook(hold_lock)).results
    assert result.status == "failed"
    assert "index.lock" in (result.reason or "")
    assert sh(repo, "rev-parse", "HEAD").strip() == head
    lock.unlink()
    assert sh(repo, "status", "--porcelain") == ""


def test_worktree_deleted_by_hand_mid_run(make) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"])})

    def vandal(task: AgentTask) -> None:
        if task.unit.path == "a.py":
            shutil.rmtree(task.workspace)

    report = fix(repo, Hook(vandal))
    by_path = {result.path: result for result in report.results}
    assert by_path["a.py"].status == "failed"
    assert by_path["b.py"].commit
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert sh(repo, "status", "--porcelain") == ""


def killed_run(repo: Path) -> Path:
    """A run killed with its units in flight; the folder of its journal."""
    child = slow_run(repo)
    wait_until(lambda: len(spaces(repo)) >= 3, "three units in flight")
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    (run_dir,) = (repo / ".git" / "stomper" / "runs").iterdir()
    return run_dir


def assert_resume_refused(repo: Path, capsys, *needles: str) -> None:
    head = sh(repo, "rev-parse", "HEAD")
    capsys.readouterr()
    code = main(["resume", "--repo", str(repo), "--no-progress"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    for needle in needles:
        assert needle in err
    assert sh(repo, "rev-parse", "HEAD") == head
    assert sh(repo, "status", "--porcelain") == ""
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_corrupt_journal_is_a_clear_error_and_the_repository_is_untouched(make, capsys) -> None:
    repo = make({f"m{i}.py": module(["F401"]) for i in range(3)})
    run_dir = killed_run(repo)
    for part in run_dir.glob("checkpoints.sqlite*"):
        part.unlink()
    (run_dir / "checkpoints.sqlite").write_bytes(b"this is not a database" * 100)
    assert_resume_refused(repo, capsys, "journal", "cannot be used", "not a database")


def test_locked_journal_is_a_clear_error(make, capsys) -> None:
    import sqlite3

    repo = make({f"m{i}.py": module(["F401"]) for i in range(3)})
    run_dir = killed_run(repo)
    holder = sqlite3.connect(run_dir / "checkpoints.sqlite", timeout=0)
    try:
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        assert_resume_refused(repo, capsys, "journal", "locked")
    finally:
        holder.close()
    assert main(["resume", "--repo", str(repo), "--no-progress"]) == 0


@pytest.mark.skipif(
    sys.platform != "linux", reason="the file-size limit is how a full disk is made"
)
def test_disk_full_while_writing_the_journal(make) -> None:
    repo = make({f"m{i}.py": module(["F401"]) for i in range(3)})
    head = sh(repo, "rev-parse", "HEAD")
    # A process over its file-size limit gets EFBIG on write, as it would get ENOSPC on a
    # full disk; SIGXFSZ is ignored so the write fails instead of killing the process.
    script = (
        "import resource, signal, sys\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
        "from stomper.cli import main\n"
        f"sys.exit(main(['fix', '--repo', {str(repo)!r}, '--no-progress']))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, check=False)
    assert done.returncode in (1, 2), done.stderr.decode()
    assert b"Traceback" not in done.stderr
    assert b"stomper hit a bug" not in done.stderr
    assert sh(repo, "status", "--porcelain") == ""
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    # Whatever landed is whole: every commit touches its one file, and the rest resumes.
    for sha in sh(repo, "rev-list", f"{head.strip()}..HEAD").split():
        assert len(sh(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).split()) == 1


def test_a_worktree_left_locked_by_a_killed_add_is_cleared(make) -> None:
    # `git worktree add` locks a worktree while it populates it; killed half-way, it leaves
    # one that `git worktree prune` will not remove and that blocks the next add there.
    repo = make({"a.py": module(["F401"])})
    folder = repo / ".git" / "stomper" / "worktrees" / "20000101-000000-dead00"
    for name in ("0", "1"):
        sh(repo, "worktree", "add", "--detach", "--quiet", str(folder / name), "HEAD")
        sh(repo, "worktree", "lock", "--reason", "initializing", str(folder / name))
    shutil.rmtree(folder / "0")
    assert main(["clean", "--repo", str(repo)]) == 0
    assert sh(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert not folder.exists()
