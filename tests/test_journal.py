"""The run lock: held by the kernel for a live process, whatever its file says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stomper.cli import main
from stomper.errors import RunLockedError
from stomper.journal import (
    StateDir,
    held_locks,
    hold_lock,
    live_runs,
    new_run_id,
    remove_stale_locks,
)
from stomper.testing.repos import module
from tests.conftest import sh

MAIN_LOCK = "refs%heads%main.lock"

# A process that holds a target's lock until its stdin closes, with a child of its own that
# outlives it: the lock must not pass to that child.
HOLDER = """
import asyncio, subprocess, sys
from pathlib import Path
from stomper.journal import StateDir, hold_lock

async def hold() -> None:
    async with hold_lock(StateDir(Path(sys.argv[1])), sys.argv[2], sys.argv[3]):
        subprocess.Popen(["sleep", "60"], start_new_session=True)
        print("held", flush=True)
        sys.stdin.read()

asyncio.run(hold())
"""


def state_of(repo: Path) -> StateDir:
    return StateDir.of(repo / ".git")


def write_lock(repo: Path, content: str, name: str = MAIN_LOCK) -> Path:
    lock = state_of(repo).root / "locks" / name
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(content)
    return lock


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[object]:
    """Start a process holding a lock: ``holder(repo, target, run_id)``; killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(repo: Path, target: str, run_id: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(state_of(repo).root), target, run_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        started.append(child)
        assert child.stdout is not None
        assert child.stdout.readline() == b"held\n"
        return child

    yield start
    for child in started:
        # The whole group: the holder and the child it left behind.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        for pipe in (child.stdin, child.stdout):
            assert pipe is not None
            pipe.close()


def fix(repo: Path, *args: str) -> int:
    return main(["fix", "--repo", str(repo), "--no-progress", *args])


@pytest.mark.parametrize(
    "content",
    [
        '{"run_id": "20260101-000000-abcdef", "pid": "abc", "host": "HOST"}',
        "[1, 2, 3]",
        '{"run_id": "20260101-000000-abcdef", "host": "HOST"}',
        "",
        "not json at all",
    ],
    ids=["pid-abc", "a-list", "no-pid", "empty", "garbage"],
)
def test_a_lock_file_nobody_holds_is_taken_over_whatever_it_says(make, capsys, content) -> None:
    repo = make({"a.py": module(["F401"])})
    write_lock(repo, content.replace("HOST", os.uname().nodename))
    assert main(["runs", "--repo", str(repo)]) == 0
    assert fix(repo) == 0, capsys.readouterr().err
    assert "import os" not in (repo / "a.py").read_text()
    assert not any((state_of(repo).root / "locks").iterdir())


@pytest.mark.parametrize("content", ['{"pid": "abc"}', "[]", '{"run_id": "r"}'])
def test_clean_removes_a_lock_file_nobody_holds(make, capsys, content) -> None:
    repo = make({"a.py": module(["F401"])})
    lock = write_lock(repo, content)
    assert main(["clean", "--repo", str(repo)]) == 0
    assert not lock.exists()
    assert f"removed stale lock {MAIN_LOCK}" in capsys.readouterr().err


def test_a_lock_naming_a_live_pid_that_does_not_hold_it_is_taken_over(make) -> None:
    # This very process is alive and on this host, but holds no lock: no pid is trusted.
    repo = make({"a.py": module(["F401"])})
    owner = {"run_id": "20260101-000000-abcdef", "pid": os.getpid(), "host": os.uname().nodename}
    write_lock(repo, json.dumps(owner))
    assert fix(repo) == 0
    assert "import os" not in (repo / "a.py").read_text()


def test_a_held_lock_refuses_a_second_run_and_dies_with_its_holder(make, capsys, holder) -> None:
    repo = make({"a.py": module(["F401"]), "b.py": module(["F401"])})
    run_id = "20260101-000000-abcdef"
    child = holder(repo, "refs/heads/main", run_id)
    assert live_runs(state_of(repo)) == {run_id}
    code = fix(repo)
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2
    assert f"run {run_id} (pid {child.pid}" in err and "--branch" in err
    # Beside it, on a branch of its own.
    assert fix(repo, "--branch", "beside") == 0
    assert main(["clean", "--repo", str(repo)]) == 0
    assert (state_of(repo).root / "locks" / MAIN_LOCK).exists()
    # The holder dies; the child it started lives on, and does not hold the lock.
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert live_runs(state_of(repo)) == set()
    assert fix(repo) == 0
    assert sh(repo, "status", "--porcelain") == ""


def test_runs_tells_a_live_run_from_a_dead_one_by_its_lock(make, capsys, holder) -> None:
    repo = make({"a.py": module(["F401"])})
    for run_id in ("20260101-000000-aaaaaa", "20260101-000000-bbbbbb"):
        run_dir = state_of(repo).run_dir(run_id)
        run_dir.mkdir(parents=True)
        meta = {"run_id": run_id, "command": "fix", "status": "running", "target": "x"}
        (run_dir / "run.json").write_text(json.dumps(meta))
    holder(repo, "refs/heads/live", "20260101-000000-aaaaaa")
    write_lock(repo, '{"run_id": "20260101-000000-bbbbbb", "pid": 1}', "refs%heads%dead.lock")
    assert main(["runs", "--repo", str(repo), "--json"]) == 0
    listed = {run["run_id"]: run["status"] for run in json.loads(capsys.readouterr().out)}
    assert listed == {"20260101-000000-aaaaaa": "running", "20260101-000000-bbbbbb": "crashed"}


def test_a_lock_is_held_against_the_same_process_too(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "stomper")

    async def twice() -> None:
        async with hold_lock(state, "refs/heads/main", "one"):
            assert {owner.run_id for owner in held_locks(state).values()} == {"one"}
            assert remove_stale_locks(state) == []
            with pytest.raises(RunLockedError, match="run one"):
                async with hold_lock(state, "refs/heads/main", "two"):
                    pass
            async with hold_lock(state, "refs/heads/other", "three"):
                assert live_runs(state) == {"one", "three"}
        assert live_runs(state) == set()
        async with hold_lock(state, "refs/heads/main", "two"):
            assert live_runs(state) == {"two"}

    asyncio.run(twice())
    assert list((state.root / "locks").iterdir()) == []


def test_a_lock_that_is_a_link_is_refused_in_one_line(make, tmp_path, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    locks = state_of(repo).root / "locks"
    locks.mkdir(parents=True)
    (locks / MAIN_LOCK).symlink_to(tmp_path / "elsewhere")
    code = fix(repo)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "run lock" in err and MAIN_LOCK in err
    assert not (tmp_path / "elsewhere").exists()


def test_run_ids_sort_as_the_runs_started_also_within_one_second() -> None:
    ids = []
    for _ in range(20):
        ids.append(new_run_id())
        time.sleep(0.002)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
