"""``stomper run TASKS``: declared tasks, in parallel where they share no file, each worked
by its agent in a workspace of its own, verified, and landed through a merge queue.

``--plan`` reads the task file, checks the tasks against the files tracked at HEAD, and
shows the plan without running anything: each task with what it waits for and touches, the
waves, and the critical path. Every problem found is a line of its own, and exit 2.

Without ``--plan`` the tasks are worked (:mod:`stomper.tasks.job`) on the checked-out
branch: at most ``-j N`` at once, each as soon as its dependencies have landed and no
other task (of this run, or of another ``stomper run`` on the repository) holds one of
its files. The run's lock is its own, not the branch's: two runs whose tasks touch other
files work side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stomper import console, git, redaction, runner, sandbox
from stomper.agents import close as close_agent
from stomper.agents.command import PRESETS, CommandAgent
from stomper.budget import Budget, Limits, Use
from stomper.commands.fix import needs_price, reports_no_tokens, require_identity
from stomper.config import Settings
from stomper.diagnostics.ruff import RuffCollector
from stomper.errors import ConfigError
from stomper.gate import split_command
from stomper.journal import Journal, hold_lock, new_run_id
from stomper.landing import Lander
from stomper.recovery import recover
from stomper.report import EXIT_CLEAN, EXIT_INTERRUPTED, EXIT_REMAINING
from stomper.repository import Repository, open_repository, require_index
from stomper.store import Blobs
from stomper.tasks import taskfile
from stomper.tasks.job import VERIFY_TIMEOUT, TaskAgent, TaskJob, TaskUnit
from stomper.tasks.locks import PathLocks
from stomper.tasks.plan import Plan, Planned, plan
from stomper.tasks.schedule import Scheduler
from stomper.unit import TASK_ENDINGS, Status, UnitResult
from stomper.workflow.build import Builder
from stomper.workflow.context import RunContext
from stomper.workflow.limit import Limit
from stomper.workspace import Workspaces

AGENTS = (*PRESETS, "command", "openai")


@dataclass(frozen=True)
class RunRequest:
    cwd: Path
    tasks: Path
    plan_only: bool = False
    json: bool = False
    progress: bool = True
    limits: Limits = field(default_factory=Limits)
    """Agent calls, tokens and dollars the run may spend (:mod:`stomper.budget`)."""
    speculate: bool = True
    """Whether a change in the merge queue is checked on the target as the changes ahead
    of it will leave it, while those are checked (:mod:`stomper.tasks.job`)."""


@dataclass(frozen=True)
class TasksReport:
    run_id: str
    status: str
    base: str
    results: tuple[UnitResult, ...]
    records: dict[str, dict[str, Any]]
    wall_s: float
    peak: int
    foreseen: Mapping[str, int]
    """Changes of the merge queue whose speculative check held at their turn (``used``),
    and those checked again (``redone``)."""
    use: Use
    """What the run's agent calls spent."""
    priced: bool = False
    """Whether the cost is known: the model has a price."""

    def totals(self) -> dict[str, int]:
        counts = {status.value: 0 for status in TASK_ENDINGS}
        for result in self.results:
            counts[result.status.value] = counts.get(result.status.value, 0) + 1
        return {"tasks": len(self.results), **counts}

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": "run",
            "status": self.status,
            "base": self.base,
            "tasks": [
                {
                    "id": result.path,
                    "status": result.status.value,
                    "commit": result.commit,
                    "attempts": result.attempts,
                    "reason": result.reason,
                    "duration_s": round(result.duration_s, 3),
                    "landing_s": round(result.landing_s, 3),
                    **{
                        key: self.records.get(result.path, {}).get(key)
                        for key in ("files", "started", "queued", "ended", "use")
                    },
                    "verdicts": [
                        attempt["verdict"]
                        for attempt in self.records.get(result.path, {}).get("attempts", [])
                    ],
                }
                for result in self.results
            ],
            "totals": self.totals(),
            "metrics": {
                "wall_s": round(self.wall_s, 3),
                "peak_concurrency": self.peak,
                "speculation": dict(self.foreseen),
                "use": {**self.use.to_json(), "priced": self.priced},
            },
        }

    def exit_code(self) -> int:
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        landed = all(result.status is Status.LANDED for result in self.results)
        return EXIT_CLEAN if self.status == "completed" and landed else EXIT_REMAINING


