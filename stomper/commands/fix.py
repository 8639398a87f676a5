"""``stomper fix``: collect diagnostics, fix each file in its own workspace, land each fix."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import time
from collections.abc import AsyncIterator, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from stomper import checkpoints, console, git, redaction, runner
from stomper.agents import Agent, fixes, load_agent, module_of, ready, uncontained
from stomper.budget import Limits
from stomper.config import Settings
from stomper.diagnostics import code_matches, collectors_named
from stomper.errors import ConfigError, RepositoryError
from stomper.gate import split_command
from stomper.journal import Journal, hold_lock, new_run_id, stale_worktree_dirs
from stomper.plan import Plan, Scope, collect_findings, ensure_tools, make_plan
from stomper.recovery import recover
from stomper.report import LeftOut, RunReport
from stomper.repository import (
    Repository,
    open_repository,
    repo_relative,
    require_index,
    require_state,
)
from stomper.workspace import release_folder, release_orphans

T = TypeVar("T")


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
    limits: Limits = field(default_factory=Limits)
    """What the run's agent calls may spend (:mod:`stomper.budget`)."""


async def fix(request: FixRequest, settings: Settings, *, agent: Agent | None = None) -> int:
    """Run ``stomper fix`` and print its outcome; the exit code."""
    report = await run_fix(request, settings, agent=agent)
    return show(report, json_output=request.json, diffs=request.dry_run)


def show(report: RunReport, *, json_output: bool, diffs: bool = False) -> int:
    """Print a run's outcome (diffs and JSON on stdout, the rest on stderr); its exit code."""
    if diffs and not json_output:
        console.print_diffs([result.diff for result in report.results if result.diff])
    if json_output:
        console.print_document(report.to_json())
    console.print_summary(report)
    if report.status == "interrupted":
        console.info(f"interrupted: resume with `stomper resume {report.run_id}`")
    return report.exit_code()


async def run_fix(
    request: FixRequest, settings: Settings, *, agent: Agent | None = None
) -> RunReport:
    started = time.monotonic()
    redaction.use(redaction.Redaction.of(settings))
    # The agent's module (openai's: 0.4 s) is imported meanwhile, while this thread mostly
    # waits for git and the tools; made here, the agent then only takes what was imported.
    importing = asyncio.ensure_future(asyncio.to_thread(_import_quietly, settings.agent))
    try:
        repo = await open_repository(request.cwd)
        require_state(repo)
        await require_index(repo)
        await recover(repo)
        collectors = collectors_named(settings.tools)
        await ensure_tools(collectors)
        scope = await _scope(repo, request)
        # The tools look at the files while the agent is made and asked whether it is ready.
        async with _aside(collect_findings(repo, collectors, scope)) as collecting:
            await importing
            agent = agent if agent is not None else load_agent(settings.agent, settings)
            require_countable(request.limits, agent, settings)
            require_adaptable(agent, settings)
            await ready(agent)
            # After ready(): whether a CLI agent runs contained is known then.
            require_executor(request.limits, agent, settings, mode="fix")
            if settings.checkpointer is not None:
                await checkpoints.check(settings.checkpointer)  # before the branch is touched
            target_ref, checked_out = await _target(repo, settings.branch)
            if not request.dry_run:
                await require_identity(repo)
            if settings.test_cmd:
                split_command(settings.test_cmd)  # a malformed command is refused before work
            findings = await collecting
    finally:
        await asyncio.gather(importing, return_exceptions=True)
    tools = fixes(agent)
    codes = (settings.select, settings.ignore)
    plan = await make_plan(repo, collectors, scope, codes=codes, tools=tools, findings=findings)
    _warn_unmatched(settings.select, plan.codes)
    left_out = _left_out(plan, agent.name, tools)
    run = runner.Run(
        new_run_id(),
        "fix",
        repo,
        repo.head,
        target_ref,
        checked_out,
        settings,
        request.dry_run,
        request.limits,
    )
    if not plan.units:
        return runner.report(
            run, plan.skipped, "completed", started=started, peak=0, left_out=left_out
        )

    state = repo.state
    journal = Journal(state.run_dir(run.run_id))
    async with hold_lock(state, target_ref, run.run_id):
        for folder in stale_worktree_dirs(state):
            release_folder(repo.root, folder)
        release_orphans()
        if not checked_out and not await git.create_ref(
            repo.root, target_ref, repo.head, reason="stomper: start"
        ):
            name = target_ref.removeprefix("refs/heads/")
            raise ConfigError(f"branch {name} exists already: choose another --branch")
        journal.create(run.meta(units=len(plan.units), paths=request.paths))
        journal.write_plan(plan.units, plan.skipped)
        outcome = await runner.execute(
            run,
            plan.units,
            journal=journal,
            agent=agent,
            collectors=collectors,
            progress=request.progress,
        )
    results = [*outcome.results, *plan.skipped]
    return runner.report(
        run,
        results,
        outcome.status,
        started=started,
        peak=outcome.peak,
        resent=outcome.resent,
        left_out=left_out,
    )


