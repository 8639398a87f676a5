"""``stomper runs``: the runs of this repository, newest first."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from stomper import console, git
from stomper.journal import Journal, live_runs
from stomper.recovery import recover
from stomper.repository import Repository, open_repository


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


async def summarize(repo: Repository) -> list[RunSummary]:
    state = repo.state
    live = live_runs(state)
    found = []
    for meta_file in sorted((state.root / "runs").glob("*/run.json"), reverse=True):
        journal = Journal(meta_file.parent)
        meta = journal.meta()
        results = journal.results()
        status = str(meta.get("status"))
        if status == "running" and meta["run_id"] not in live:
            status = "crashed"
        found.append(
            RunSummary(
                run_id=str(meta["run_id"]),
                command=str(meta.get("command")),
                status=status,
                target=str(meta.get("target")),
                units=int(meta.get("units", 0)),
                done=len(results),
                commits=await _landed(repo, meta),
                age_s=time.time() - float(meta.get("started", time.time())),
            )
        )
    return found


async def _landed(repo: Repository, meta: dict[str, Any]) -> int:
    """The commits of the run on its target, counted from their trailers: what the branch
    holds, whatever the journal had time to record."""
    tip = await git.ref_target(repo.root, str(meta.get("target")))
    if tip is None or meta.get("dry_run"):
        return 0
    commits = await git.stomper_commits(repo.root, tip, str(meta.get("base")))
    return sum(1 for commit in commits if commit.run == meta["run_id"])


async def runs(cwd: Path, *, json_output: bool) -> int:
    repo = await open_repository(cwd)
    await recover(repo)
    found = await summarize(repo)
    if json_output:
        console.print_document([asdict(run) for run in found])
        return 0
    if not found:
        console.info("no runs in this repository yet")
        return 0
    table = Table(show_edge=False)
    for column in ("run", "command", "status", "target", "units done", "commits", "age"):
        table.add_column(column)
    for run in found:
        table.add_row(
            run.run_id,
            run.command,
            run.status,
            run.target.removeprefix("refs/heads/"),
            f"{run.done}/{run.units}",
            str(run.commits),
            _age(run.age_s),
        )
    console.err.print(table)
    if any(run.status in ("interrupted", "crashed") for run in found):
        console.info("resume the newest unfinished run with `stomper resume`")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"
