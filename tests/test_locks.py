"""Path locks of ``stomper run``: held by the kernel, across processes, freed when a holder dies."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from stomper.cli import main
from stomper.tasks.locks import PathLocks

# A holder in a process of its own: it takes its locks, says so, and waits to be killed.
HOLDER = """
import sys, time
from pathlib import Path
from stomper.tasks.locks import PathLocks
folder, task, writes, reads = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
held = PathLocks(Path(folder), "run-of-" + task).try_take(
    task, [p for p in writes.split(",") if p], [p for p in reads.split(",") if p]
)
print("held" if held is not None else "refused", flush=True)
time.sleep(600)
"""


def holder(folder: Path, task: str, writes: str = "", reads: str = "") -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), task, writes, reads],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def kill(child: subprocess.Popen[str]) -> None:
    child.send_signal(signal.SIGKILL)
    child.wait()
    if child.stdout is not None:
        child.stdout.close()


def test_a_file_another_process_writes_is_neither_written_nor_read_until_it_dies(
    tmp_path,
) -> None:
    folder = tmp_path / "path-locks"
    child = holder(folder, "other", writes="src/a.py")
    mine = PathLocks(folder, "run-1")
    try:
        assert mine.try_take("mine", ["src/a.py"], []) is None
        assert mine.try_take("mine", ["src/b.py"], ["src/a.py"]) is None
        # All or none: b was not left locked by the refused try.
        other = mine.try_take("other-task", ["src/b.py"], [])
        assert other is not None
        other.release()
    finally:
        kill(child)
    # The kernel let the dead holder's lock go: no timeout, no heartbeat.
    held = mine.try_take("mine", ["src/a.py"], [])
    assert held is not None
    held.release()


def test_readers_share_a_file_and_a_writer_waits_for_them_all(tmp_path) -> None:
    folder = tmp_path / "path-locks"
    first = holder(folder, "reader-1", reads="src/config.py")
    second = holder(folder, "reader-2", reads="src/config.py")
    mine = PathLocks(folder, "run-1")
    try:
        reading = mine.try_take("reader-3", ["src/other.py"], ["src/config.py"])
        assert reading is not None
        reading.release()
        assert mine.try_take("writer", ["src/config.py"], []) is None
        kill(first)
        assert mine.try_take("writer", ["src/config.py"], []) is None
    finally:
        kill(second)
        if first.poll() is None:
            kill(first)
    writing = mine.try_take("writer", ["src/config.py"], [])
    assert writing is not None
    writing.release()


def test_two_tasks_of_one_process_exclude_each_other_too(tmp_path) -> None:
    locks = PathLocks(tmp_path / "path-locks", "run-1")
    first = locks.try_take("a", ["x.py"], [])
    assert first is not None
    assert locks.try_take("b", ["x.py"], []) is None
    first.release()
    second = locks.try_take("b", ["x.py"], [])
    assert second is not None
    second.release()


def test_stomper_runs_locks_shows_the_holders_and_forgets_the_dead(make, capsys) -> None:
    repo = make({"a.py": "A = 1\n"})
    folder = repo / ".git" / "stomper" / "path-locks"
    writer = holder(folder, "retry-client", writes="src/client.py", reads="src/config.py")
    dead = holder(folder, "gone", writes="src/dead.py")
    kill(dead)
    try:
        assert main(["runs", "--locks", "--json", "--repo", str(repo)]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(r["path"], r["mode"], r["task"]) for r in listed] == [
            ("src/client.py", "write", "retry-client"),
            ("src/config.py", "read", "retry-client"),
        ]
        assert {r["pid"] for r in listed} == {writer.pid}
        assert all(r["run"] == "run-of-retry-client" and r["since"] <= time.time() for r in listed)
        # The record the dead holder left is gone, not just hidden.
        assert len(list(folder.glob("*.json"))) == 2

        assert main(["runs", "--locks", "--repo", str(repo)]) == 0
        out = capsys.readouterr().out  # a table of data, on stdout as the runs are
        assert "src/client.py" in out and "retry-client" in out and str(writer.pid) in out
    finally:
        kill(writer)
    assert main(["runs", "--locks", "--repo", str(repo)]) == 0
    assert "no path is locked" in capsys.readouterr().err
    assert list(folder.glob("*.json")) == []


def test_holding_waits_until_every_lock_is_free(tmp_path) -> None:
    folder = tmp_path / "path-locks"
    child = holder(folder, "other", writes="a.py")

    async def scenario() -> bool:
        asyncio.get_running_loop().call_later(0.3, kill, child)
        async with PathLocks(folder, "run-1").holding("mine", ["a.py", "b.py"], []):
            return child.poll() is not None  # held only once the other holder was gone

    assert asyncio.run(scenario())
