"""Where a run keeps its state: ``$(git rev-parse --git-common-dir)/stomper/``.

```
stomper/
  locks/<target>.lock       held (flock) by the live run of a target branch; names it
  runs/<run id>/run.json    what the run is: base, target, options, status
  runs/<run id>/units.jsonl one line per finished unit
  runs/<run id>/events.jsonl the operations log
  runs/<run id>/checkpoints.sqlite   LangGraph's checkpoints, unless kept in PostgreSQL
  runs/<run id>/index       the private index landing builds trees in
  worktrees/<run id>/       the units' spaces: s<n> scratch folders, w<n> pooled worktrees
```
Nothing here is inside the working tree, so no tool ever lints it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import re
import secrets
import shutil
import socket
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stomper import redaction
from stomper.errors import ConfigError, RepositoryError, RunLockedError
from stomper.unit import Unit, UnitResult


def new_run_id() -> str:
    """``YYYYMMDD-HHMMSS-`` and six hex digits: the millisecond, then three at random, so
    that ids sort as the runs started (the newest run is the greatest id)."""
    now = datetime.now(UTC)
    return (
        now.strftime("%Y%m%d-%H%M%S-") + f"{now.microsecond // 1000:03x}" + secrets.token_hex(2)[:3]
    )


_RUN_ID = re.compile(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}")


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def of(cls, git_common_dir: Path) -> StateDir:
        return cls(git_common_dir / "stomper")

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def run(self, run_id: str) -> Journal:
        """The journal of the run ``run_id``; a :class:`ConfigError` when there is none
        (an id is never taken as a path: ``../x`` names no run)."""
        journal = Journal(self.run_dir(run_id)) if _RUN_ID.fullmatch(run_id) else None
        if journal is None or not journal.exists():
            raise ConfigError(f"no run {run_id!r} in this repository: `stomper runs` lists them")
        return journal

    def runs_newest_first(self) -> list[Journal]:
        """The journal of every run, the newest first (run ids sort as runs started)."""
        found = sorted((self.root / "runs").glob("*/run.json"), reverse=True)
        return [Journal(meta.parent) for meta in found]

    def worktrees(self, run_id: str) -> Path:
        return self.root / "worktrees" / run_id

    def lock_file(self, target_ref: str) -> Path:
        return self.root / "locks" / (target_ref.replace("/", "%") + ".lock")

    @property
    def path_locks(self) -> Path:
        """Where the tasks of ``stomper run`` lock the paths they work on."""
        return self.root / "path-locks"

    def cache_dir(self, tool: str) -> Path:
        return self.root / "cache" / tool


class Journal:
    """The durable record of one run."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir
        self.meta_file = run_dir / "run.json"
        self.units_file = run_dir / "units.jsonl"
        self.events_file = run_dir / "events.jsonl"
        self.plan_file = run_dir / "plan.json"
        self.checkpoints = run_dir / "checkpoints.sqlite"
        self.index_file = run_dir / "index"

    def exists(self) -> bool:
        return self.meta_file.is_file()

    def create(self, meta: dict[str, Any]) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=False)
            self._write_meta(meta)
        except OSError as exc:
            raise RepositoryError(f"cannot write the run journal in {self.dir}: {exc}") from exc

    def meta(self) -> dict[str, Any]:
        try:
            loaded = json.loads(self.meta_file.read_text())
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"the run journal {self.meta_file} is unreadable: {exc}") from exc
        if not isinstance(loaded, dict):
            raise RepositoryError(f"the run journal {self.meta_file} holds no JSON object")
        return loaded

    def write_plan(self, units: Sequence[Unit], skipped: Sequence[UnitResult]) -> None:
        plan = {
            "units": [unit.to_record() for unit in units],
            "skipped": [result.to_record() for result in skipped],
        }
        _write_atomically(self.plan_file, _json(plan))

    def read_plan(self) -> tuple[list[Unit], list[UnitResult]]:
        try:
            plan = json.loads(self.plan_file.read_text())
            return (
                [Unit.from_record(record) for record in plan["units"]],
                [UnitResult.from_record(record) for record in plan["skipped"]],
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RepositoryError(f"the run's plan {self.plan_file} is unreadable: {exc}") from exc

    def results(self) -> dict[str, UnitResult]:
        """The finished units by path; a line cut short by a crash is not a result."""
        found: dict[str, UnitResult] = {}
        if not self.units_file.exists():
            return found
        for line in self.units_file.read_text(encoding="utf-8").splitlines():
            try:
                result = UnitResult.from_record(json.loads(line))
            except (ValueError, KeyError, TypeError):
                continue
            found[result.path] = result
        return found

    def update(self, **changes: Any) -> None:
        meta = self.meta()
        meta.update(changes)
        self._write_meta(meta)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        _write_atomically(self.meta_file, _json(meta, indent=2) + "\n")

    def record(self, result: UnitResult) -> None:
        """Append a finished unit before the unit counts as finished.

        Written through to the operating system, which keeps it when the process is killed;
        not synced to the disk, which would cost milliseconds a unit.
        """
        with self.units_file.open("a", encoding="utf-8") as out:
            out.write(_json(result.to_record()) + "\n")


def _json(record: Any, *, indent: int | None = None) -> str:
    """A record as the journal writes it: with the run's secrets redacted."""
    return json.dumps(redaction.active().value(record), indent=indent)


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_suffix(".tmp")
    with partial.open("w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, path)


# Locks -----------------------------------------------------------------------------------
# A run holds its target's lock file with flock(2): the kernel lets go of it when the holding
# process ends, however it ends, so a lock never outlives its run and no pid is guessed at.
# The file's JSON (run id, pid, host) only tells messages, `runs` and `clean` whose it is.
# A lock file appears, or replaces a dead run's, already locked and written in full: it is
# made beside its place, then linked or renamed there.

# A probe of `stomper runs` or `clean` holds a lock for microseconds: try again a little.
_TAKE_TRIES = 20
_TAKE_WAIT = 0.01


@dataclass(frozen=True)
class LockOwner:
    """What a lock file says of its run; what it lacks or garbles is None."""

    run_id: str | None
    pid: int | None
    host: str | None

    def describe(self) -> str:
        if self.run_id is None:
            return "another stomper run"
        where = [f"pid {self.pid}"] if self.pid is not None else []
        where += [f"on {self.host}"] if self.host is not None else []
        return f"run {self.run_id}" + (f" ({' '.join(where)})" if where else "")


def read_lock(path: Path) -> LockOwner:
    try:
        loaded = json.loads(path.read_bytes())
    except (OSError, ValueError):
        loaded = None
    fields = loaded if isinstance(loaded, dict) else {}
    run_id, pid, host = fields.get("run_id"), fields.get("pid"), fields.get("host")
    return LockOwner(
        run_id if isinstance(run_id, str) and run_id else None,
        pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        host if isinstance(host, str) and host else None,
    )


def held_locks(state: StateDir) -> dict[Path, LockOwner]:
    """The lock files a live process holds, with what each says of its run."""
    return {
        path: read_lock(path)
        for path in sorted((state.root / "locks").glob("*.lock"))
        if _held(path)
    }


def live_runs(state: StateDir) -> set[str]:
    """The ids of the runs whose lock a live process holds."""
    return {owner.run_id for owner in held_locks(state).values() if owner.run_id is not None}


@contextlib.asynccontextmanager
async def hold_lock(state: StateDir, target_ref: str, run_id: str) -> AsyncIterator[None]:
    """Hold the target's lock for the run; refused while a live process holds it."""
    path = state.lock_file(target_ref)
    owner = {"run_id": run_id, "pid": os.getpid(), "host": socket.gethostname()}
    fd = await _take(path, json.dumps(owner).encode(), target_ref)
    try:
        yield
    finally:
        # Removed while still held: whoever opened it meanwhile sees it is gone, and retries.
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)


def remove_stale_locks(state: StateDir) -> list[str]:
    """Remove the files of the locks folder that no live process holds; their names."""
    removed = []
    for path in sorted((state.root / "locks").glob("*")):
        fd = _open(path, os.O_RDONLY)
        if fd is None:
            continue
        try:
            if _try_lock(fd, fcntl.LOCK_EX) and _same_file(fd, path):
                path.unlink()
                removed.append(path.name)
        finally:
            os.close(fd)
    return removed


async def _take(path: Path, owner: bytes, target_ref: str) -> int:
    """The descriptor that holds the lock at ``path``, which says ``owner``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot make the folder of run locks {path.parent}: {exc}") from exc
    for _ in range(_TAKE_TRIES):
        mine, made = _locked_copy(path, owner)
        try:
            if _placed(made, path):
                return mine
        except BaseException:
            os.close(mine)
            raise
        finally:
            made.unlink(missing_ok=True)
        os.close(mine)
        await asyncio.sleep(_TAKE_WAIT)
    raise RunLockedError(
        f"{read_lock(path).describe()} is already working on {target_ref}: wait for it, "
        "or use --branch to land elsewhere"
    )


def _locked_copy(path: Path, owner: bytes) -> tuple[int, Path]:
    """A new file beside ``path`` holding ``owner``, locked: open and where it is."""
    made = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(made, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RepositoryError(f"cannot write a run lock in {path.parent}: {exc}") from exc
    fcntl.flock(fd, fcntl.LOCK_EX)  # a file nobody else knows of yet: taken at once
    os.write(fd, owner)
    return fd, made


def _placed(made: Path, path: Path) -> bool:
    """Put the locked ``made`` at ``path``, unless a live process holds the lock there."""
    try:
        os.link(made, path)
        return True
    except FileExistsError:
        pass
    except OSError as exc:
        raise RepositoryError(f"cannot place the run lock {path}: {exc}") from exc
    theirs = _open(path, os.O_RDONLY)
    if theirs is None:
        return False  # removed meanwhile: try again
    try:
        if not _try_lock(theirs, fcntl.LOCK_EX) or not _same_file(theirs, path):
            return False
        # A dead run's lock (or no lock at all, whatever it says): ours takes its place.
        os.replace(made, path)
        return True
    finally:
        os.close(theirs)


def _held(path: Path) -> bool:
    fd = _open(path, os.O_RDONLY)
    if fd is None:
        return False
    try:
        return not _try_lock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)  # which lets go of the probe's own lock


def _open(path: Path, flags: int) -> int | None:
    """``path`` opened without following a link; None when it is gone."""
    try:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RepositoryError(f"cannot read the run lock {path}: {exc}: remove it") from exc


def _try_lock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (not removed, not replaced)."""
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def stale_worktree_dirs(state: StateDir) -> list[Path]:
    """Worktree folders of runs that no live process owns."""
    live = live_runs(state)
    base = state.root / "worktrees"
    if not base.is_dir():
        return []
    return [path for path in base.iterdir() if path.name not in live]
