"""``stomper review``: a model reviews every file under the paths, N at once; findings out.

The files are read from the commit checked out (never from the working tree, which the
user may be editing). Without ``--apply`` nothing is written to the repository but the
run's journal and the review cache in its state folder. With it, the model's edits are
built a group at a time (a directory's files, by default) with ``build_cmd``, and those
proven to build land on the checked-out branch, one commit per file, each group in one
move of the branch (:mod:`stomper.review.job`). The findings go to the summary,
``--json``, ``--sarif FILE`` and ``--markdown FILE``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from stomper import console, git, redaction, runner, sandbox
from stomper.agents.openai_chat import OpenAIChatAgent
from stomper.budget import Budget, Limits, ended, unbegun
from stomper.commands.fix import require_countable, require_executor, require_identity
from stomper.config import Price, Settings
from stomper.errors import ConfigError, RepositoryError
from stomper.findings import SEVERITIES, Finding, Review
from stomper.journal import Journal, hold_lock, new_run_id
from stomper.landing import Lander
from stomper.recovery import recover
from stomper.report import EXIT_CLEAN, EXIT_INTERRUPTED, EXIT_REMAINING
from stomper.repository import (
    Repository,
    open_repository,
    repo_relative,
    require_index,
    require_state,
)
from stomper.review import lessons
from stomper.review.build import split_build
from stomper.review.cache import ReviewCache
from stomper.review.job import Applying, GroupOutcome, ReviewJob, ReviewPolicy
from stomper.review.markdown import review_markdown
from stomper.review.prompt import Persona, load_persona
from stomper.review.sarif import sarif_log
from stomper.review.units import ReviewUnit, Selection, group_of, select
from stomper.store import Blobs
from stomper.unit import REVIEW_ENDINGS, Status, UnitResult
from stomper.workflow.build import Builder
from stomper.workflow.context import RunContext, wave_size
from stomper.workflow.limit import Limit
from stomper.workspace import Workspaces


@dataclass(frozen=True)
class ReviewRequest:
    """What the user asked for, beyond the settings."""

    cwd: Path
    paths: tuple[str, ...] = ()
    diff: str | None = None
    """Review only what changed since the merge base of this ref and HEAD."""
    json: bool = False
    sarif: Path | None = None
    markdown: Path | None = None
    cache: bool = True
    progress: bool = True
    limits: Limits = field(default_factory=Limits)
    """What the run's requests may spend (:mod:`stomper.budget`)."""


@dataclass(frozen=True)
class ReviewReport:
    run_id: str
    status: str
    base: str
    persona: str
    model: str
    since: str | None
    """With ``--diff``: the commit the change was taken from (the merge base)."""
    results: tuple[UnitResult, ...]
    left_out: int
    """Tracked files under the paths that are vendored, generated, excluded or no file."""
    wall_s: float
    peak: int
    reflected: bool = False
    """Each file's findings were looked at twice (``--reflect``)."""
    groups: tuple[GroupOutcome, ...] = ()
    """With ``--apply``: each group's build."""
    applied: bool = False
    price: Price | None = None
    """The model's price, for the review's cost."""

    @property
    def cost(self) -> float | None:
        """What the review's tokens cost, in dollars; None: the model has no price."""
        if self.price is None:
            return None
        tokens_in = sum(result.tokens_in for result in self.results)
        return self.price.cost(tokens_in, sum(result.tokens_out for result in self.results))

    @property
    def findings(self) -> list[Finding]:
        return [f for result in self.results if result.review for f in result.review.findings]

    def totals(self) -> dict[str, int]:
        ended = Counter(result.status for result in self.results)
        reviews = [result.review for result in self.results if result.review is not None]
        severities = Counter(finding.severity for finding in self.findings)
        return {
            "files": len(self.results),
            **{status.value: ended[status] for status in REVIEW_ENDINGS},
            "left_out": self.left_out,
            "findings": len(self.findings),
            **{severity: severities[severity] for severity in SEVERITIES},
            "unlocated": sum(review.unlocated for review in reviews),
            "malformed": sum(review.malformed for review in reviews),
            "cut": sum(review.cut for review in reviews),
            "outside_diff": sum(review.outside for review in reviews),
            "refuted": sum(review.refuted for review in reviews),
            "cached": sum(1 for review in reviews if review.cached),
            "builds": sum(group.builds for group in self.groups),
            "tokens_in": sum(result.tokens_in for result in self.results),
            "tokens_out": sum(result.tokens_out for result in self.results),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "command": "review",
            "status": self.status,
            "base": self.base,
            "diff_base": self.since,
            "persona": self.persona,
            "model": self.model,
            "apply": self.applied,
            "units": [_unit_json(result) for result in self.results],
            "groups": [self._group_json(group) for group in self.groups],
            "totals": self.totals(),
            "metrics": {
                "wall_s": round(self.wall_s, 3),
                "peak_concurrency": self.peak,
                "cost": round(self.cost, 6) if self.cost is not None else None,
            },
        }

    def _group_json(self, group: GroupOutcome) -> dict[str, Any]:
        mine = [result for result in self.results if result.path in group.paths]
        return {
            **group.to_json(),
            "landed": [r.path for r in mine if r.status is Status.APPLIED],
            "rolled_back": [r.path for r in mine if r.status is Status.ROLLED_BACK],
        }

    def exit_code(self) -> int:
        """0 once every file was reviewed (findings or not); 1 when one could not be."""
        if self.status == "interrupted":
            return EXIT_INTERRUPTED
        failed = any(result.status is Status.FAILED for result in self.results)
        return EXIT_REMAINING if self.status != "completed" or failed else EXIT_CLEAN


