"""``stomper runs``: the runs of this repository, newest first."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from stomper import console, git
from stomper.errors import RepositoryError
from stomper.journal import Journal, live_runs
from stomper.recovery import recover
from stomper.repository import Repository, open_repository
from stomper.tasks.locks import records


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    command: str
    status: str
    target: str
    units: int
    done: int
    commits: int
    age_s: float
    dry_run: bool = False


async def summarize(repo: Repository) -> list[RunSummary]:
    """Every run, newest first; one whose record is damaged is listed as ``damaged``."""
    state = repo.state
    live = live_runs(state)
    found = []
    for meta_file in sorted((state.root / "runs").glob("*/run.json"), reverse=True):
        journal = Journal(meta_file.parent)
        run_id = journal.dir.name
        try:
            meta = journal.meta()
        except RepositoryError:
            meta = {"status": "damaged"}
        results = journal.results()
        status = str(meta.get("status"))
        if status == "running" and run_id not in live:
            status = "crashed"
        found.append(
            RunSummary(
                run_id=run_id,
                command=str(meta.get("command")),
                status=status,
                target=str(meta.get("target")),
                units=_count(meta.get("units")),
                done=len(results),
                commits=await _landed(repo, run_id, meta),
                age_s=time.time() - _started(meta.get("started")),
                dry_run=meta.get("dry_run") is True,
            )
        )
    return found


async def _landed(repo: Repository, run_id: str, meta: dict[str, Any]) -> int:
    """The commits of the run on its target, counted from their trailers: what the branch
    holds, whatever the journal had time to record."""
    target, base = meta.get("target"), meta.get("base")
    if not isinstance(target, str) or not isinstance(base, str) or meta.get("dry_run"):
        return 0
    tip = await git.ref_target(repo.root, target)
    if tip is None:
        return 0
    commits = await git.stomper_commits(repo.root, tip, base)
    return sum(1 for commit in commits if commit.run == run_id)


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _started(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return time.time()


async def runs(cwd: Path, *, json_output: bool, locks: bool = False) -> int:
    repo = await open_repository(cwd)
    await recover(repo)
    if locks:
        return _show_locks(repo, json_output=json_output)
    found = await summarize(repo)
    if json_output:
        console.print_document([asdict(run) for run in found])
        return 0
    if not found:
        console.info("no runs in this repository yet")
        return 0
    table = Table(show_edge=False)
    # The id is what `stomper resume` and `stomper show` take: never cut, never folded.
    table.add_column("run", no_wrap=True, min_width=max(len(run.run_id) for run in found))
    for column in ("command", "status", "target", "units", "commits", "age"):
        table.add_column(column, overflow="fold", no_wrap=column == "status")
    for run in found:
        table.add_row(
            run.run_id,
            run.command,
            _status(run),
            run.target.removeprefix("refs/heads/"),
            f"{run.done}/{run.units}",
            "-" if run.dry_run else str(run.commits),
            _age(run.age_s),
        )
    console.print_table(table)
    if any(run.status in ("interrupted", "crashed") for run in found):
        console.info("resume the newest unfinished run with `stomper resume`")
    return 0


def _show_locks(repo: Repository, *, json_output: bool) -> int:
    """The paths the tasks of ``stomper run`` hold now, and who holds them."""
    held = records(repo.state.path_locks)
    if json_output:
        console.print_document([record.to_json() for record in held])
        return 0
    if not held:
        console.info("no path is locked: no task of `stomper run` is working now")
        return 0
    table = Table(show_edge=False)
    for column in ("path", "lock", "run", "task", "pid", "host", "held for"):
        table.add_column(column, overflow="fold")
    now = time.time()
    for record in held:
        table.add_row(
            record.path,
            record.mode,
            record.run,
            record.task,
            str(record.pid),
            record.host,
            _age(now - record.since),
        )
    console.print_table(table)
    return 0


def _status(run: RunSummary) -> str:
    """A dry run lands nothing by design: it says so rather than "completed, 0 commits"."""
    if not run.dry_run:
        return run.status
    return "dry run" if run.status == "completed" else f"dry run, {run.status}"


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
