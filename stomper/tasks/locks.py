"""Locks on paths, held by the kernel, so that no two tasks ever work on one file at once:
not two of one run, nor of two ``stomper run`` processes on one repository.

Each path has a lock file of its own (named by a digest of the path) in
``$(git-common-dir)/stomper/path-locks/``, which a task holds with ``flock``: shared to read
the path, exclusive to write it. A task takes all of its locks at once or none, so no two
tasks ever wait for each other. The kernel lets a lock go when its holder's process ends,
however it ends: a dead holder never blocks anyone, and no lock goes stale, so none needs
a heartbeat or a timeout. The lock files themselves stay (removing one that another process
is about to lock would let two hold "the same" lock).

Beside each lock it holds, a holder writes a record (the path, read or write, its run, task,
pid and host, and since when): what ``stomper runs --locks`` shows. A record whose lock no
process holds was left by a holder that died, and is removed when the records are read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Collection, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

_POLL = 0.05
READ, WRITE = "read", "write"


@dataclass(frozen=True)
class LockRecord:
    """Who holds the lock of one path, and how."""

    path: str
    mode: str
    """``read`` (shared with other readers) or ``write`` (exclusive)."""
    run: str
    task: str
    pid: int
    host: str
    since: float

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class Held:
    """The locks one task holds; :meth:`release` lets them all go."""

    def __init__(self, taken: list[tuple[int, Path]]) -> None:
        self._taken = taken

    def release(self) -> None:
        taken, self._taken = self._taken, []
        for fd, record in taken:
            record.unlink(missing_ok=True)
            os.close(fd)  # closing the file lets its flock go


class PathLocks:
    """The path locks of a repository, taken in the name of run ``run_id``."""

    def __init__(self, folder: Path, run_id: str) -> None:
        self.folder = folder
        self.run_id = run_id

    def try_take(self, task: str, writes: Collection[str], reads: Collection[str]) -> Held | None:
        """Every lock the task needs (exclusive for ``writes``, shared for the other
        ``reads``), or none of them and None when another holder has one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        wanted = {path: WRITE for path in writes} | {
            path: READ for path in reads if path not in writes
        }
        taken: list[tuple[int, Path]] = []
        try:
            for path, mode in sorted(wanted.items()):
                fd = os.open(self.folder / f"{_digest(path)}.lock", os.O_RDWR | os.O_CREAT, 0o666)
                try:
                    fcntl.flock(
                        fd, (fcntl.LOCK_EX if mode == WRITE else fcntl.LOCK_SH) | fcntl.LOCK_NB
                    )
                except BlockingIOError:
                    os.close(fd)
                    Held(taken).release()
                    return None
                taken.append((fd, self._record(path, mode, task)))
        except BaseException:
            Held(taken).release()
            raise
        return Held(taken)

    @contextlib.asynccontextmanager
    async def holding(
        self, task: str, writes: Collection[str], reads: Collection[str]
    ) -> AsyncIterator[None]:
        """Hold the task's locks for the block, waiting until they are all free."""
        held = self.try_take(task, writes, reads)
        while held is None:
            await asyncio.sleep(_POLL)
            held = self.try_take(task, writes, reads)
        try:
            yield
        finally:
            held.release()

    def _record(self, path: str, mode: str, task: str) -> Path:
        record = LockRecord(path, mode, self.run_id, task, os.getpid(), _HOST, time.time())
        name = self.folder / f"{_digest(path)}.{os.getpid()}.{os.urandom(4).hex()}.json"
        name.write_text(json.dumps(record.to_json()), encoding="utf-8")
        return name


def records(folder: Path) -> list[LockRecord]:
    """The locks held now, by path; records that dead holders left are removed."""
    found = []
    for digest, named in _records_by_lock(folder):
        if not _held(folder / f"{digest}.lock"):
            for name, _record in named:
                name.unlink(missing_ok=True)
            continue
        for name, record in named:
            if record.host == _HOST and not _alive(record.pid):
                name.unlink(missing_ok=True)
            else:
                found.append(record)
    return sorted(found, key=lambda record: (record.path, record.since))


def _records_by_lock(folder: Path) -> Iterator[tuple[str, list[tuple[Path, LockRecord]]]]:
    by_digest: dict[str, list[tuple[Path, LockRecord]]] = {}
    for name in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = LockRecord(**json.loads(name.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            continue  # being written, or not one of ours
        by_digest.setdefault(name.name.split(".", 1)[0], []).append((name, record))
    yield from by_digest.items()


def _held(lock: Path) -> bool:
    """Whether some process holds ``lock`` (shared or not)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _digest(path: str) -> str:
    return hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()[:32]


_HOST = socket.gethostname()
