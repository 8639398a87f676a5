"""Carry out a run's units through the workflow: a new run, or the rest of one resumed."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import importlib.util
import json
import math
import os
import sqlite3
import time
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from stomper import checkpoints, console, git
from stomper.agents import Agent, needs_tree, uncontained
from stomper.agents import close as close_agent
from stomper.budget import Budget, Limits, ended
from stomper.config import Settings
from stomper.diagnostics import Collector, close_collectors, ruff
from stomper.errors import RepositoryError
from stomper.events import OpsEvent, UnitEvent, recording
from stomper.gate import TestGate
from stomper.journal import Journal
from stomper.landing import Lander
from stomper.offload import Offload
from stomper.report import LeftOut, Metrics, RunReport, ordered
from stomper.repository import Repository
from stomper.tripwire import Tripwire
from stomper.unit import Unit, UnitResult
from stomper.workflow.context import RunContext, grouped, head_start, wave_size
from stomper.workflow.limit import Limit
from stomper.workflow.pipeline import Pipeline, Policy
from stomper.workspace import Workspaces

if TYPE_CHECKING:
    from stomper.cluster import RayJob


@dataclass(frozen=True)
class Run:
    """A run's fixed facts, as its journal records them."""

    run_id: str
    command: str
    repo: Repository
    base: str
    target_ref: str
    checked_out: bool
    settings: Settings
    dry_run: bool
    limits: Limits = field(default_factory=Limits)
    """What its agent calls may spend (:mod:`stomper.budget`)."""

    def meta(self, *, units: int, paths: Sequence[str]) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": self.command,
            "status": "running",
            "base": self.base,
            "target": self.target_ref,
            "checked_out": self.checked_out,
            "units": units,
            "started": time.time(),
            "dry_run": self.dry_run,
            "settings": self.settings.model_dump(),
            "paths": list(paths),
            "max_calls": self.limits.max_calls,
            "max_tokens": self.limits.max_tokens,
            "max_cost": self.limits.max_cost,
        }


@dataclass(frozen=True)
class Outcome:
    results: tuple[UnitResult, ...]
    """The units finished in this execution (not those finished before a resume)."""
    status: str
    peak: int
    resent: int = 0
    """Groups of units sent to the cluster again (:mod:`stomper.cluster`)."""


