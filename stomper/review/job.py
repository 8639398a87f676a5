"""``review`` as a job of the engine: each unit is one file, asked of the model, its answer
read into findings placed by their quotes.

A unit reads its file from the base commit (never the checkout, which the user may be
editing), asks the model under one of the run's N agents' places, and reads the answer by
the contract of :mod:`stomper.review.prompt`. An answer that cannot be read goes back to the
model with what was wrong, up to ``max_attempts``; the same answer twice ends the unit, as
asking again would only pay for it a third time. Nothing lands: the findings are the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from stomper import git
from stomper.agents import AttemptFailed
from stomper.agents.openai_chat import Answer
from stomper.events import Phase
from stomper.findings import Finding, Review, Severity
from stomper.review import answer
from stomper.review.cache import Cached, ReviewCache
from stomper.review.prompt import Persona, review_prompt
from stomper.review.units import ReviewUnit, unreviewable
from stomper.unit import Status, UnitResult
from stomper.workflow.job import Emit, EmitFor, Produced
from stomper.workflow.limit import Limit


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
    changed: Mapping[str, Sequence[tuple[int, int]]] | None = None
    """With ``--diff``: the lines of each file the change touched (first, last); findings
    elsewhere are left out."""


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
        found = await self.objects.read(unit.blob)
        if found is None:
            raise LookupError(f"the repository lacks the object {unit.blob}")
        content = found[1]
        why = unreviewable(content)
        if why is not None:
            return UnitResult(unit.path, Status.SKIPPED, (), reason=why)
        cached = self.cache.get(unit.blob, unit.path) if self.cache is not None else None
        if cached is not None:
            return self._result(unit, cached, cached=True)
        source = content.decode("utf-8")
        persona = self.policy.persona
        feedback: str | None = None
        said: list[str] = []
        tokens_in = tokens_out = 0
        agent_s = 0.0
        for attempt in range(1, self.policy.max_attempts + 1):
            prompt = review_prompt(unit.path, source, persona, feedback=feedback)
            if self._limit.waiting():
                emit(Phase.WAITING)
            async with self._limit.call():
                emit(Phase.AGENT)
                began = time.monotonic()
                try:
                    reply = await self.reviewer.ask(persona.system, prompt)
                except AttemptFailed as failed:
                    tokens_in += failed.tokens_in
                    tokens_out += failed.tokens_out
                    feedback = failed.feedback
                    continue
                finally:
                    agent_s += time.monotonic() - began
            emit(Phase.VERIFYING)
            tokens_in += reply.tokens_in
            tokens_out += reply.tokens_out
            try:
                reading = answer.read(reply.text, unit.path, source)
            except answer.Unreadable as unreadable:
                feedback = str(unreadable)
                if reply.text in said:
                    return self._failed(
                        unit, f"the same unreadable answer twice: {feedback}", attempt
                    )
                said.append(reply.text)
                continue
            kept = Cached(reading.findings, reading.unlocated, reading.malformed)
            if self.cache is not None:
                self.cache.put(unit.blob, kept)
            result = self._result(unit, kept, cached=False)
            return replace(
                result,
                attempts=attempt,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                agent_s=agent_s,
            )
        return replace(
            self._failed(unit, f"no readable answer in {attempt} attempts: {feedback}", attempt),
            tokens_in=tokens_in,
            tokens_out=tokens_out,
            agent_s=agent_s,
        )

    def _result(self, unit: ReviewUnit, found: Cached, *, cached: bool) -> UnitResult:
        floor = self.policy.min_severity or self.policy.persona.min_severity
        findings = found.findings
        if self.policy.changed is not None:
            spans = self.policy.changed.get(unit.path, ())
            findings = tuple(finding for finding in findings if _touches(finding, spans))
        kept, cut = answer.keep(findings, max_findings=self.policy.max_findings, min_severity=floor)
        outside = len(found.findings) - len(findings)
        review = Review(tuple(kept), found.unlocated, found.malformed, cut, outside, cached)
        return UnitResult(unit.path, Status.REVIEWED, (), review=review)

    def _failed(self, unit: ReviewUnit, reason: str, attempts: int) -> UnitResult:
        return UnitResult(unit.path, Status.FAILED, (), attempts=attempts, reason=reason)


def _touches(finding: Finding, spans: Sequence[tuple[int, int]]) -> bool:
    """Whether the lines of ``finding`` meet one of ``spans``."""
    return any(first <= finding.end_line and finding.line <= last for first, last in spans)
