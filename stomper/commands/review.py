"""``stomper review``: a model reviews every file under the paths, N at once; findings out.

The files are read from the commit checked out (never from the working tree, which the
user may be editing), and nothing is written to the repository but the run's journal and
the review cache in its state folder. The findings go to the summary, ``--json``,
``--sarif FILE`` and ``--markdown FILE``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from stomper import console, git, redaction, runner
from stomper.agents.openai_chat import OpenAIChatAgent
from stomper.config import Settings
from stomper.errors import ConfigError, RepositoryError
from stomper.findings import SEVERITIES, Finding, Review
from stomper.journal import Journal, new_run_id
from stomper.report import EXIT_CLEAN, EXIT_INTERRUPTED, EXIT_REMAINING
from stomper.repository import Repository, open_repository, repo_relative, require_state
from stomper.review.cache import ReviewCache
from stomper.review.job import ReviewJob, ReviewPolicy
from stomper.review.markdown import review_markdown
from stomper.review.prompt import Persona, load_persona
from stomper.review.sarif import sarif_log
from stomper.review.units import ReviewUnit, select
from stomper.unit import REVIEW_ENDINGS, Status, UnitResult
from stomper.workflow.context import RunContext, wave_size
from stomper.workflow.limit import Limit


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
            "units": [_unit_json(result) for result in self.results],
            "totals": self.totals(),
            "metrics": {"wall_s": round(self.wall_s, 3), "peak_concurrency": self.peak},
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
        "attempts": result.attempts,
        **review.to_json(),
        "duration_s": round(result.duration_s, 3),
        "tokens": {"input": result.tokens_in, "output": result.tokens_out},
    }


async def review(request: ReviewRequest, settings: Settings) -> int:
    """Run ``stomper review``, print and write its outcome; the exit code."""
    report = await run_review(request, settings)
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
    chosen = settings.review
    persona = load_persona(chosen.persona, repo.root)
    paths = [await repo_relative(repo.root, request.cwd, given) for given in request.paths]
    selection = await select(
        repo.root, repo.head, paths, include=chosen.include, exclude=chosen.exclude
    )
    if paths and not selection.units and not selection.left_out:
        raise ConfigError(f"no file tracked at {', '.join(request.paths)}: nothing to review")
    since = changed = None
    if request.diff is not None:
        since, changed = await _changed(repo, request.diff)
        selection = selection.only(path for path, spans in changed.items() if spans)
    agent = OpenAIChatAgent.from_settings(settings)
    model = agent.model
    run_id = new_run_id()
    results: list[UnitResult] = []
    status, peak = "completed", 0
    try:
        await agent.ready()
        if selection.units:
            status, peak = await _execute(
                run_id, repo, settings, persona, selection.units, agent, request, results, changed
            )
    finally:
        await agent.aclose()
    return ReviewReport(
        run_id,
        status,
        repo.head,
        persona.name,
        model,
        since,
        tuple(sorted(results, key=lambda result: result.path)),
        selection.left_out,
        time.monotonic() - started,
        peak,
        chosen.reflect,
    )


async def _execute(
    run_id: str,
    repo: Repository,
    settings: Settings,
    persona: Persona,
    units: tuple[ReviewUnit, ...],
    agent: OpenAIChatAgent,
    request: ReviewRequest,
    results: list[UnitResult],
    changed: Mapping[str, Sequence[tuple[int, int]]] | None,
) -> tuple[str, int]:
    """Review ``units`` through the engine, each result put in ``results`` and the journal;
    the run's status and its peak of requests at once."""
    journal = Journal(repo.state.run_dir(run_id))
    # A review lands nothing: no target, and a dry run as far as the journal can tell.
    run = runner.Run(run_id, "review", repo, repo.head, "", False, settings, dry_run=True)
    journal.create(run.meta(units=len(units), paths=request.paths))
    limit = Limit(settings.max_parallel_files)
    objects = git.ObjectReader(repo.root)
    cache = None
    if request.cache:
        cache = ReviewCache(repo.state.cache_dir("review"), model=agent.model, persona=persona)
    chosen = settings.review
    policy = ReviewPolicy(
        persona,
        max_findings=chosen.max_findings,
        min_severity=chosen.min_severity,
        max_attempts=settings.max_attempts,
        chunk_lines=chosen.chunk_lines,
        changed=changed,
        reflect=chosen.reflect,
        reflect_threshold=chosen.reflect_threshold,
    )
    job = ReviewJob(agent, objects, policy, limit, cache)

    def record(result: UnitResult) -> None:
        results.append(result)
        journal.record(result)

    context = RunContext(units=units, job=job, record=record, wave=wave_size(limit.units))
    view = console.ProgressView(
        len(units),
        title=f"reviewing {len(units)} files",
        enabled=request.progress,
        endings=REVIEW_ENDINGS,
    )
    status = "failed"
    try:
        status = await runner.drive(
            context, journal, checkpointer=settings.checkpointer, view=view, head=limit.units
        )
    finally:
        await objects.aclose()
        journal.update(status=status, finished=time.time())
    return status, limit.peak


async def _changed(repo: Repository, ref: str) -> tuple[str, dict[str, list[tuple[int, int]]]]:
    """The merge base of ``ref`` and HEAD, and the lines HEAD changed since, by file: what a
    pull request from HEAD into ``ref`` would show."""
    against = await git.resolve_commit(repo.root, ref)
    if against is None:
        raise ConfigError(f"--diff: {ref!r} is not a commit (fetch it first?)")
    since = await git.merge_base(repo.root, against, repo.head)
    if since is None:
        raise ConfigError(f"--diff: {ref} and HEAD share no history")
    return since, await git.changed_lines(repo.root, since, repo.head)


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
    console.info(
        f"stomper review · run {report.run_id} · {report.status}: "
        f"{totals['reviewed']} files reviewed ({totals['cached']} from the cache), "
        f"{totals['failed']} failed, {totals['skipped'] + totals['left_out']} left out; "
        f"{totals['findings']} findings ({counts}); {totals['unlocated']} dropped as unlocated, "
        f"{totals['cut']} cut by --max-findings/--min-severity"
        + (f", {totals['outside_diff']} outside the change" if report.since else "")
        + (f", {totals['refuted']} refuted by --reflect" if report.reflected else ""),
        markup=False,
    )
    if report.status == "interrupted":
        console.info("interrupted: run `stomper review` again (reviewed files are cached)")
