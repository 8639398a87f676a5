"""``stomper show``: a past run's results again, read from its journal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stomper import console
from stomper.errors import ConfigError
from stomper.journal import Journal, StateDir, live_runs
from stomper.report import Metrics, RunReport, ordered
from stomper.repository import open_repository
from stomper.run_report import RecordedRun, markdown
from stomper.timeline import read_log


async def show(cwd: Path, run_id: str | None, *, json_output: bool) -> int:
    """Print the run's units and totals as the run itself printed them (its JSON document
    with ``json_output``). Nothing is worked, landed or repaired."""
    repo = await open_repository(cwd)
    state = repo.state
    journal = find_recorded(state, run_id)
    if journal.meta().get("command") in ("review", "run"):
        # Their units are files reviewed or tasks, not diagnostics: as their report has them.
        recorded = RecordedRun.read(journal)
        if json_output:
            console.print_document(recorded.to_json())
        console.info(markdown(recorded).rstrip(), markup=False)
        return 0
    report, unfinished = recorded_report(journal, running=journal.dir.name in live_runs(state))
    if json_output:
        console.print_document(report.to_json())
    # Every unit, however many: showing them is what the command is for.
    console.print_summary(report, per_unit_up_to=len(report.results))
    if unfinished and report.status == "running":
        console.info(f"the run is still running: {unfinished} of its units are not done yet")
    elif unfinished:
        console.info(
            f"{unfinished} of the run's units did not finish: "
            f"`stomper resume {report.run_id}` works them"
        )
    return 0


def find_recorded(state: StateDir, run_id: str | None) -> Journal:
    """The run named, or the newest one."""
    if run_id is not None:
        return state.run(run_id)
    runs = state.runs_newest_first()
    if not runs:
        raise ConfigError("no runs in this repository yet")
    return runs[0]


def recorded_report(journal: Journal, *, running: bool) -> tuple[RunReport, int]:
    """The run's report as its journal holds it, and how many of its units did not finish.

    The wall time runs from the run's start to its end (a pause before a resume included);
    the peak concurrency is the most units its events saw running at once.
    """
    meta = journal.meta()
    # A review lands nothing and is never resumed: its journal keeps no plan.
    units, skipped = journal.read_plan() if meta.get("command") != "review" else ([], [])
    results = journal.results()
    status = str(meta.get("status"))
    if status == "running" and not running:
        status = "crashed"
    settings = meta.get("settings")
    parallel = settings.get("max_parallel_files") if isinstance(settings, dict) else None
    done = [*results.values(), *(result for result in skipped if result.path not in results)]
    # A run that never finished has no end to measure its wall time to.
    finished = meta.get("finished")
    wall = _number(finished) - _number(meta.get("started")) if finished is not None else 0.0
    metrics = Metrics(
        wall_s=wall,
        peak_concurrency=_peak(journal),
        agent_s=sum(result.agent_s for result in done),
        landing_s=sum(result.landing_s for result in done),
        tokens_in=sum(result.tokens_in for result in done),
        tokens_out=sum(result.tokens_out for result in done),
    )
    report = RunReport(
        journal.dir.name,
        str(meta.get("command")),
        status,
        str(meta.get("base", "")),
        str(meta.get("target", "")),
        parallel if isinstance(parallel, int) else 0,
        ordered(done),
        metrics,
        meta.get("dry_run") is True,
    )
    return report, sum(1 for unit in units if unit.path not in results)


def _number(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return 0.0


def _peak(journal: Journal) -> int:
    """The most agent calls the run's ops log saw in flight at once."""
    return max((event.running for event in read_log(journal.events_file).events), default=0)
