"""``review`` as a job of the engine: each unit is one file, asked of the model, its answer
read into findings placed by their quotes.

A unit reads its file from the base commit (never the checkout, which the user may be
editing), asks the model under one of the run's N agents' places (a large file in parts,
each its own request, side by side: :mod:`stomper.review.chunks`), and reads each answer by
the contract of :mod:`stomper.review.prompt`. An answer that cannot be read goes back to the
model with what was wrong, up to ``max_attempts``; the same answer twice ends the question,
as asking again would only pay for it a third time. With ``reflect``, a second question
scores the findings, and those the model is not sure of are left out.

Without ``--apply`` nothing lands: the findings are the result. With it (:class:`Applying`),
the model's edits pass the guardrails (the reviewed file only, no secret of the run's, no
suppression, the file still parses), and edits that fail them twice are left out while the
findings stand. A group's units (a directory's files) are worked together: once all are
reviewed, their edits are built together at the target's tip (:mod:`stomper.review.build`);
a build that fails is told to the model for another round or more, then bisected, and the
edits proven to build land in one move of the branch, or none does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar, cast

from stomper import git, redaction
from stomper.agents import AttemptFailed, edits
from stomper.agents.openai_chat import Answer
from stomper.budget import NOT_BEGUN, Budget, Spent
from stomper.events import Phase
from stomper.findings import Finding, Review, Severity
from stomper.guardrails import suppression_violation
from stomper.landing import Landed, Lander, subject_place
from stomper.review import answer
from stomper.review.build import Bisected, bisect
from stomper.review.cache import Cached, ReviewCache
from stomper.review.chunks import CHUNK_LINES, Chunk, chunked, parses
from stomper.review.lessons import Lessons, change_of, lesson
from stomper.review.prompt import Persona, reflect_prompt, review_prompt
from stomper.review.units import ReviewUnit, directory_of, group_of, unreviewable
from stomper.store import Blobs
from stomper.unit import Patch, Status, UnitResult, quote_path
from stomper.workflow.build import Builder, Built, Edited
from stomper.workflow.job import Emit, EmitFor, Produced
from stomper.workflow.limit import Limit

T = TypeVar("T")


class Reviewer(Protocol):
    """A model that answers one question at a time (the OpenAI-compatible agent)."""

    async def ask(self, system: str, prompt: str) -> Answer: ...


@dataclass(frozen=True)
class ReviewPolicy:
    persona: Persona
    max_findings: int = 5
    min_severity: Severity | None = None
    """The least severe finding kept; None for the persona's own floor."""
    max_attempts: int = 3
    chunk_lines: int = CHUNK_LINES
    """A file of more lines is reviewed in parts of whole definitions, one request each."""
    changed: Mapping[str, Sequence[tuple[int, int]]] | None = None
    """With ``--diff``: the lines of each file the change touched (first, last); findings
    elsewhere are left out."""
    reflect: bool = False
    """Ask a second, short question: how sure the model is of each finding (0-10)."""
    reflect_threshold: int = 6
    """With ``reflect``: a finding scored under this is left out."""


@dataclass(frozen=True)
class Applying:
    """What ``--apply`` needs beyond the review: where the edits are built and landed (the
    lander knows the repository, the branch and the run)."""

    builder: Builder
    lander: Lander
    lessons: Lessons
    group_by: str = "dir"
    """What the files are grouped by: ``dir``, ``file`` or ``repo``."""
    build_attempts: int = 1
    commit_per: str = "file"
    """``file``: a commit per landed file; ``dir``: one for the group."""


@dataclass
class GroupOutcome:
    """How a group's edits fared at its build."""

    name: str
    directory: str
    paths: tuple[str, ...] = ()
    """The group's files."""
    build: str = "none"
    """``none`` (no edit to build), ``passed``, ``bisected`` (some edits rolled back),
    ``failed`` (every edit rolled back), ``base_failed`` (the build fails without the
    edits too: none applied), or ``landed before`` (on resume: it landed before the run was
    cut short)."""
    builds: int = 0
    edits: int = 0
    """Edits that reached the build."""
    seconds: float = 0.0
    """Time its builds took."""

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.name,
            "directory": self.directory,
            "build": self.build,
            "builds": self.builds,
            "edits": self.edits,
            "build_s": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class _Edit:
    """A reviewed file's edit, before its build."""

    unit: ReviewUnit
    source: str
    edited: str


