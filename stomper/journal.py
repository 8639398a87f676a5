"""Where a run keeps its state: ``$(git rev-parse --git-common-dir)/stomper/``.

```
stomper/
  locks/<target>.lock       the live run of a target branch: run id, pid, host, start time
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

import contextlib
import json
import os
import secrets
import shutil
import socket
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stomper import redaction
from stomper.errors import RepositoryError, RunLockedError
from stomper.unit import Unit, UnitResult


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


@dataclass(frozen=True)
class StateDir:
    root: Path

    @classmethod
    def of(cls, git_common_dir: Path) -> StateDir:
        return cls(git_common_dir / "stomper")

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def worktrees(self, run_id: str) -> Path:
        return self.root / "worktrees" / run_id

    def lock_file(self, target_ref: str) -> Path:
        return self.root / "locks" / (target_ref.replace("/", "%") + ".lock")

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
            loaded: dict[str, Any] = json.loads(self.meta_file.read_text())
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"the run journal {self.meta_file} is unreadable: {exc}") from exc
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


def _process_start(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, so a reused pid is told apart."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first); None off Linux."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()


def _alive(owner: dict[str, Any]) -> bool:
    if owner.get("host") != socket.gethostname():
        return True  # another machine's run on a shared disk: never take it over
    pid = int(owner.get("pid", -1))
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    fields = _stat_fields(pid)
    if fields is not None and fields[0] in ("Z", "X"):
        return False  # killed, and not yet reaped by its parent
    started = owner.get("started")
    return started is None or _process_start(pid) in (None, started)


@dataclass(frozen=True)
class LockOwner:
    run_id: str
    pid: int
    host: str
    started: int | None


def read_lock(path: Path) -> dict[str, Any] | None:
    try:
        loaded: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return loaded


def live_runs(state: StateDir) -> set[str]:
    """The ids of the runs whose lock is held by a live process."""
    live = set()
    for path in (state.root / "locks").glob("*.lock"):
        owner = read_lock(path)
        if owner is not None and _alive(owner):
            live.add(str(owner.get("run_id")))
    return live


@contextlib.contextmanager
def hold_lock(state: StateDir, target_ref: str, run_id: str) -> Iterator[None]:
    """Hold the target's lock for the run; a lock left by a dead process is taken over."""
    path = state.lock_file(target_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    pid = os.getpid()
    owner = LockOwner(run_id, pid, socket.gethostname(), _process_start(pid))
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read_lock(path)
            if held is not None and _alive(held):
                raise RunLockedError(
                    f"run {held.get('run_id')} (pid {held.get('pid')}) is already working on "
                    f"{target_ref}: wait for it, or use --branch to land elsewhere"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(owner), out)
        break
    else:
        raise RunLockedError(f"cannot take the lock {path}: remove it if no stomper is running")
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def stale_worktree_dirs(state: StateDir) -> list[Path]:
    """Worktree folders of runs that no live process owns."""
    live = live_runs(state)
    base = state.root / "worktrees"
    if not base.is_dir():
        return []
    return [path for path in base.iterdir() if path.name not in live]
