"""``stomper resume``: finish a run that was interrupted or killed, landing each unit once."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from stomper import checkpoints, console, git, redaction, runner
from stomper.agents import Agent, load_agent, ready
from stomper.budget import Limits, unbegun
from stomper.commands.fix import (
    require_adaptable,
    require_countable,
    require_executor,
    require_identity,
    show,
)
from stomper.config import Settings, load_settings
from stomper.diagnostics import Collector, Diagnostic, collectors_named, select
from stomper.errors import ConfigError, RepositoryError
from stomper.journal import Journal, StateDir, hold_lock, live_runs
from stomper.landing import repair_checkout
from stomper.plan import ensure_tools
from stomper.recovery import recover
from stomper.report import RunReport
from stomper.repository import Repository, open_repository, require_index, require_state
from stomper.unit import Status, Unit, UnitResult
from stomper.verify import judge, result_of
from stomper.workspace import Workspaces, release_folder

UNFINISHED = ("running", "interrupted", "failed", "budget")
"""Statuses of runs to resume: ``budget`` is a run whose budget was spent."""


async def resume(
    cwd: Path,
    run_id: str | None,
    *,
    json_output: bool,
    progress: bool,
    checkpointer: str | None = None,
    limits: Limits | None = None,
) -> int:
    repo = await open_repository(cwd)
    require_state(repo)
    journal = find_run(repo.state, run_id)
    of_mode = {"review": _resume_review, "run": _resume_tasks}.get(
        str(journal.meta().get("command"))
    )
    if of_mode is not None:
        return await of_mode(
            repo,
            journal,
            json_output=json_output,
            progress=progress,
            checkpointer=checkpointer,
            limits=limits or Limits(),
        )
    report = await run_resume(
        cwd, journal.dir.name, progress=progress, checkpointer=checkpointer, limits=limits
    )
    return show(report, json_output=json_output)


async def _resume_review(
    repo: Repository,
    journal: Journal,
    *,
    json_output: bool,
    progress: bool,
    checkpointer: str | None,
    limits: Limits,
) -> int:
    """Finish a run of ``review --apply`` (with the budget of ``limits``, as much again where
    it names no limit the run had); a review that lands nothing is run again instead."""
    from stomper.commands.review import ReviewRequest, publish, resume_review

    meta = journal.meta()
    run_id = journal.dir.name
    if meta.get("dry_run", True):
        raise ConfigError(
            f"run {run_id} is a review, which lands nothing: run `stomper review` again "
            "(its cache keeps what was reviewed: those files are not sent again)"
        )
    run = await _landing_run(repo, journal, meta, checkpointer)
    outputs = {name: meta.get(name) for name in ("sarif", "markdown")}
    request = ReviewRequest(
        cwd=repo.root,
        paths=tuple(str(path) for path in meta.get("paths", [])),
        json=json_output,
        sarif=Path(outputs["sarif"]) if isinstance(outputs["sarif"], str) else None,
        markdown=Path(outputs["markdown"]) if isinstance(outputs["markdown"], str) else None,
        progress=progress,
        limits=_recorded_limits(limits, meta),
    )
    done = len(journal.results())
    console.info(f"resuming review run {run_id}: {done} files already done", markup=False)
    return publish(await resume_review(run, journal, meta, request), request)


async def _resume_tasks(
    repo: Repository,
    journal: Journal,
    *,
    json_output: bool,
    progress: bool,
    checkpointer: str | None,
    limits: Limits,
) -> int:
    """Finish a ``stomper run``: the tasks that landed count as landed, the rest are worked
    with the budget of ``limits`` (as much again where it names no limit the run had)."""
    from stomper.commands.run import RunRequest, resume_run

    meta = journal.meta()
    run_id = journal.dir.name
    run = await _landing_run(repo, journal, meta, checkpointer)
    tasks = meta.get("tasks_file")
    if not isinstance(tasks, str):
        raise RepositoryError(f"run {run_id} cannot be resumed: its journal names no task file")
    request = RunRequest(
        repo.root,
        Path(tasks),
        json=json_output,
        progress=progress,
        limits=_recorded_limits(limits, meta),
        speculate=meta.get("speculate") is not False,
    )
    console.info(
        f"resuming run {run_id}: {len(journal.results())} tasks already done", markup=False
    )
    return await resume_run(run, journal, request)


def _recorded_limits(given: Limits, meta: Mapping[str, Any]) -> Limits:
    """The limits given now, and where one is not, the one the run recorded."""
    return Limits(
        _given(given.max_calls, meta.get("max_calls"), int),
        _given(given.max_tokens, meta.get("max_tokens"), int),
        _given(given.max_cost, meta.get("max_cost"), float),
    )


_Number = TypeVar("_Number", int, float)


def _given(now: _Number | None, recorded: object, kind: type[_Number]) -> _Number | None:
    """The limit given now, else the one the run recorded (if it is a number of ``kind``)."""
    if now is not None:
        return now
    if isinstance(recorded, bool) or not isinstance(recorded, int | float):
        return None
    return kind(recorded)


async def _landing_run(
    repo: Repository, journal: Journal, meta: dict[str, Any], checkpointer: str | None
) -> runner.Run:
    """The unfinished run ``journal`` records, that lands on the branch checked out here:
    every check made, and a checkout its death left behind brought along."""
    run_id = journal.dir.name
    if meta.get("status") == "completed":
        raise ConfigError(f"run {run_id} completed: there is nothing to resume")
    if run_id in live_runs(repo.state):
        raise ConfigError(f"run {run_id} is still running: wait for it, or stop it first")
    await require_index(repo)
    await recover(repo)
    run = await _recorded_run(journal, meta, repo, checkpointer)
    redaction.use(redaction.Redaction.of(run.settings))
    if repo.branch != run.target_ref:
        raise RepositoryError(
            f"run {run_id} lands on {run.target_ref}, but {repo.branch or 'a detached HEAD'} "
            "is checked out: check that branch out, then resume"
        )
    await require_identity(repo)
    return run


def find_run(state: StateDir, run_id: str | None) -> Journal:
    """The run named, or the newest one that did not finish."""
    if run_id is not None:
        return state.run(run_id)
    for journal in state.runs_newest_first():
        try:
            meta = journal.meta()
        except RepositoryError as exc:
            raise RepositoryError(
                f"{exc}: name the run to resume (`stomper runs` lists them), or remove "
                f"{journal.dir}"
            ) from None
        # A review that lands nothing is not resumed (it is run again, from its cache).
        landing = meta.get("command") != "review" or meta.get("dry_run") is False
        if meta.get("status") in UNFINISHED and landing:
            return journal
    raise ConfigError("no unfinished run to resume: `stomper runs` lists the runs")


async def run_resume(
    cwd: Path,
    run_id: str | None,
    *,
    progress: bool = True,
    agent: Agent | None = None,
    checkpointer: str | None = None,
    limits: Limits | None = None,
) -> RunReport:
    """Finish a run with its own options; ``checkpointer`` is the URL given by flag, if any,
    and ``limits`` the budget it has now (as much again where it names no limit the run
    had)."""
    started = time.monotonic()
    repo = await open_repository(cwd)
    require_state(repo)
    await require_index(repo)
    await recover(repo)
    state = repo.state
    journal = find_run(state, run_id)
    meta = journal.meta()
    run_id = journal.dir.name
    if meta.get("status") == "completed":
        raise ConfigError(f"run {run_id} completed: there is nothing to resume")
    if run_id in live_runs(state):
        raise ConfigError(f"run {run_id} is still running: wait for it, or stop it first")
    run = await _recorded_run(journal, meta, repo, checkpointer)
    run = replace(run, limits=_recorded_limits(limits or Limits(), meta))
    redaction.use(redaction.Redaction.of(run.settings))
    if run.checked_out and repo.branch != run.target_ref:
        raise RepositoryError(
            f"run {run_id} lands on {run.target_ref}, but {repo.branch or 'a detached HEAD'} "
            "is checked out: check that branch out, then resume"
        )
    if not run.dry_run:
        await require_identity(repo)
    collectors = collectors_named(run.settings.tools)
    await ensure_tools(collectors)
    agent = agent if agent is not None else load_agent(run.settings.agent, run.settings)
    require_countable(run.limits, agent, run.settings)
    require_adaptable(agent, run.settings)
    await ready(agent)
    # After ready(): whether a CLI agent runs contained is known then.
    require_executor(run.limits, agent, run.settings, mode="fix")
    if run.settings.checkpointer is not None:
        await checkpoints.check(run.settings.checkpointer)
    units, skipped = journal.read_plan()
    async with hold_lock(state, run.target_ref, run_id):
        release_folder(repo.root, state.worktrees(run_id))
        tip = await git.ref_target(repo.root, run.target_ref)
        if tip is None:
            raise RepositoryError(f"the run's target {run.target_ref} no longer exists")
        # A unit the budget left unbegun is worked now, in a graph of its own: the run's
        # graph has it done.
        recorded = journal.results()
        done = {path: result for path, result in recorded.items() if not unbegun(result)}
        landed = {
            commit.unit: commit.sha
            for commit in await git.stomper_commits(repo.root, tip, run.base)
            if commit.run == run_id
        }
        pending = [unit for unit in units if unit.path not in done and unit.path not in landed]
        reconciled = await _reconcile(
            run,
            journal,
            [u for u in units if u.path in landed and u.path not in done],
            pending,
            landed,
            tip,
            collectors,
        )
        done.update(reconciled.results)
        for result in reconciled.results.values():
            journal.record(result)
        units = [reconciled.rebased.get(unit.index, unit) for unit in units]
        journal.update(status="running", resumed=time.time(), checkout_repaired=False)
        left = sum(1 for unit in units if unit.path not in done)
        console.info(
            f"resuming run {run_id}: {len(done)} of {len(units)} units already done, {left} to go"
        )
        outcome = await runner.execute(
            run,
            units,
            journal=journal,
            agent=agent,
            collectors=collectors,
            done=done,
            landed=landed,
            progress=progress,
            anew=len(done) < len(recorded),
        )
    before = [
        result for path, result in done.items() if path not in {r.path for r in outcome.results}
    ]
    return runner.report(
        run,
        [*before, *outcome.results, *skipped],
        outcome.status,
        started=started,
        peak=outcome.peak,
        resent=outcome.resent,
    )


# What run.json must hold to be resumed, and of which type.
_RECORDED = {
    "run_id": str,
    "command": str,
    "base": str,
    "target": str,
    "checked_out": bool,
    "dry_run": bool,
    "settings": dict,
}


async def _recorded_run(
    journal: Journal, meta: dict[str, Any], repo: Repository, checkpointer: str | None
) -> runner.Run:
    """The run its journal records, checked: a journal edited or cut short by hand is
    refused in one line, before anything is done."""

    def damaged(what: str) -> RepositoryError:
        return RepositoryError(
            f"run {journal.dir.name} cannot be resumed: its journal {journal.meta_file} is "
            f"damaged ({what}); start a new run instead"
        )

    for key, kind in _RECORDED.items():
        if key not in meta:
            raise damaged(f"no {key}")
        if not isinstance(meta[key], kind):
            raise damaged(f"{key} is {meta[key]!r}, not a {kind.__name__}")
    if meta["run_id"] != journal.dir.name:
        raise damaged(f"run_id {meta['run_id']!r} is not the name of its folder")
    if not meta["target"].startswith("refs/heads/"):
        raise damaged(f"target {meta['target']!r} is not a branch")
    if await git.resolve_commit(repo.root, meta["base"]) is None:
        raise damaged(f"base {meta['base']!r} is not a commit of this repository")
    try:
        settings = _own_settings(journal.dir.name, meta["settings"], repo.root, checkpointer)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"]) or "settings"
        said = error["msg"].removeprefix("Value error, ")
        raise damaged(f"setting {key}: {said}") from None
    return runner.Run(
        journal.dir.name,
        meta["command"],
        repo,
        meta["base"],
        meta["target"],
        meta["checked_out"],
        settings,
        meta["dry_run"],
    )


def _own_settings(run_id: str, recorded: dict[str, Any], root: Path, flag: str | None) -> Settings:
    """The settings the run started with, with the real URLs its journal holds masked."""
    settings = Settings.model_validate(recorded)
    masked = {
        key: url
        for key in ("base_url", "checkpointer")
        if (url := getattr(settings, key)) is not None and redaction.url_secrets(url)
    }
    if not masked:
        return settings
    configured = load_settings(root, {"checkpointer": flag})
    real = {
        key: redaction.resume_url(run_id, key, url, getattr(configured, key))
        for key, url in masked.items()
    }
    return settings.model_copy(update=real)


class _Reconciled:
    def __init__(self) -> None:
        self.results: dict[str, UnitResult] = {}
        self.rebased: dict[int, Unit] = {}


async def _reconcile(
    run: runner.Run,
    journal: Journal,
    landed_unrecorded: Sequence[Unit],
    pending: Sequence[Unit],
    landed: dict[str, str],
    tip: str,
    collectors: Sequence[Collector],
) -> _Reconciled:
    """Bring the journal in line with the target after a crash.

    A unit whose commit is on the target but not in the journal (the crash came between the
    two) is recorded as landed, judged by the tools on the landed file; its checkout is
    repaired if the crash cut the landing short. A unit not yet done whose file the user
    changed on the target meanwhile is planned again on the new tip, and one the user is
    editing in the checkout right now is skipped.
    """
    out = _Reconciled()
    repo = run.repo
    entries = (
        await git.tree_entries(repo.root, tip, [u.path for u in [*landed_unrecorded, *pending]])
        if (landed_unrecorded or pending)
        else {}
    )
    moved = [
        u for u in pending if (entry := entries.get(u.path)) is None or entry.blob != u.base_blob
    ]
    dirty = await git.dirty_files(repo.root) if run.checked_out else set()
    if run.checked_out:
        for unit in landed_unrecorded:
            await repair_checkout(repo.root, unit.path, unit.base_blob, entries[unit.path])
    for unit in pending:
        if unit.path in dirty and unit not in moved:
            out.results[unit.path] = UnitResult(
                unit.path,
                Status.SKIPPED,
                unit.diagnostics,
                remaining=unit.diagnostics,
                reason="the file has uncommitted changes: commit or stash them to include it",
            )
    to_check = [*landed_unrecorded, *moved]
    if not to_check:
        return out
    workspaces = Workspaces(repo.root, repo.state.worktrees(run.run_id), pool_size=1)
    try:
        async with workspaces.tree_root(tip) as tree:
            paths = [u.path for u in to_check if u.path in entries]
            found: list[Diagnostic] = []
            for collector in collectors:
                found += await collector.collect(tree, paths)
    finally:
        await workspaces.aclose()
        workspaces.close()
    by_path: dict[str, list[Diagnostic]] = {}
    for diag in found:
        by_path.setdefault(diag.path, []).append(diag)
    for unit in landed_unrecorded:
        after = by_path.get(unit.path, [])
        verdict = judge(unit.diagnostics, unit.baseline, after, changed=True)
        out.results[unit.path] = result_of(
            unit,
            verdict,
            commit=landed[unit.path],
            attempts=1,
            reason="landed before the run was cut short",
        )
    settings = run.settings
    for unit in moved:
        entry = entries.get(unit.path)
        baseline = tuple(by_path.get(unit.path, []))
        targeted = tuple(select(baseline, select=settings.select, ignore=settings.ignore))
        if entry is None or not targeted or unit.path in dirty:
            out.results[unit.path] = UnitResult(
                unit.path,
                Status.SKIPPED,
                unit.diagnostics,
                remaining=targeted,
                reason="the file changed on the target since the run began"
                + ("" if entry is not None else " (it was deleted)"),
            )
            continue
        out.rebased[unit.index] = replace(
            unit,
            base=tip,
            diagnostics=targeted,
            baseline=baseline,
            base_blob=entry.blob,
            mode=entry.mode,
        )
    return out