@dataclass
class _Asked(Generic[T]):
    """What the requests of one question came to: the answer read, or why there is none."""

    value: T | None = None
    failure: str | None = None
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    agent_s: float = 0.0
    note: str | None = None
    """What was left out of a readable answer (its edits), and why."""


class ReviewJob:
    """Reviews the files of one run; made per run."""

    def __init__(
        self,
        reviewer: Reviewer,
        blobs: Blobs,
        policy: ReviewPolicy,
        limit: Limit,
        cache: ReviewCache | None = None,
        applying: Applying | None = None,
        budget: Budget | None = None,
    ) -> None:
        self.reviewer = reviewer
        self.budget = budget or Budget()
        """What the run's requests may spend."""
        self.blobs = blobs
        """Where files are read from, and the blobs of landed edits written to."""
        self.policy = policy
        self.cache = cache
        self.applying = applying
        self.groups: list[GroupOutcome] = []
        """Each group's build, as its units finished."""
        self._limit = limit
        # Read once, and again after each lesson this run learns: not once per question, and
        # the prompt and the cache's key of one file see the same ones.
        self._taught = applying.lessons.by_directory() if applying is not None else {}

    @property
    def limit(self) -> Limit:
        return self._limit

    async def produce_many(self, units: Sequence[ReviewUnit], emit: EmitFor) -> list[Produced]:
        reviewed = await asyncio.gather(*(self._produce(unit, emit(unit.path)) for unit in units))
        produced = [one for one, _edit in reviewed]
        if self.applying is None:
            return produced
        made = [edit for _one, edit in reviewed if edit is not None]
        try:
            return await self._gate(self.applying, units, produced, made, emit)
        except Exception as exc:  # the group's failure is its units' result, never a raise
            why = f"its edit was not applied: {type(exc).__name__}: {exc}"
            edited = _paths(made)
            return [_noted(one, why) if one.result.path in edited else one for one in produced]

    async def produce(self, unit: ReviewUnit, emit: Emit) -> Produced:
        """The unit's findings, or why it has none; a failure is a result, never a raise."""
        return (await self._produce(unit, emit))[0]

    async def _produce(self, unit: ReviewUnit, emit: Emit) -> tuple[Produced, _Edit | None]:
        started = time.monotonic()
        edit = None
        try:
            result, edit = await self._review(unit, emit)
        except Exception as exc:  # one unit's failure must not cancel its siblings
            result = UnitResult(
                unit.path, Status.FAILED, (), attempts=1, reason=f"{type(exc).__name__}: {exc}"
            )
        result = replace(result, duration_s=time.monotonic() - started)
        return Produced(result, started=started), edit

    async def land_many(self, produced: Sequence[Produced], emit: EmitFor) -> list[UnitResult]:
        landing = [(one.result, one.patch) for one in produced if one.patch is not None]
        if self.applying is None or not landing:
            return [one.result for one in produced]
        for result, _patch in landing:
            emit(result.path)(Phase.LANDING)
        settled = dict(
            zip(
                (result.path for result, _patch in landing),
                await self._land(self.applying, landing),
                strict=True,
            )
        )
        results = []
        for one in produced:
            outcome = settled.get(one.result.path)
            if isinstance(outcome, Landed):
                results.append(_applied(one.result, outcome.commit, outcome.seconds))
            elif isinstance(outcome, Exception):
                results.append(replace(one.result, reason=f"its edit did not land: {outcome}"))
            else:
                results.append(one.result)
        return results

    async def _land(
        self, applying: Applying, landing: Sequence[tuple[UnitResult, Patch]]
    ) -> list[Landed | Exception]:
        """Land a group's patches whole: a commit each, or one for them all; for each, where
        it landed or why it did not."""
        persona, run_id = self.policy.persona.name, applying.lander.run_id
        if applying.commit_per == "dir" and len(landing) > 1:
            results = [result for result, _patch in landing]
            name = group_of(results[0].path, applying.group_by)
            message = _group_message(name, results, persona, run_id)
            patches = [patch for _result, patch in landing]
            (outcome,) = await applying.lander.land_commits([(patches, message)])
            return [outcome] * len(landing)
        commits = [(patch, _message(result, persona, run_id)) for result, patch in landing]
        return await applying.lander.land_many(commits, whole=True)

    def landed(self, produced: Produced) -> UnitResult | None:
        if self.applying is None or produced.patch is None:
            return None
        commit = self.applying.lander.landed.get(produced.result.path)
        return _applied(produced.result, commit, 0.0) if commit is not None else None

    async def _gate(
        self,
        applying: Applying,
        units: Sequence[ReviewUnit],
        produced: list[Produced],
        made: list[_Edit],
        emit: EmitFor,
    ) -> list[Produced]:
        """Build the group's edits at the target's tip, and bisect them when the build
        fails: the units whose edits build, each with the patch to land, and the others
        with why theirs does not."""
        name = group_of(units[0].path, applying.group_by)
        directory = directory_of(units[0].path, applying.group_by)
        outcome = GroupOutcome(name, directory, tuple(unit.path for unit in units))
        self.groups.append(outcome)
        landed = applying.lander.landed
        if any(one.result.path in landed for one in produced):
            # Landed before the run was cut short, and whole: nothing else of it ever will.
            outcome.build = "landed before"
            return [_landed_before(one, landed, _paths(made)) for one in produced]
        why: dict[str, str] = {}
        rolled_back: set[str] = set()
        root, target = applying.lander.root, applying.lander.target_ref
        dirty = await git.changed_paths(root, sorted(_paths(made)))
        for path in dirty:
            why[path] = "its edit was not applied: the file has changes of yours not committed"
        tip = await git.resolve_commit(root, target)
        if tip is None:
            raise LookupError(f"the target {target} no longer exists")
        at_tip = await git.tree_entries(root, tip, [edit.unit.path for edit in made])
        for edit in made:
            entry = at_tip.get(edit.unit.path)
            if edit.unit.path not in why and (entry is None or entry.blob != edit.unit.blob):
                why[edit.unit.path] = (
                    "its edit was not applied: the file changed on the branch since it was read"
                )
        made = [edit for edit in made if edit.unit.path not in why]
        kept: list[_Edit] = []
        if made:
            for edit in made:
                emit(edit.unit.path)(Phase.BUILDING)
            kept = await self._settle(applying, outcome, tip, made, why, rolled_back, produced)
        by_path = {edit.unit.path: edit for edit in kept}
        settled = []
        for one in produced:
            path = one.result.path
            if path in by_path:
                settled.append(replace(one, patches=(await _patch(self.blobs, by_path[path]),)))
            elif path in why:
                status = Status.ROLLED_BACK if path in rolled_back else one.result.status
                result = replace(one.result, status=status, reason=why[path])
                settled.append(replace(one, result=result))
            else:
                settled.append(one)
        return settled

    async def _settle(
        self,
        applying: Applying,
        outcome: GroupOutcome,
        tip: str,
        made: list[_Edit],
        why: dict[str, str],
        rolled_back: set[str],
        produced: list[Produced],
    ) -> list[_Edit]:
        """The edits of ``made`` that build together (the rest get their reason in
        ``why``, and those the build refused are ``rolled_back``), counting the builds in
        ``outcome``."""
        directory = outcome.directory

        async def build(edits_: Sequence[_Edit]) -> Built:
            first = outcome.builds == 0
            made_ = [_edited(edit) for edit in edits_]
            built = await applying.builder.build(tip, directory, made_, first=first)
            outcome.builds += 1
            outcome.seconds += built.seconds
            return built

        outcome.edits = len(made)
        built = await build(made)
        if built.passed:
            outcome.build = "passed"
            return made
        # The build at the base and the round back to the model need nothing of each other.
        rounds = applying.build_attempts > 0
        base, revised = await asyncio.gather(
            build([]), self._revise(made, built, produced) if rounds else _nothing(made)
        )
        if not base.passed:
            outcome.build = "base_failed"
            for edit in made:
                why[edit.unit.path] = (
                    f"its edit was not applied: the build of {directory} fails without "
                    f"the edits too:\n{base.tail(10)}"
                )
            return []
        for round_ in range(applying.build_attempts):
            if round_ > 0:
                revised = await self._revise(made, built, produced)
            if [e.edited for e in revised] == [e.edited for e in made]:
                break  # the same edits again: building them again would only fail again
            for path in _paths(made) - _paths(revised):
                why[path] = "its edit was withdrawn after the build failed"
            made = revised
            if not made:
                return []
            built = await build(made)
            if built.passed:
                outcome.build = "passed"
                return made
        by_path = {edit.unit.path: edit for edit in made}
        found: Bisected = await bisect(
            lambda subset: build([by_path[e.path] for e in subset]),
            [_edited(edit) for edit in made],
            built,
        )
        kept = [by_path[e.path] for e in found.kept]
        outcome.build = "bisected" if kept else "failed"
        taught = []
        for path, failed in found.culprits.items():
            about = failed.about(path)
            rolled_back.add(path)
            why[path] = f"rolled back: the build of {directory} fails with it:\n{about}"
            edit = by_path[path]
            change = change_of(edit.source, edit.edited)
            taught.append(lesson(directory, path, change, about, applying.lander.run_id))
        if taught:
            applying.lessons.add(taught)
            self._taught = applying.lessons.by_directory()
        return kept

    async def _revise(
        self, made: list[_Edit], built: Built, produced: list[Produced]
    ) -> list[_Edit]:
        """Each edited file asked again, with what the build said of the edits: the edits
        that come back (a file whose answer holds none drops out)."""
        failure = built.tail(40)

        async def again(edit: _Edit) -> _Edit | None:
            unit, source = edit.unit, edit.source
            lines = max(len(source.splitlines()), 1)
            question = self._review_of(unit, source, Chunk(1, lines), build_failure=failure)
            asked = await self._ask(question, lambda phase: None, urgent=True)
            _count(produced, unit.path, asked)
            reading = asked.value
            if reading is None or not reading.edits:
                return None
            try:
                edited = edits.apply_to(reading.edits, unit.path, source)
            except AttemptFailed:
                return None
            return replace(edit, edited=edited) if edited != source else None

        revised = await asyncio.gather(*(again(edit) for edit in made))
        return [edit for edit in revised if edit is not None]

    async def _review(self, unit: ReviewUnit, emit: Emit) -> tuple[UnitResult, _Edit | None]:
        emit(Phase.ISOLATING)
        content = await self.blobs.read(unit.blob)
        why = unreviewable(content)
        if why is not None:
            return UnitResult(unit.path, Status.SKIPPED, (), reason=why), None
        source = content.decode("utf-8")
        lessons = self._lessons_of(unit)
        found = self.cache.get(unit.blob, unit.path, lessons) if self.cache is not None else None
        asked: list[_Asked[Any]] = []
        notes: list[str] = []
        reached = self.budget.exhausted()
        if found is None and reached is not None:
            why = f"{NOT_BEGUN}the run's {reached} is spent"
            return UnitResult(unit.path, Status.SKIPPED, (), reason=why), None
        if found is None:
            # Finding where a large file's definitions begin parses it: off the event loop.
            parts = await asyncio.to_thread(
                chunked, unit.path, source, chunk_lines=self.policy.chunk_lines
            )
            readings = await asyncio.gather(
                *(self._ask(self._review_of(unit, source, part), emit) for part in parts)
            )
            asked += readings
            failed = [(part, one) for part, one in zip(parts, readings, strict=True) if one.failure]
            if failed:
                part, one = failed[0]
                where = f" (lines {part.first}-{part.last})" if len(parts) > 1 else ""
                return _spent(self._failed(unit, f"{one.failure}{where}"), asked), None
            notes += [one.note for one in readings if one.note]
            read = [one.value for one in readings if one.value is not None]
            found = Cached(
                _unique(finding for reading in read for finding in reading.findings),
                sum(reading.unlocated for reading in read),
                sum(reading.malformed for reading in read),
                edited=_edited_text(unit.path, source, read),
            )
        if self.policy.reflect and not found.reflected and found.findings:
            scoring = await self._ask(self._scores_of(unit, source, found.findings), emit)
            asked.append(scoring)
            if scoring.failure:
                notes.append(f"--reflect: {scoring.failure}; the findings are kept unscored")
            if scoring.value is not None:
                scores = scoring.value
                scored = tuple(
                    replace(finding, score=scores.get(number))
                    for number, finding in enumerate(found.findings, 1)
                )
                found = replace(found, findings=scored, reflected=True)
        if asked and self.cache is not None:
            self.cache.put(unit.blob, found, lessons)
        result = self._result(unit, found, cached=not asked)
        result = replace(result, reason="; ".join(notes) or None)
        edit = None
        if found.edited is not None and result.review is not None and result.review.findings:
            edit = _Edit(unit, source, found.edited)
        return _spent(result, asked), edit

    def _lessons_of(self, unit: ReviewUnit) -> list[str]:
        """What earlier builds of the unit's directory taught, when edits are asked for."""
        if self.applying is None:
            return []
        return self._taught.get(directory_of(unit.path, self.applying.group_by), [])

    def _review_of(
        self,
        unit: ReviewUnit,
        source: str,
        part: Chunk,
        *,
        build_failure: str | None = None,
    ) -> _Question[answer.Reading]:
        """The question of the findings in ``part`` of the file (and, when edits are asked
        for, of the edits that fix them)."""
        persona = self.policy.persona
        shown = "\n".join(source.splitlines()[part.first - 1 : part.last])
        asks_edits = self.applying is not None
        lessons = self._lessons_of(unit)

        def prompt(feedback: str | None) -> str:
            return review_prompt(
                unit.path,
                source,
                persona,
                part=part,
                feedback=feedback,
                edits=asks_edits,
                lessons=lessons,
                build_failure=build_failure,
            )

        def read(text: str) -> answer.Reading:
            reading = answer.read(text, unit.path, shown, first_line=part.first)
            if not asks_edits or edits.SEARCH_MARKER not in text:
                return reading
            try:
                blocks = edits.parse(text)
                edited = edits.apply_to(blocks, unit.path, source)
            except AttemptFailed as failed:
                raise answer.Unreadable(failed.feedback, partial=reading) from None
            unfit = _unfit(unit.path, source, edited)
            if unfit is not None:
                raise answer.Unreadable(
                    f"Your edits were not applied: {unfit}. Fix the code itself, in this file "
                    "only, or leave the finding without an edit.",
                    partial=reading,
                )
            return replace(reading, edits=tuple(blocks))

        return _Question(unit.path, prompt, read)

    def _scores_of(
        self, unit: ReviewUnit, source: str, findings: Sequence[Finding]
    ) -> _Question[dict[int, int]]:
        """The question of how sure the model is of each of ``findings``."""

        def prompt(feedback: str | None) -> str:
            return reflect_prompt(unit.path, source, findings, feedback=feedback)

        def read(text: str) -> dict[int, int]:
            return answer.read_scores(text, len(findings))

        return _Question(unit.path, prompt, read)

    async def _ask(self, question: _Question[T], emit: Emit, *, urgent: bool = False) -> _Asked[T]:
        """The model's answer to ``question``, read; asked again with what was wrong while
        it cannot be read, up to ``max_attempts``, and not again once it repeats itself."""
        system = self.policy.persona.system
        feedback: str | None = None
        said: list[str] = []
        unfit = 0
        asked: _Asked[T] = _Asked()
        for attempt in range(1, self.policy.max_attempts + 1):
            asked.attempts = attempt
            prompt = question.prompt(feedback)
            try:
                call = self.budget.take(question.path)
            except Spent as spent:
                asked.failure = f"stopped: {spent}"
                return asked
            if self._limit.waiting():
                emit(Phase.WAITING)
            async with call, self._limit.call(urgent=urgent):
                emit(Phase.AGENT)
                began = time.monotonic()
                try:
                    reply = await self.reviewer.ask(system, prompt)
                except AttemptFailed as failed:
                    asked.tokens_in += failed.tokens_in
                    asked.tokens_out += failed.tokens_out
                    self.budget.spend(question.path, failed.tokens_in, failed.tokens_out)
                    feedback = failed.feedback
                    continue
                finally:
                    asked.agent_s += time.monotonic() - began
            emit(Phase.VERIFYING)
            asked.tokens_in += reply.tokens_in
            asked.tokens_out += reply.tokens_out
            self.budget.spend(question.path, reply.tokens_in, reply.tokens_out)
            try:
                asked.value = question.read(reply.text)
                return asked
            except answer.Unreadable as unreadable:
                feedback = str(unreadable)
                if unreadable.partial is not None:
                    unfit += 1
                    if unfit == 2 or attempt == self.policy.max_attempts:
                        # Edits that fail twice end the question: the findings stand.
                        asked.value = cast(T, unreadable.partial)
                        why = " ".join(feedback.split())[:_NOTE_CHARS]
                        asked.note = f"its edits were left out: {why}"
                        return asked
                if reply.text in said:
                    asked.failure = f"the same unreadable answer twice: {feedback}"
                    return asked
                said.append(reply.text)
        asked.failure = f"no readable answer in {asked.attempts} attempts: {feedback}"
        return asked

    def _result(self, unit: ReviewUnit, found: Cached, *, cached: bool) -> UnitResult:
        floor = self.policy.min_severity or self.policy.persona.min_severity
        findings = found.findings
        refuted = 0
        if self.policy.reflect:
            threshold = self.policy.reflect_threshold
            sure = tuple(f for f in findings if f.score is None or f.score >= threshold)
            findings, refuted = sure, len(findings) - len(sure)
        if self.policy.changed is not None:
            spans = self.policy.changed.get(unit.path, ())
            findings = tuple(finding for finding in findings if _touches(finding, spans))
        kept, cut = answer.keep(findings, max_findings=self.policy.max_findings, min_severity=floor)
        outside = len(found.findings) - refuted - len(findings)
        review = Review(
            tuple(kept), found.unlocated, found.malformed, cut, outside, refuted, cached
        )
        return UnitResult(unit.path, Status.REVIEWED, (), review=review)

    def _failed(self, unit: ReviewUnit, reason: str) -> UnitResult:
        return UnitResult(unit.path, Status.FAILED, (), reason=reason)