def _unit_json(result: UnitResult) -> dict[str, Any]:
    # A file that was not reviewed (skipped, failed) found nothing.
    review = result.review or Review(())
    return {
        "path": result.path,
        "status": result.status.value,
        "reason": result.reason,
        "commit": result.commit,
        "attempts": result.attempts,
        **review.to_json(),
        "duration_s": round(result.duration_s, 3),
        "tokens": {"input": result.tokens_in, "output": result.tokens_out},
    }


async def review(request: ReviewRequest, settings: Settings) -> int:
    """Run ``stomper review``, print and write its outcome; the exit code."""
    return publish(await run_review(request, settings), request)


def publish(report: ReviewReport, request: ReviewRequest) -> int:
    """Print and write the outcome of a review; its exit code."""
    # What the model wrote goes out as the run's other output does: with its secrets masked.
    if request.sarif is not None:
        log = sarif_log(report.findings, persona=report.persona, model=report.model)
        _write(request.sarif, json.dumps(redaction.active().value(log), indent=2) + "\n")
    if request.markdown is not None:
        text = review_markdown(report.results, persona=report.persona, model=report.model)
        _write(request.markdown, redaction.redact(text))
    if request.json:
        console.print_document(report.to_json())
    _print_summary(report)
    return report.exit_code()


async def run_review(request: ReviewRequest, settings: Settings) -> ReviewReport:
    started = time.monotonic()
    redaction.use(redaction.Redaction.of(settings))
    _check_outputs(request)
    repo = await open_repository(request.cwd)
    require_state(repo)
    persona = load_persona(settings.review.persona, repo.root)
    paths = [await repo_relative(repo.root, request.cwd, given) for given in request.paths]
    since = None
    if request.diff is not None:
        since = await _merge_base(repo, request.diff)
    selection, changed = await _selection(repo, settings, repo.head, paths, since)
    if paths and not selection.units and not selection.left_out:
        raise ConfigError(f"no file tracked at {', '.join(request.paths)}: nothing to review")
    target = await _apply_target(repo, settings) if settings.review.apply else None
    execution = _Execution(
        new_run_id(), repo, repo.head, settings, persona, request, changed, since, target
    )
    return await execution.report(selection, started)