async def run(request: RunRequest, settings: Settings) -> int:
    started = time.monotonic()
    redaction.use(redaction.Redaction.of(settings))
    repo = await open_repository(request.cwd)
    tasks = taskfile.load(request.tasks)
    tracked = await git.tree_entries(repo.root, repo.head)
    made = plan(tasks, tracked)
    if request.plan_only and request.json:
        console.print_document({"tasks_file": str(request.tasks), **made.to_json()})
    if made.problems:
        for problem in made.problems:
            console.error(problem)
        return 2
    if request.plan_only:
        if not request.json:
            _show(made, settings.parallel)
        return 0
    if settings.adaptive:
        raise ConfigError("-j auto is for fix and review, whose agent is a model server: give -j N")
    if settings.executor != "local":
        raise ConfigError(
            "--executor ray works units of stomper fix so far; stomper run works its tasks "
            'here: set executor = "local"'
        )
    agents = _agents(made, settings, request.limits)
    if repo.branch is None:
        raise ConfigError("HEAD is detached: check out the branch the tasks are to land on")
    await require_index(repo)
    await require_identity(repo)
    for agent in agents.values():
        await agent.ready()
    run_id = new_run_id()
    assert repo.branch is not None
    journal = Journal(repo.state.run_dir(run_id))
    journal.create(
        {
            "run_id": run_id,
            "command": "run",
            "status": "running",
            "base": repo.head,
            "target": repo.branch,
            "checked_out": True,
            "units": len(made.tasks),
            "started": time.time(),
            "dry_run": False,
            "tasks_file": str(request.tasks),
            "max_calls": request.limits.max_calls,
            "max_tokens": request.limits.max_tokens,
            "max_cost": request.limits.max_cost,
            "speculate": request.speculate,
            "settings": settings.model_dump(),
        }
    )
    report = await _work(repo, journal, made, agents, settings, request, started)
    return _publish(report, request)


async def resume_run(run: runner.Run, journal: Journal, request: RunRequest) -> int:
    """Finish ``run``, cut short or stopped by its budget: a task whose commit is on the
    branch (its trailers say so) landed, whatever the journal had time to record, and never
    runs again; a task the journal records as landed, failed or blocked stays so; the
    others (skipped ones too: their dependency, or the budget, stopped them) are worked."""
    started = time.monotonic()
    repo, settings = run.repo, run.settings
    tasks = taskfile.load(request.tasks)
    made = plan(tasks, await git.tree_entries(repo.root, repo.head))
    if made.problems:
        for problem in made.problems:
            console.error(problem)
        return 2
    agents = _agents(made, settings, request.limits)
    for agent in agents.values():
        await agent.ready()
    done = {
        task_id: result
        for task_id, result in journal.results().items()
        if result.status is not Status.SKIPPED
    }
    tip = await git.ref_target(repo.root, run.target_ref)
    for commit in await git.stomper_commits(repo.root, tip or run.base, run.base):
        if commit.run == run.run_id and commit.unit in {one.id for one in made.tasks}:
            reason = "landed before the run was cut short"
            done[commit.unit] = UnitResult(
                commit.unit, Status.LANDED, (), commit=commit.sha, reason=reason
            )
    journal.update(status="running", resumed=time.time())
    report = await _work(repo, journal, made, agents, settings, request, started, done=done)
    return _publish(report, request)


def _publish(report: TasksReport, request: RunRequest) -> int:
    if request.json:
        console.print_document(report.to_json())
    # The live view gave each task its line as it ended.
    _summary(report, each=request.json or not request.progress)
    return report.exit_code()