async def execute(
    run: Run,
    units: Sequence[Unit],
    *,
    journal: Journal,
    agent: Agent,
    collectors: Sequence[Collector],
    done: Mapping[str, UnitResult] = {},
    landed: Mapping[str, str] = {},
    progress: bool = True,
    anew: bool = False,
) -> Outcome:
    """Work ``units`` (those in ``done`` are skipped), land them, and always clean up;
    ``anew``: in a graph of its own, not the one the run's checkpoints hold (a run that
    completed its graph, as far as its budget let it)."""
    settings = run.settings
    limit = Limit(settings.parallel)
    # One worktree a unit worked at once, and one for the tests at the base.
    workspaces = Workspaces(
        run.repo.root,
        run.repo.state.worktrees(run.run_id),
        pool_size=limit.units + 1,
    )
    lander = None
    if not run.dry_run:
        lander = Lander(
            run.repo.root,
            run.target_ref,
            run_id=run.run_id,
            index_file=journal.index_file,
            checked_out=run.checked_out,
            landed=landed,
            user_index=run.repo.git_dir / "index",
        )
    gate = None
    if settings.test_cmd:
        gate = TestGate(
            settings.test_cmd,
            timeout=settings.test_timeout,
            base_tree=lambda: workspaces.tree_root(run.base),
        )
    policy = Policy(
        max_attempts=settings.max_attempts,
        agent_timeout=settings.agent_timeout,
        allow_suppressions=settings.allow_suppressions,
    )
    tree = needs_tree(agent) or gate is not None or not all(c.per_file for c in collectors)
    tripwire = None
    if uncontained(agent):
        repo = run.repo
        quarantine = journal.dir / "quarantine"
        tripwire = Tripwire(repo.root, repo.git_dir, repo.common_dir, run.target_ref, quarantine)
    offload = Offload()
    budget = Budget(run.limits, settings.price)
    pipeline = Pipeline(
        run.run_id,
        workspaces,
        agent,
        collectors,
        lander,
        policy,
        gate,
        tree,
        tripwire,
        limit,
        offload,
        budget,
    )
    results: list[UnitResult] = []

    def record(result: UnitResult) -> None:
        results.append(result)
        journal.record(result)

    context = RunContext(
        units=units,
        job=pipeline,
        record=record,
        wave=wave_size(limit.units),
        done=frozenset(done),
    )
    status = "failed"
    elsewhere = contextlib.AsyncExitStack()
    ray_job: RayJob | None = None
    try:
        if settings.executor == "ray":
            from stomper import cluster

            on_ray = cluster.on_ray(run.run_id, run.repo, run.base, pipeline, units, settings)
            ray_job = await elsewhere.enter_async_context(on_ray)
            context.job = ray_job
        together = await _together(run, pipeline, units, limit.agents)
        context.groups = grouped(len(units), together)
        if together > 1:
            # A group's tree is a checkout of the whole repository, and its ruff run uses
            # every core: no more trees than cores, nor than agents at work (no tests run).
            workspaces.pool_size = min(limit.agents, os.cpu_count() or 1)
        await workspaces.prepare(units)
        if lander is not None:
            await lander.prepare(workspaces.blobs.verbatim)
        if tripwire is not None:
            await tripwire.start()
        left = len(units) - len(done)
        status = await drive(
            context,
            journal,
            checkpointer=settings.checkpointer,
            view=console.ProgressView(
                left,
                title=f"fixing {left} files",
                enabled=progress,
                price=settings.price,
            ),
            head=limit.units,
            thread=f"{run.run_id}+{time.time_ns()}" if anew else None,
        )
        if tripwire is not None:
            await tripwire.final()
        status = ended(status, budget, results)
    finally:
        await asyncio.shield(elsewhere.aclose())
        with contextlib.suppress(Exception):
            await asyncio.shield(close_agent(agent))
        if lander is not None:
            await asyncio.shield(lander.aclose())
        await asyncio.shield(workspaces.aclose())
        await asyncio.shield(close_collectors(collectors))
        offload.close()
        workspaces.close()
        journal.index_file.unlink(missing_ok=True)
        journal.update(status=status, finished=time.time())
    return Outcome(tuple(results), status, limit.peak, ray_job.resent if ray_job else 0)


# Units worked together share one tree, one call of the agent and one check per tool: enough
# of them that those calls cost little a unit, and enough groups that every agent's place
# has a few to work one after the other, each landed as it is done.
_TOGETHER_UP_TO = 64
_GROUPS_A_PLACE = 4


async def _together(run: Run, pipeline: Pipeline, units: Sequence[Unit], parallel: int) -> int:
    """How many units a group worked at once holds: one, unless the pipeline works units
    :attr:`~Pipeline.together` and the tools' settings that apply in the checkout are those
    of the base alone. A tree holds the base's, and no folder above it is the checkout's;
    a unit alone is checked by the checkout's settings, as the run's findings were."""
    if not pipeline.together or len(units) < 2:
        return 1
    names = sorted(ruff.CONFIG_FILES)
    if any((folder / name).exists() for folder in run.repo.root.parents for name in names):
        return 1
    if await git.differing_from(run.repo.root, run.base, [f":(glob)**/{n}" for n in names]):
        return 1
    return min(_TOGETHER_UP_TO, math.ceil(len(units) / (_GROUPS_A_PLACE * parallel)))