async def resume_review(
    run: runner.Run, journal: Journal, meta: Mapping[str, Any], request: ReviewRequest
) -> ReviewReport:
    """Finish a run of ``review --apply`` cut short: what landed before counts as landed,
    the rest is reviewed (from the cache) and built again. Its outputs are written anew."""
    started = time.monotonic()
    repo, settings = run.repo, run.settings
    persona = load_persona(settings.review.persona, repo.root)
    paths = [str(path) for path in meta.get("paths", [])]
    since = meta.get("diff_base") if isinstance(meta.get("diff_base"), str) else None
    selection, changed = await _selection(repo, settings, run.base, paths, since)
    tip = await git.ref_target(repo.root, run.target_ref)
    if tip is None:
        raise RepositoryError(f"the run's target {run.target_ref} no longer exists")
    recorded = journal.results()
    done = {path: result for path, result in recorded.items() if not unbegun(result)}
    # By the files each commit changed: a commit of a whole group names the group.
    landed = {
        path: commit.sha
        for commit in await git.stomper_commits(repo.root, tip, run.base)
        if commit.run == run.run_id
        for path in commit.files
    }
    execution = _Execution(
        run.run_id,
        repo,
        run.base,
        settings,
        persona,
        request,
        changed,
        since,
        run.target_ref,
        done=done,
        landed=landed,
        resumed=True,
        anew=len(done) < len(recorded),
    )
    return await execution.report(selection, started)


async def _selection(
    repo: Repository, settings: Settings, commit: str, paths: Sequence[str], since: str | None
) -> tuple[Selection, dict[str, list[tuple[int, int]]] | None]:
    """The files under ``paths`` at ``commit`` to review, and with ``since`` (``--diff``'s
    merge base) the lines changed since in each, only the files changed kept."""
    chosen = settings.review
    selection = await select(
        repo.root, commit, paths, include=chosen.include, exclude=chosen.exclude
    )
    if since is None:
        return selection, None
    changed = await git.changed_lines(repo.root, since, commit)
    return selection.only(path for path, spans in changed.items() if spans), changed


async def _apply_target(repo: Repository, settings: Settings) -> str:
    """The branch ``--apply`` lands on (the checked-out one), every check made before any
    request is paid for."""
    chosen = settings.review
    if not chosen.build_cmd:
        raise ConfigError(
            "--apply needs the command that builds a directory: --build-cmd "
            "'python -m pytest -q {dir}' (or build_cmd in [tool.stomper.review])"
        )
    program = split_build(chosen.build_cmd)[0]
    if "/" not in program and shutil.which(program) is None:
        raise ConfigError(
            f"build_cmd: no program {program!r} on PATH: install it, or name its path"
        )
    if repo.branch is None:
        raise ConfigError("HEAD is detached: check out the branch the edits are to land on")
    await require_index(repo)
    await require_identity(repo)
    return repo.branch