def _agents(made: Plan, settings: Settings, limits: Limits) -> dict[str, TaskAgent]:
    """The agent of each name the tasks ask for (``settings.agent`` by default); a budget
    of tokens or cost is refused where an agent reports none, and one of cost where the
    model has no price."""
    names = {one.task.agent or settings.agent for one in made.tasks}
    wrong = sorted(name for name in names if name not in AGENTS)
    if wrong:
        raise ConfigError(
            f"tasks are worked by a CLI agent or a chat model (openai), not {wrong[0]!r}: "
            f"choose one of {', '.join(AGENTS)} (agent = ... in the task file's [defaults], "
            "or --agent)"
        )
    agents: dict[str, TaskAgent] = {name: _agent(name, settings) for name in sorted(names)}
    counting = [one.task for one in made.tasks if one.task.limits.counts_tokens]
    for task in counting:
        name = task.agent or settings.agent
        if not agents[name].reports_tokens:
            raise ConfigError(
                f"task {task.id} has a budget of tokens or cost, but its agent ({name}) "
                "reports none: give it max_calls instead"
            )
    if limits.counts_tokens:
        silent = sorted(name for name, agent in agents.items() if not agent.reports_tokens)
        if silent:
            raise reports_no_tokens(silent[0])
    costed = limits.max_cost is not None or any(task.max_cost is not None for task in counting)
    if costed and settings.price is None:
        raise needs_price("a budget of cost", settings)
    return agents


def _agent(name: str, settings: Settings) -> TaskAgent:
    if name == "openai":
        from stomper.agents.openai_chat import OpenAIChatAgent
        from stomper.tasks.chat import ChatTaskAgent

        return ChatTaskAgent(OpenAIChatAgent.from_settings(settings))
    return CommandAgent.from_settings(name, settings)


async def _work(
    repo: Repository,
    journal: Journal,
    made: Plan,
    agents: dict[str, TaskAgent],
    settings: Settings,
    request: RunRequest,
    started: float,
    *,
    done: Mapping[str, UnitResult] | None = None,
) -> TasksReport:
    """Work the tasks of ``made`` not ``done`` before (on a resume), for the run
    ``journal`` records."""
    assert repo.branch is not None
    run_id, target = journal.dir.name, repo.branch
    parallel = settings.parallel
    done = dict(done or {})
    units = [TaskUnit(index, planned) for index, planned in enumerate(made.tasks)]
    results: list[UnitResult] = list(done.values())
    workspaces = Workspaces(repo.root, repo.state.worktrees(run_id), pool_size=2 * parallel + 1)
    blobs = Blobs(repo.root)
    lander = Lander(
        repo.root,
        target,
        run_id=run_id,
        index_file=journal.index_file,
        checked_out=True,
        user_index=repo.git_dir / "index",
        once_per_path=False,
    )
    limit = Limit(parallel, units=max(len(units), 1))
    scheduler = Scheduler(PathLocks(repo.state.path_locks, run_id), parallel, made.urgency())
    for task_id, result in done.items():
        landed = result.status is Status.LANDED
        scheduler.settle(task_id, None if landed else result.reason or result.status.value)
    status = "failed"
    job = None
    ruff = RuffCollector()
    try:
        async with hold_lock(repo.state, f"{target}@{run_id}", run_id):
            await recover(repo)
            # The files tasks may write whose bytes git keeps as they are: named, read and
            # looked up in-process, not by a git process each.
            await blobs.prepare(sorted({path for one in made.tasks for path in one.writes}))
            await lander.prepare(blobs.verbatim)
            job = TaskJob(
                agents=agents,
                default_agent=settings.agent,
                scheduler=scheduler,
                workspaces=workspaces,
                builder=Builder(
                    workspaces=workspaces,
                    sandbox=await sandbox.resolve(settings.sandbox, agent="the verification"),
                    timeout=VERIFY_TIMEOUT,
                    parallel=parallel,
                ),
                lander=lander,
                blobs=blobs,
                limit=limit,
                audit=journal.dir / "tasks.jsonl",
                ruff=ruff,
                budget=Budget(request.limits, settings.price),
                speculate=request.speculate,
                tests=split_command(settings.test_cmd) if settings.test_cmd else None,
            )

            def record(result: UnitResult) -> None:
                results.append(result)
                journal.record(result)

            context = RunContext(
                units=units, job=job, record=record, wave=max(len(units), 1), done=frozenset(done)
            )
            left = sum(1 for unit in units if unit.path not in done)
            view = console.ProgressView(
                left,
                title=f"running {left} tasks",
                enabled=request.progress and not request.json,
                endings=TASK_ENDINGS,
                price=settings.price,
            )
            # A resumed run's graph starts anew: what is done is known from the journal
            # and the branch's trailers (a run stopped by its budget completed its graph).
            status = await runner.drive(
                context,
                journal,
                checkpointer=settings.checkpointer,
                view=view,
                head=len(units),
                thread=f"{run_id}+{time.time_ns()}" if done else None,
            )
            if (
                status == "completed"
                and job.budget.spent
                and any(result.status is Status.SKIPPED for result in results)
            ):
                status = "budget"  # spent: `stomper resume --max-cost X` goes on
    finally:
        for agent in agents.values():
            await asyncio.shield(close_agent(agent))
        await asyncio.shield(ruff.aclose())
        await blobs.aclose()
        await asyncio.shield(lander.aclose())
        await asyncio.shield(workspaces.aclose())
        workspaces.close()
        journal.index_file.unlink(missing_ok=True)
        journal.update(status=status, finished=time.time())
    order = {unit.path: unit.index for unit in units}
    results = [result for result in results if result.path in order]
    records = {key: record.to_json() for key, record in job.records.items()} if job else {}
    return TasksReport(
        run_id,
        status,
        repo.head,
        tuple(sorted(results, key=lambda result: order[result.path])),
        records,
        time.monotonic() - started,
        scheduler.peak,
        job.foreseen if job is not None else {"used": 0, "redone": 0},
        job.budget.use if job is not None else Use(),
        priced=settings.price is not None,
    )