@dataclass(frozen=True)
class _Question(Generic[T]):
    """One thing to ask the model: the prompt (given the feedback on the last answer, if
    any) and what reads the answer (raising :class:`~stomper.review.answer.Unreadable`)."""

    path: str
    """The file it is of."""
    prompt: Callable[[str | None], str]
    read: Callable[[str], T]


def _spent(result: UnitResult, asked: Sequence[_Asked[Any]]) -> UnitResult:
    """``result`` with the requests ``asked`` counted in it."""
    if not asked:
        return result
    return replace(
        result,
        attempts=max(one.attempts for one in asked),
        tokens_in=sum(one.tokens_in for one in asked),
        tokens_out=sum(one.tokens_out for one in asked),
        agent_s=sum(one.agent_s for one in asked),
    )


def _unique(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """``findings`` without the repeats that parts overlapping each other gave (the same
    rule on the same line), in the order they came."""
    seen: set[tuple[str, int]] = set()
    kept = []
    for finding in findings:
        if (finding.rule, finding.line) not in seen:
            seen.add((finding.rule, finding.line))
            kept.append(finding)
    return tuple(kept)


def _touches(finding: Finding, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the lines of ``finding`` meet one of ``spans``."""
    return any(first <= finding.end_line and finding.line <= last for first, last in spans)


async def _nothing(made: list[_Edit]) -> list[_Edit]:
    """No round back to the model: the edits as they are."""
    return made


def _paths(made: Iterable[_Edit]) -> set[str]:
    return {edit.unit.path for edit in made}


def _noted(one: Produced, why: str) -> Produced:
    return replace(one, result=replace(one.result, reason=why))


def _landed_before(one: Produced, landed: Mapping[str, str], edited: set[str]) -> Produced:
    """``one`` as a group that landed before the run was cut short leaves it."""
    path = one.result.path
    if path in landed:
        result = _applied(one.result, landed[path], 0.0)
        return replace(one, result=replace(result, reason="landed before the run was cut short"))
    if path in edited:
        return _noted(one, "its edit did not land with its directory before the run was cut short")
    return one


def _applied(result: UnitResult, commit: str, seconds: float) -> UnitResult:
    return replace(result, status=Status.APPLIED, commit=commit, landing_s=seconds)


def _count(produced: list[Produced], path: str, asked: _Asked[Any]) -> None:
    """Add the requests ``asked`` for the unit at ``path`` to its result in ``produced``."""
    for at, one in enumerate(produced):
        if one.result.path == path:
            result = one.result
            produced[at] = replace(
                one,
                result=replace(
                    result,
                    attempts=result.attempts + asked.attempts,
                    tokens_in=result.tokens_in + asked.tokens_in,
                    tokens_out=result.tokens_out + asked.tokens_out,
                    agent_s=result.agent_s + asked.agent_s,
                ),
            )


def _encoded(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogateescape")


def _edited(edit: _Edit) -> Edited:
    return Edited(edit.unit.path, edit.unit.mode, edit.unit.blob, _encoded(edit.edited))


async def _patch(blobs: Blobs, edit: _Edit) -> Patch:
    """The patch that lands ``edit``, its blob stored (by git, as ``hash-object -w``)."""
    content = _encoded(edit.edited)
    blob = await blobs.write(edit.unit.path, content)
    return Patch(edit.unit.path, edit.unit.mode, edit.unit.blob, blob)


def _edited_text(path: str, source: str, readings: Sequence[answer.Reading]) -> str | None:
    """The file after the edits of every part's answer, in order; a part's edits that no
    longer apply after those of the parts before (overlapping parts) are left out."""
    text = source
    for reading in readings:
        if reading.edits:
            with contextlib.suppress(AttemptFailed):
                text = edits.apply_to(reading.edits, path, text)
    return text if text != source else None


def _unfit(path: str, before: str, after: str) -> str | None:
    """Why an edit from ``before`` to ``after`` may not land, if it may not: it writes a
    secret of the run's into the file, silences a tool, or leaves a file that parsed one that
    does not."""
    leak = redaction.active().written(_encoded(before), _encoded(after))
    if leak is not None:
        return leak
    silenced = suppression_violation(before, after, ())
    if silenced is not None:
        return silenced
    if parses(path, after) is False and parses(path, before) is not False:
        return f"the edited `{path}` no longer parses"
    return None


def _message(result: UnitResult, persona: str, run_id: str) -> str:
    """The commit of a landed edit: ``review(<persona>): <first finding> in <path>``, the
    findings in its body, and the trailers that record the run and the unit."""
    findings = result.review.findings if result.review is not None else ()
    what = findings[0].rule if findings else "edit"
    action = f"review({persona}): {what}"
    name = quote_path(result.path)
    place = subject_place(result.path, _SUBJECT_MAX - len(action) - len(" in "))
    subject = f"{action} in {place}" if place else action
    where = "" if place == name else f"File: {name}\n\n"
    said = "\n".join(
        f"- {finding.rule} at line {finding.line}: {' '.join(finding.message.split())}"
        for finding in findings
    )
    return f"{subject}\n\n{where}Findings:\n{said}\n\nStomper-Run: {run_id}\nStomper-Unit: {name}\n"


def _group_message(name: str, results: Sequence[UnitResult], persona: str, run_id: str) -> str:
    """The one commit of group ``name``'s landed edits (``--commit-per dir``): the findings
    of each file in its body, and the trailers that record the run and the group."""
    count = sum(len(result.review.findings) for result in results if result.review is not None)
    action = f"review({persona}): {count} findings in {len(results)} files"
    place = subject_place(name, _SUBJECT_MAX - len(action) - len(" of "))
    subject = f"{action} of {place}" if place else action
    body = []
    for result in results:
        findings = result.review.findings if result.review is not None else ()
        body.append(f"{quote_path(result.path)}:")
        body += [
            f"- {finding.rule} at line {finding.line}: {' '.join(finding.message.split())}"
            for finding in findings
        ]
    said = "\n".join(body)
    return f"{subject}\n\n{said}\n\nStomper-Run: {run_id}\nStomper-Unit: {quote_path(name)}\n"


_SUBJECT_MAX = 72
_NOTE_CHARS = 400