@dataclass
class _Execution:
    """One run of the review through the engine, new or resumed."""

    run_id: str
    repo: Repository
    base: str
    settings: Settings
    persona: Persona
    request: ReviewRequest
    changed: Mapping[str, Sequence[tuple[int, int]]] | None
    since: str | None
    target: str | None
    """The branch edits land on (``--apply``); None when nothing lands."""
    done: Mapping[str, UnitResult] = field(default_factory=dict)
    """Units finished before the run was cut short (a resume)."""
    landed: Mapping[str, str] = field(default_factory=dict)
    """Units whose commit is on the target (a resume), by path."""
    resumed: bool = False
    anew: bool = False
    """Whether the engine's graph starts anew, not from the run's checkpoints."""
    results: list[UnitResult] = field(default_factory=list)
    groups: list[GroupOutcome] = field(default_factory=list)

    async def report(self, selection: Selection, started: float) -> ReviewReport:
        """Review ``selection`` (what is not done yet), then the run's report."""
        agent = OpenAIChatAgent.from_settings(self.settings)
        status, peak = "completed", 0
        try:
            require_countable(self.request.limits, agent, self.settings)
            require_executor(self.request.limits, agent, self.settings, mode="review")
            await agent.ready()
            if selection.units:
                if self.target is None:
                    status, peak = await self.run(selection.units, agent)
                else:
                    async with hold_lock(self.repo.state, self.target, self.run_id):
                        await recover(self.repo)
                        status, peak = await self.run(selection.units, agent)
        finally:
            await agent.aclose()
        results = {**self.done, **{result.path: result for result in self.results}}
        chosen = self.settings.review
        return ReviewReport(
            self.run_id,
            status,
            self.base,
            self.persona.name,
            agent.model,
            self.since,
            tuple(sorted(results.values(), key=lambda result: result.path)),
            selection.left_out,
            time.monotonic() - started,
            peak,
            chosen.reflect,
            tuple(self.groups),
            chosen.apply,
            self.settings.price,
        )

    async def run(self, units: tuple[ReviewUnit, ...], agent: OpenAIChatAgent) -> tuple[str, int]:
        """Work ``units`` through the engine, each result put in ``results`` and the
        journal; the run's status and its peak of requests at once."""
        repo, settings, chosen = self.repo, self.settings, self.settings.review
        journal = Journal(repo.state.run_dir(self.run_id))
        applying = self.target is not None
        units, groups = _grouped(units, chosen.group_by if applying else "file")
        if self.resumed:
            journal.update(status="running", resumed=time.time())
        else:
            # Without --apply a review lands nothing: no target, a dry run as far as the
            # journal can tell.
            run = runner.Run(
                self.run_id,
                "review",
                repo,
                self.base,
                self.target or "",
                applying,
                settings,
                dry_run=not applying,
                limits=self.request.limits,
            )
            outputs = {"sarif": self.request.sarif, "markdown": self.request.markdown}
            journal.create(
                run.meta(units=len(units), paths=self.request.paths)
                | {"diff_base": self.since}
                | {name: str(path) for name, path in outputs.items() if path is not None}
            )
        limit = Limit(settings.parallel)
        cache = None
        if self.request.cache:
            cache = ReviewCache(
                repo.state.cache_dir("review"),
                model=agent.model,
                persona=self.persona,
                edits=applying,
            )
        policy = ReviewPolicy(
            self.persona,
            max_findings=chosen.max_findings,
            min_severity=chosen.min_severity,
            max_attempts=settings.max_attempts,
            chunk_lines=chosen.chunk_lines,
            changed=self.changed,
            reflect=chosen.reflect,
            reflect_threshold=chosen.reflect_threshold,
        )
        workspaces = Workspaces(
            repo.root,
            repo.state.worktrees(self.run_id),
            pool_size=chosen.max_parallel_builds + 1,  # one more made ready while they build
        )
        lander = None
        blobs = Blobs(repo.root)
        status = "failed"
        try:
            job_applying = None
            if self.target is not None and chosen.build_cmd:
                lander = Lander(
                    repo.root,
                    self.target,
                    run_id=self.run_id,
                    index_file=journal.index_file,
                    checked_out=True,
                    landed=self.landed,
                    user_index=repo.git_dir / "index",
                )
                builder = Builder(
                    split_build(chosen.build_cmd),
                    workspaces=workspaces,
                    sandbox=await sandbox.resolve(settings.sandbox, agent="the build"),
                    timeout=chosen.build_timeout,
                    parallel=chosen.max_parallel_builds,
                )
                job_applying = Applying(
                    builder,
                    lander,
                    lessons.Lessons(repo.state.root / lessons.FILE_NAME),
                    chosen.group_by,
                    chosen.build_attempts,
                    chosen.commit_per,
                )
            budget = Budget(self.request.limits, settings.price)
            job = ReviewJob(agent, blobs, policy, limit, cache, job_applying, budget)

            def record(result: UnitResult) -> None:
                self.results.append(result)
                journal.record(result)

            context = RunContext(
                units=units,
                job=job,
                record=record,
                wave=wave_size(limit.units),
                done=frozenset(self.done),
                groups=groups,
            )
            left = sum(1 for unit in units if unit.path not in self.done)
            group_by = chosen.group_by
            view = console.ProgressView(
                left,
                title=f"reviewing {left} files",
                enabled=self.request.progress,
                endings=REVIEW_ENDINGS,
                building=applying,
                groups={
                    unit.path: group_of(unit.path, group_by)
                    for unit in units
                    if unit.path not in self.done
                },
                group_noun="directories" if group_by == "dir" else "groups",
                price=settings.price,
            )
            try:
                status = await runner.drive(
                    context,
                    journal,
                    checkpointer=settings.checkpointer,
                    view=view,
                    head=limit.units,
                    # A unit the budget left unbegun is reviewed in a graph of its own: the
                    # run's graph has it done.
                    thread=f"{self.run_id}+{time.time_ns()}" if self.anew else None,
                )
                status = ended(status, budget, self.results)
            finally:
                self.groups.extend(job.groups)
        finally:
            await blobs.aclose()
            if lander is not None:
                await asyncio.shield(lander.aclose())
            await asyncio.shield(workspaces.aclose())
            workspaces.close()
            journal.index_file.unlink(missing_ok=True)
            journal.update(status=status, finished=time.time())
        return status, limit.peak