def require_adaptable(agent: Agent, settings: Settings) -> None:
    """Refuse ``-j auto`` for an agent that asks no model server, whose answers it learns
    from."""
    if settings.adaptive and agent.name != "openai":
        raise ConfigError(
            f"-j auto learns from a model server's answers; the {agent.name} agent asks none: "
            "give -j N"
        )


def require_countable(limits: Limits, agent: Agent, settings: Settings) -> None:
    """Refuse a budget the agent's calls cannot be counted against: any with ``autofix``
    (ruff's fixes, which cost nothing), one of tokens or cost with an agent that reports no
    tokens, one of cost for a model without a price."""
    if limits == Limits():
        return
    if agent.name == "autofix":
        raise ConfigError(
            "autofix calls no model: --max-calls, --max-tokens and --max-cost do not apply"
        )
    if limits.counts_tokens and not getattr(agent, "reports_tokens", False):
        raise reports_no_tokens(agent.name)
    if limits.max_cost is not None and settings.price is None:
        raise needs_price("--max-cost", settings)


def reports_no_tokens(agent: str) -> ConfigError:
    """The refusal of ``--max-tokens`` or ``--max-cost`` for an agent that reports no tokens."""
    return ConfigError(
        f"--max-tokens and --max-cost count what a model reports, and the {agent} "
        "agent reports no tokens: give --max-calls instead"
    )


def needs_price(budget: str, settings: Settings) -> ConfigError:
    """The refusal of ``budget`` (of cost) for a model without a price."""
    return ConfigError(
        f"{budget} needs the price of the model {settings.model!r}: add "
        f'[tool.stomper.prices] "{settings.model}" = {{ input = ..., output = ... }} '
        "(dollars per million tokens)"
    )


def require_executor(limits: Limits, agent: Agent, settings: Settings, *, mode: str) -> None:
    """Refuse what ``--executor ray`` cannot do yet: a mode but ``fix``, an agent without a
    sandbox (it would run on the cluster's nodes, watched by nobody), a budget or ``-j
    auto`` (each counts on this machine what the workers do there)."""
    if settings.executor == "local":
        return
    if mode != "fix":
        raise ConfigError(
            f"--executor ray works units of stomper fix so far; stomper {mode} works its "
            'units here: set executor = "local"'
        )
    from stomper.cluster import require_ray

    require_ray()
    if uncontained(agent):
        raise ConfigError(
            f"the {agent.name} agent runs without a sandbox here, which --executor ray "
            "cannot watch on the cluster's nodes: use --sandbox bwrap, or the local executor"
        )
    if limits != Limits():
        raise ConfigError(
            "a budget is counted on this machine, and --executor ray counts none yet: "
            "leave out --max-calls, --max-tokens and --max-cost, or use the local executor"
        )
    if settings.adaptive:
        raise ConfigError(
            "-j auto learns from the answers this machine sees, not those on the cluster: "
            "give -j N with --executor ray"
        )


def _import_quietly(agent: str) -> None:
    """Import the module that makes ``agent``; what fails here fails again, and is said,
    where the agent is made."""
    with contextlib.suppress(Exception):
        importlib.import_module(module_of(agent))


@contextlib.asynccontextmanager
async def _aside(work: Coroutine[Any, Any, T]) -> AsyncIterator[asyncio.Task[T]]:
    """``work`` begun as a task of its own; cancelled and awaited when the block ends
    before it does (an error of the block's own)."""
    task = asyncio.ensure_future(work)
    try:
        yield task
    finally:
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def _left_out(plan: Plan, agent: str, tools: frozenset[str] | None) -> LeftOut | None:
    """What no unit was made for, since ``agent`` fixes only the diagnostics of ``tools``."""
    if not plan.left_out or tools is None:
        return None
    theirs = " and ".join(sorted({diag.tool for diag in plan.left_out}))
    units = {unit.path for unit in plan.units} | {result.path for result in plan.skipped}
    files = len({diag.path for diag in plan.left_out} - units)
    reason = (
        f"{agent} fixes only {' and '.join(sorted(tools))}'s diagnostics: "
        f"choose an agent that can fix {theirs}'s (--agent openai, claude, ...)"
    )
    return LeftOut(len(plan.left_out), files, reason)


def _warn_unmatched(selected: Sequence[str], found: Collection[str]) -> None:
    """Say which ``select`` prefixes match nothing the tools found (a typo, most often)."""
    unmatched = [prefix for prefix in selected if not any(code_matches(c, [prefix]) for c in found)]
    if not unmatched:
        return
    seen = ", ".join(sorted(found)[:12]) + (", ..." if len(found) > 12 else "")
    console.info(
        f"warning: select {', '.join(unmatched)} matches no diagnostic found in scope "
        f"(found: {seen or 'none'}): nothing is targeted for it",
        markup=False,
    )


async def require_identity(repo: Repository) -> None:
    if not await git.committer_identity(repo.root):
        raise RepositoryError(
            "git does not know who commits: set user.name and user.email (git config --global ...)"
        )


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
    paths = tuple([await repo_relative(repo.root, request.cwd, given) for given in request.paths])
    return Scope(paths=paths, changed_against=against, max_files=request.max_files)