def _summary(report: TasksReport, *, each: bool) -> None:
    for result in report.results if each else ():
        line = f"{result.status.value:>8}  {result.path}"
        if result.commit:
            line += f"  {result.commit[:10]}"
        if result.reason and result.status is not Status.LANDED:
            line += f"  {result.reason.splitlines()[0]}"
        console.info(line, markup=False)
    totals = report.totals()
    counted = ", ".join(f"{totals[status.value]} {status.value}" for status in TASK_ENDINGS)
    use = report.use
    spent = f"{use.calls} agent call{'s' * (use.calls != 1)}"
    if use.tokens:
        spent += f", {use.tokens:,} tokens" + (f", ${use.cost:.4f}" if report.priced else "")
    console.info(
        f"[bold]{totals['tasks']} tasks[/]: {counted}; at most {report.peak} at once, "
        f"{spent}, {report.wall_s:.1f}s (run {report.run_id})"
    )


def _show(made: Plan, parallel: int) -> None:
    widest = max((len(wave) for wave in made.waves), default=0)
    count = len(made.tasks)
    console.info(
        f"[bold]{count} task{'s' * (count != 1)} in {len(made.waves)} "
        f"wave{'s' * (len(made.waves) != 1)}[/], at most {min(widest, parallel)} at once "
        f"(-j {parallel})",
    )
    width = max(len(one.id) for one in made.tasks)
    for one in made.tasks:
        console.info(f"  {one.id:<{width}}  {_about(one)}", markup=False)
    for number, wave in enumerate(made.waves, 1):
        console.info(f"wave {number}: {', '.join(wave)}", markup=False)
    path = made.critical_path
    console.info(
        f"critical path: {' -> '.join(path)} ({len(path)} task{'s' * (len(path) != 1)})",
        markup=False,
    )


def _about(one: Planned) -> str:
    changed = len(one.writes - one.creates)
    parts = [f"{changed} file{'s' * (changed != 1)}"]
    if one.creates:
        parts.append(f"{len(one.creates)} new")
    if one.reads:
        parts.append(f"reads {len(one.reads)}")
    if one.task.depends_on:
        parts.append(f"after {', '.join(one.task.depends_on)}")
    return " · ".join(parts)