def _grouped(
    units: Sequence[ReviewUnit], group_by: str
) -> tuple[tuple[ReviewUnit, ...], list[list[int]]]:
    """``units`` in the order their groups are worked, each group's files side by side, and
    the indexes of each group: by directory, by file, or the whole repository as one."""

    ordered = sorted(units, key=lambda unit: (group_of(unit.path, group_by), unit.path))
    ordered = [replace(unit, index=at) for at, unit in enumerate(ordered)]
    groups: list[list[int]] = []
    last = None
    for unit in ordered:
        if not groups or group_of(unit.path, group_by) != last:
            groups.append([])
            last = group_of(unit.path, group_by)
        groups[-1].append(unit.index)
    return tuple(ordered), groups


async def _merge_base(repo: Repository, ref: str) -> str:
    """The merge base of ``ref`` and HEAD: where the change a pull request from HEAD into
    ``ref`` would show begins."""
    against = await git.resolve_commit(repo.root, ref)
    if against is None:
        raise ConfigError(f"--diff: {ref!r} is not a commit (fetch it first?)")
    since = await git.merge_base(repo.root, against, repo.head)
    if since is None:
        raise ConfigError(f"--diff: {ref} and HEAD share no history")
    return since


def _check_outputs(request: ReviewRequest) -> None:
    """Refuse, before any request is paid for, an output file that cannot be written."""
    for flag, path in (("--sarif", request.sarif), ("--markdown", request.markdown)):
        if path is None:
            continue
        if path.is_dir():
            raise ConfigError(f"{flag} {path}: is a folder: give the path of a file")
        if not path.parent.is_dir():
            raise ConfigError(f"{flag} {path}: no folder {path.parent}")


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise RepositoryError(f"cannot write {path}: {exc}") from exc


# How the summary names the end of a group's build.
_BUILDS = {"none": "without edits", "base_failed": "failing at the base too"}


def _print_summary(report: ReviewReport) -> None:
    totals = report.totals()
    findings = sorted(report.findings, key=lambda f: (f.path, f.line))
    if findings and len(findings) <= 200:
        table = Table(title="Findings", title_justify="left", show_edge=False)
        for column in ("where", "severity", "rule", "finding"):
            table.add_column(column, overflow="fold")
        for finding in findings:
            table.add_row(
                redaction.redact(f"{finding.path}:{finding.line}"),
                finding.severity,
                finding.rule,
                redaction.redact(finding.message),
            )
        console.err.print(table)
    for result in report.results:
        if result.status is Status.FAILED:
            console.info(f"failed  {result.path}: {result.reason}", markup=False)
    counts = ", ".join(f"{totals[name]} {name}" for name in SEVERITIES)
    reviewed = totals["reviewed"] + totals["applied"] + totals["rolled_back"]
    applied = ""
    if report.applied:
        builds = Counter(_BUILDS.get(group.build, group.build) for group in report.groups)
        ended = ", ".join(f"{count} {name}" for name, count in sorted(builds.items()))
        applied = (
            f"; {totals['applied']} edits applied, {totals['rolled_back']} rolled back, "
            f"{totals['builds']} builds (groups: {ended or 'none'})"
        )
    console.info(
        f"stomper review · run {report.run_id} · {report.status}: "
        f"{reviewed} files reviewed ({totals['cached']} from the cache), "
        f"{totals['failed']} failed, {totals['skipped'] + totals['left_out']} left out; "
        f"{totals['findings']} findings ({counts}); {totals['unlocated']} dropped as unlocated, "
        f"{totals['cut']} cut by --max-findings/--min-severity"
        + (f", {totals['outside_diff']} outside the change" if report.since else "")
        + (f", {totals['refuted']} refuted by --reflect" if report.reflected else "")
        + applied
        + (f"; ${report.cost:.4f} at the model's price" if report.cost is not None else ""),
        markup=False,
    )
    if report.status == "interrupted":
        again = f"stomper resume {report.run_id}" if report.applied else "stomper review"
        console.info(f"interrupted: run `{again}` (reviewed files are cached)", markup=False)