async def drive(
    context: RunContext[Any],
    journal: Journal,
    *,
    checkpointer: str | None,
    view: console.ProgressView,
    head: int,
    thread: str | None = None,
) -> str:
    """Run or resume the graph for a job of any mode, its first ``head`` units begun while
    it loads, its events shown in ``view`` and logged; ``completed``, or ``interrupted``
    when cancelled. The graph's checkpoints are the run's (``thread`` None), or those of
    ``thread``: a new one runs the graph anew, the units ``done`` skipped."""
    try:
        with view, journal.events_file.open("a", encoding="utf-8") as log:

            def show(event: UnitEvent) -> None:
                view.handle(event)
                log.write(json.dumps(event.to_json()) + "\n")

            def recorded(event: OpsEvent) -> None:
                view.record(event)
                log.write(json.dumps(event.to_json()) + "\n")

            try:
                with recording(recorded):
                    async with head_start(context, head, show):
                        await _run_graph(context, journal, checkpointer, show, thread)
            except asyncio.CancelledError:
                return "interrupted"
    except (OSError, ValueError, sqlite3.Error) as exc:
        raise RepositoryError(f"the run's journal in {journal.dir} cannot be used: {exc}") from exc
    return "completed"


async def _run_graph(
    context: RunContext[Any],
    journal: Journal,
    checkpointer: str | None,
    show: Callable[[UnitEvent], None],
    thread: str | None = None,
) -> None:
    # The units begun meanwhile work on the event loop while LangGraph loads in a thread. A
    # thread cannot be stopped: a run stopped meanwhile ends once the import has (asyncio.run
    # waits for its executor's threads), and what the import raised is raised here.
    _import_what_others_look_for()
    await asyncio.to_thread(_load_workflow, checkpointer)
    # What it loaded lives as long as the run, as what the command line froze at its start
    # does: the collector need not scan it again and again (bench/RESULTS.md, startup).
    gc.freeze()
    from stomper.workflow.graph import compile_graph, initial_state, recursion_limit

    total = len(context.groups)
    config: Any = {
        "configurable": {"thread_id": thread or journal.dir.name},
        "recursion_limit": recursion_limit(total, context.wave),
    }
    async with checkpoints.open_saver(journal, checkpointer) as saver:
        graph = compile_graph(saver)
        resumed = await saver.aget_tuple(config) is not None
        start = None if resumed else initial_state(total)
        # astream is an async generator: closing it cancels and awaits the graph's tasks, so
        # no unit outlives an interrupted run.
        stream = cast(
            AsyncGenerator[Any, None],
            graph.astream(start, config, context=context, stream_mode="custom"),
        )
        async with contextlib.aclosing(stream):
            async for event in stream:
                if isinstance(event, UnitEvent):
                    show(event)


# Modules the workflow's import brings in that libraries the units run look for in
# ``sys.modules`` and use when found: openai does so with httpx on every request, and found
# it half imported by the loading thread (an AttributeError failed the unit). Imported
# first, in the event loop's thread, they are never seen half made (httpx: about 20 ms).
_LOOKED_FOR = ("httpx",)


def _import_what_others_look_for() -> None:
    for name in _LOOKED_FOR:
        if importlib.util.find_spec(name) is not None:
            importlib.import_module(name)


def _load_workflow(checkpointer: str | None) -> None:
    """Import the workflow and the run's checkpointer: LangGraph, about a second."""
    importlib.import_module("stomper.workflow.graph")
    checkpoints.load_saver(checkpointer)


def report(
    run: Run,
    results: Sequence[UnitResult],
    status: str,
    *,
    started: float,
    peak: int,
    resent: int = 0,
    left_out: LeftOut | None = None,
) -> RunReport:
    tokens_in = sum(result.tokens_in for result in results)
    tokens_out = sum(result.tokens_out for result in results)
    price = run.settings.price
    metrics = Metrics(
        wall_s=time.monotonic() - started,
        peak_concurrency=peak,
        agent_s=sum(result.agent_s for result in results),
        landing_s=sum(result.landing_s for result in results),
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=price.cost(tokens_in, tokens_out) if price is not None else None,
        executor=run.settings.executor,
        resent=resent,
    )
    return RunReport(
        run.run_id,
        run.command,
        status,
        run.base,
        run.target_ref,
        run.settings.parallel,
        ordered(results),
        metrics,
        run.dry_run,
        left_out,
    )
