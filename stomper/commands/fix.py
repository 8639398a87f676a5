"""``stomper fix``: collect diagnostics, fix each file in its own workspace, land each fix."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from stomper import console, git
from stomper.agents import Agent, load_agent
from stomper.config import Settings
from stomper.diagnostics import collectors_named
from stomper.errors import ConfigError, RepositoryError
from stomper.events import UnitEvent
from stomper.gate import TestGate, split_command
from stomper.journal import Journal, hold_lock, new_run_id, stale_worktree_dirs
from stomper.landing import Lander
from stomper.plan import Plan, Scope, ensure_tools, make_plan
from stomper.report import Metrics, RunReport, ordered
from stomper.repository import Repository, open_repository, repo_relative
from stomper.unit import UnitResult
from stomper.workflow.graph import (
    Gauge,
    RunContext,
    compile_graph,
    initial_state,
    recursion_limit,
    wave_size,
)
from stomper.workflow.pipeline import Pipeline, Policy
from stomper.workspace import Workspaces, release_folder


@dataclass(frozen=True)
class FixRequest:
    """What the user asked for, beyond the settings."""

    cwd: Path
    paths: tuple[str, ...] = ()
    git_changed: bool = False
    git_diff: str | None = None
    max_files: int | None = None
    dry_run: bool = False
    json: bool = False
    progress: bool = True


async def fix(request: FixRequest, settings: Settings, *, agent: Agent | None = None) -> int:
    """Run ``stomper fix`` and print its outcome; the exit code."""
    report = await run_fix(request, settings, agent=agent)
    if request.dry_run and not request.json:
        console.print_diffs([result.diff for result in report.results if result.diff])
    if request.json:
        sys.stdout.write(json.dumps(report.to_json(), indent=2) + "\n")
        sys.stdout.flush()
    console.print_summary(report)
    if report.status == "interrupted":
        console.info(f"interrupted: resume with `stomper resume {report.run_id}`")
    return report.exit_code()


async def run_fix(
    request: FixRequest, settings: Settings, *, agent: Agent | None = None
) -> RunReport:
    started = time.monotonic()
    repo = await open_repository(request.cwd)
    collectors = collectors_named(settings.tools)
    await ensure_tools(collectors)
    agent = agent if agent is not None else load_agent(settings.agent, settings)
    target_ref, checked_out = await _target(repo, settings.branch)
    if not request.dry_run and not await git.committer_identity(repo.root):
        raise RepositoryError(
            "git does not know who commits: set user.name and user.email (git config --global ...)"
        )
    if settings.test_cmd:
        split_command(settings.test_cmd)  # a malformed command is refused before any work
    scope = await _scope(repo, request)
    plan = await make_plan(repo, collectors, scope, codes=(settings.select, settings.ignore))
    run_id = new_run_id()
    if not plan.units:
        return _report(
            run_id,
            repo,
            target_ref,
            settings,
            plan.skipped,
            "completed",
            started,
            0,
            request.dry_run,
        )

    state = repo.state
    journal = Journal(state.run_dir(run_id))
    with hold_lock(state, target_ref, run_id):
        for folder in stale_worktree_dirs(state):
            release_folder(repo.root, folder)
        if not checked_out and not await git.create_ref(
            repo.root, target_ref, repo.head, reason="stomper: start"
        ):
            name = target_ref.removeprefix("refs/heads/")
            raise ConfigError(f"branch {name} exists already: choose another --branch")
        journal.create(_meta(run_id, repo, target_ref, settings, request, len(plan.units)))
        workspaces = Workspaces(repo.root, state.worktrees(run_id), repo.head)
        lander = None
        if not request.dry_run:
            lander = Lander(
                repo.root, target_ref, index_file=journal.index_file, checked_out=checked_out
            )
        gate = None
        if settings.test_cmd:
            gate = TestGate(
                settings.test_cmd,
                timeout=settings.test_timeout,
                base_tree=lambda: workspaces.isolate("tests-at-base"),
            )
        policy = Policy(
            max_attempts=settings.max_attempts,
            agent_timeout=settings.agent_timeout,
            allow_suppressions=settings.allow_suppressions,
        )
        pipeline = Pipeline(run_id, workspaces, agent, collectors, lander, policy, gate)
        results: list[UnitResult] = []
        gauge = Gauge()
        status = "failed"
        try:
            status = await _execute(
                plan,
                pipeline,
                journal,
                results,
                gauge,
                settings.max_parallel_files,
                request.progress,
            )
        finally:
            workspaces.close()
            journal.index_file.unlink(missing_ok=True)
            journal.update(status=status, finished=time.time())
    return _report(
        run_id,
        repo,
        target_ref,
        settings,
        [*results, *plan.skipped],
        status,
        started,
        gauge.peak,
        request.dry_run,
    )


async def _execute(
    plan: Plan,
    pipeline: Pipeline,
    journal: Journal,
    results: list[UnitResult],
    gauge: Gauge,
    parallel: int,
    progress: bool,
) -> str:
    """Run the graph over the plan's units; ``completed``, or ``interrupted`` on a cancel."""

    def record(result: UnitResult) -> None:
        results.append(result)
        journal.record(result)

    context = RunContext(
        units=plan.units,
        pipeline=pipeline,
        limit=asyncio.Semaphore(parallel),
        record=record,
        wave=wave_size(parallel),
        gauge=gauge,
    )
    total = len(plan.units)
    config: Any = {
        "configurable": {"thread_id": journal.dir.name},
        "recursion_limit": recursion_limit(total, context.wave),
    }
    view = console.ProgressView(total, title=f"fixing {total} files", enabled=progress)
    async with AsyncSqliteSaver.from_conn_string(str(journal.checkpoints)) as saver:
        graph = compile_graph(saver)
        with view, journal.events_file.open("a", encoding="utf-8") as log:
            try:
                async for event in graph.astream(
                    initial_state(total), config, context=context, stream_mode="custom"
                ):
                    if isinstance(event, UnitEvent):
                        view.handle(event)
                        log.write(json.dumps(event.to_json()) + "\n")
            except asyncio.CancelledError:
                return "interrupted"
    return "completed"


