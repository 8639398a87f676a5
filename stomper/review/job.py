"""``review`` as a job of the engine: each unit is one file, asked of the model, its answer
read into findings placed by their quotes.

A unit reads its file from the base commit (never the checkout, which the user may be
editing), asks the model under one of the run's N agents' places (a large file in parts,
each its own request, side by side: :mod:`stomper.review.chunks`), and reads each answer by
the contract of :mod:`stomper.review.prompt`. An answer that cannot be read goes back to the
model with what was wrong, up to ``max_attempts``; the same answer twice ends the question,
as asking again would only pay for it a third time. With ``reflect``, a second question
scores the findings, and those the model is not sure of are left out. Nothing lands: the
findings are the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

from stomper import git
from stomper.agents import AttemptFailed
from stomper.agents.openai_chat import Answer
from stomper.events import Phase
from stomper.findings import Finding, Review, Severity
from stomper.review import answer
from stomper.review.cache import Cached, ReviewCache
from stomper.review.chunks import CHUNK_LINES, Chunk, chunked
from stomper.review.prompt import Persona, reflect_prompt, review_prompt
from stomper.review.units import ReviewUnit, unreviewable
from stomper.unit import Status, UnitResult
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


@dataclass
class _Asked(Generic[T]):
    """What the requests of one question came to: the answer read, or why there is none."""

    value: T | None = None
    failure: str | None = None
    attempts: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    agent_s: float = 0.0


class ReviewJob:
    """Reviews the files of one run; made per run."""

    def __init__(
        self,
        reviewer: Reviewer,
        objects: git.ObjectReader,
        policy: ReviewPolicy,
        limit: Limit,
        cache: ReviewCache | None = None,
    ) -> None:
        self.reviewer = reviewer
        self.objects = objects
        self.policy = policy
        self.cache = cache
        self._limit = limit

    @property
    def limit(self) -> Limit:
        return self._limit

    async def produce_many(self, units: Sequence[ReviewUnit], emit: EmitFor) -> list[Produced]:
        return list(await asyncio.gather(*(self.produce(unit, emit(unit.path)) for unit in units)))

    async def produce(self, unit: ReviewUnit, emit: Emit) -> Produced:
        """The unit's findings, or why it has none; a failure is a result, never a raise."""
        started = time.monotonic()
        try:
            result = await self._review(unit, emit)
        except Exception as exc:  # one unit's failure must not cancel its siblings
            result = UnitResult(
                unit.path, Status.FAILED, (), attempts=1, reason=f"{type(exc).__name__}: {exc}"
            )
        return Produced(replace(result, duration_s=time.monotonic() - started), started=started)

    async def land_many(self, produced: Sequence[Produced], emit: EmitFor) -> list[UnitResult]:
        return [one.result for one in produced]

    def landed(self, produced: Produced) -> UnitResult | None:
        return None

    async def _review(self, unit: ReviewUnit, emit: Emit) -> UnitResult:
        emit(Phase.ISOLATING)
        stored = await self.objects.read(unit.blob)
        if stored is None:
            raise LookupError(f"the repository lacks the object {unit.blob}")
        content = stored[1]
        why = unreviewable(content)
        if why is not None:
            return UnitResult(unit.path, Status.SKIPPED, (), reason=why)
        source = content.decode("utf-8")
        found = self.cache.get(unit.blob, unit.path) if self.cache is not None else None
        asked: list[_Asked[Any]] = []
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
                return _spent(self._failed(unit, f"{one.failure}{where}"), asked)
            read = [one.value for one in readings if one.value is not None]
            found = Cached(
                _unique(finding for reading in read for finding in reading.findings),
                sum(reading.unlocated for reading in read),
                sum(reading.malformed for reading in read),
            )
        doubt = None
        if self.policy.reflect and not found.reflected and found.findings:
            scoring = await self._ask(self._scores_of(unit, source, found.findings), emit)
            asked.append(scoring)
            if scoring.failure:
                doubt = f"--reflect: {scoring.failure}; the findings are kept unscored"
            if scoring.value is not None:
                scores = scoring.value
                scored = tuple(
                    replace(finding, score=scores.get(number))
                    for number, finding in enumerate(found.findings, 1)
                )
                found = replace(found, findings=scored, reflected=True)
        if asked and self.cache is not None:
            self.cache.put(unit.blob, found)
        result = replace(self._result(unit, found, cached=not asked), reason=doubt)
        return _spent(result, asked)

    def _review_of(self, unit: ReviewUnit, source: str, part: Chunk) -> _Question[answer.Reading]:
        """The question of the findings in ``part`` of the file."""
        persona = self.policy.persona
        shown = "\n".join(source.splitlines()[part.first - 1 : part.last])

        def prompt(feedback: str | None) -> str:
            return review_prompt(unit.path, source, persona, part=part, feedback=feedback)

        def read(text: str) -> answer.Reading:
            return answer.read(text, unit.path, shown, first_line=part.first)

        return _Question(prompt, read)

    def _scores_of(
        self, unit: ReviewUnit, source: str, findings: Sequence[Finding]
    ) -> _Question[dict[int, int]]:
        """The question of how sure the model is of each of ``findings``."""

        def prompt(feedback: str | None) -> str:
            return reflect_prompt(unit.path, source, findings, feedback=feedback)

        def read(text: str) -> dict[int, int]:
            return answer.read_scores(text, len(findings))

        return _Question(prompt, read)

    async def _ask(self, question: _Question[T], emit: Emit) -> _Asked[T]:
        """The model's answer to ``question``, read; asked again with what was wrong while
        it cannot be read, up to ``max_attempts``, and not again once it repeats itself."""
        system = self.policy.persona.system
        feedback: str | None = None
        said: list[str] = []
        asked: _Asked[T] = _Asked()
        for attempt in range(1, self.policy.max_attempts + 1):
            asked.attempts = attempt
            prompt = question.prompt(feedback)
            if self._limit.waiting():
                emit(Phase.WAITING)
            async with self._limit.call():
                emit(Phase.AGENT)
                began = time.monotonic()
                try:
                    reply = await self.reviewer.ask(system, prompt)
                except AttemptFailed as failed:
                    asked.tokens_in += failed.tokens_in
                    asked.tokens_out += failed.tokens_out
                    feedback = failed.feedback
                    continue
                finally:
                    asked.agent_s += time.monotonic() - began
            emit(Phase.VERIFYING)
            asked.tokens_in += reply.tokens_in
            asked.tokens_out += reply.tokens_out
            try:
                asked.value = question.read(reply.text)
                return asked
            except answer.Unreadable as unreadable:
                feedback = str(unreadable)
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
