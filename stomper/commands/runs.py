"""``stomper runs``: the runs of this repository, newest first."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.table import Table

from stomper import console
from stomper.errors import RepositoryError
from stomper.journal import Journal, StateDir, live_runs
from stomper.repository import open_repository


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


def summarize(state: StateDir) -> list[RunSummary]:
    """Every run, newest first; one whose record is damaged is listed as ``damaged``."""
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
                commits=sum(1 for result in results.values() if result.commit),
                age_s=time.time() - _started(meta.get("started")),
            )
        )
    return found


def _count(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _started(value: object) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return time.time()


async def runs(cwd: Path, *, json_output: bool) -> int:
    repo = await open_repository(cwd)
    found = summarize(repo.state)
    if json_output:
        sys.stdout.write(json.dumps([asdict(run) for run in found], indent=2) + "\n")
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