async def _target(repo: Repository, branch: str | None) -> tuple[str, bool]:
    """The ref to land on, and whether it is the checked-out branch."""
    if branch is None:
        if repo.branch is None:
            raise RepositoryError(
                "HEAD is detached: check out a branch, or pass --branch NAME to land on a new one"
            )
        return repo.branch, True
    if not await git.check_ref_format(repo.root, branch):
        raise ConfigError(f"invalid branch name {branch!r}")
    ref = f"refs/heads/{branch}"
    if await git.ref_target(repo.root, ref) is not None:
        raise ConfigError(f"branch {branch} exists already: choose another --branch")
    return ref, False


async def _scope(repo: Repository, request: FixRequest) -> Scope:
    if request.git_changed and request.git_diff:
        raise ConfigError("--git-changed and --git-diff exclude each other: pass one")
    if request.max_files is not None and request.max_files < 1:
        raise ConfigError("--max-files must be at least 1")
    against = "HEAD" if request.git_changed else request.git_diff
    if against is not None and await git.resolve_commit(repo.root, against) is None:
        raise ConfigError(f"--git-diff: {against!r} is not a commit")
    paths = tuple(repo_relative(repo.root, request.cwd, given) for given in request.paths)
    return Scope(paths=paths, changed_against=against, max_files=request.max_files)


def _meta(
    run_id: str, repo: Repository, target: str, settings: Settings, request: FixRequest, units: int
) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "command": "fix",
        "status": "running",
        "base": repo.head,
        "target": target,
        "units": units,
        "started": time.time(),
        "dry_run": request.dry_run,
        "settings": settings.model_dump(),
        "paths": list(request.paths),
    }


def _report(
    run_id: str,
    repo: Repository,
    target: str,
    settings: Settings,
    results: Sequence[UnitResult],
    status: str,
    started: float,
    peak: int,
    dry_run: bool,
) -> RunReport:
    metrics = Metrics(
        wall_s=time.monotonic() - started,
        peak_concurrency=peak,
        agent_s=sum(result.agent_s for result in results),
        landing_s=sum(result.landing_s for result in results),
        tokens_in=sum(result.tokens_in for result in results),
        tokens_out=sum(result.tokens_out for result in results),
    )
    return RunReport(
        run_id,
        "fix",
        status,
        repo.head,
        target,
        settings.max_parallel_files,
        ordered(results),
        metrics,
        dry_run,
    )
