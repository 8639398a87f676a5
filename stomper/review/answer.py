"""Reading a reviewer's answer: the findings of its ```json block, each placed by its quote.

The contract the prompt states (:mod:`stomper.review.prompt`): a fenced ```json block holding
``{"findings": [...]}``, each finding with the exact text of the first line it flags in
``quote``. Models misnumber lines, so the number a finding gives is only a hint: stomper
finds the quoted line in the file (the nearest to the hint where it occurs more than once)
and numbers the finding itself. A finding whose quote is nowhere in the file is dropped,
and counted; so is one that breaks the contract otherwise.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stomper.agents.edits import Edit
from stomper.findings import Category, Finding, Severity, at_least, rank

_FENCE = re.compile(r"^(?P<fence>`{3,})[ \t]*(?P<info>[^\n`]*)\n", re.MULTILINE)


class Unreadable(Exception):
    """The answer cannot be used: what the reviewer is to be told.

    ``partial`` is what could be read of it when only its edits are unfit (its findings
    stand)."""

    def __init__(self, message: str, *, partial: Reading | None = None) -> None:
        super().__init__(message)
        self.partial = partial


class _Reported(BaseModel):
    """A finding as the contract has the reviewer write it."""

    model_config = ConfigDict(extra="ignore")

    rule: str = Field(min_length=1, max_length=200)
    severity: Severity
    category: Category = "maintainability"
    line: int = 0
    end_line: int | None = None
    quote: str
    message: str = Field(min_length=1)
    confidence: float = 0.5

    @field_validator("severity", "category", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("confidence")
    @classmethod
    def _unit_interval(cls, value: float) -> float:
        return min(1.0, max(0.0, value))


@dataclass(frozen=True)
class Reading:
    """What an answer said of one file."""

    findings: tuple[Finding, ...]
    """Located, in the order the answer gave them."""
    unlocated: int = 0
    """Findings whose quote the file does not hold."""
    malformed: int = 0
    """Findings that break the contract (a field missing or of the wrong kind)."""
    edits: tuple[Edit, ...] = ()
    """The SEARCH/REPLACE blocks after the findings, when edits were asked for."""


def read(answer: str, path: str, source: str, *, first_line: int = 1) -> Reading:
    """The findings ``answer`` gives for ``path``, placed in ``source``; ``first_line`` is
    the number of ``source``'s first line in the file (a part of a file was shown).
    Raises :class:`Unreadable` when the answer holds no findings block."""
    reported = _findings_block(answer)
    lines = source.splitlines()
    found: list[Finding] = []
    unlocated = malformed = 0
    for item in reported:
        try:
            said = _Reported.model_validate(item)
        except ValidationError:
            malformed += 1
            continue
        at = locate(said.quote, said.line - first_line + 1, lines)
        if at is None:
            unlocated += 1
            continue
        span = max(0, (said.end_line or said.line) - said.line)
        found.append(
            Finding(
                path=path,
                line=at + first_line - 1,
                end_line=min(at + span, len(lines)) + first_line - 1,
                rule=said.rule.strip(),
                severity=said.severity,
                category=said.category,
                message=said.message.strip(),
                quote=lines[at - 1].strip(),
                confidence=said.confidence,
            )
        )
    return Reading(tuple(found), unlocated, malformed)


def locate(quote: str, hint: int, lines: Sequence[str]) -> int | None:
    """The number (from 1) of the line of ``lines`` that ``quote`` quotes: one that is the
    quote's first line, white space aside, else one that holds it; of several, the nearest
    to ``hint``. None when no line does."""
    wanted = next((part.strip() for part in quote.splitlines() if part.strip()), "")
    if not wanted:
        return None
    stripped = [line.strip() for line in lines]
    places = [number for number, line in enumerate(stripped, 1) if line == wanted]
    if not places:
        places = [number for number, line in enumerate(stripped, 1) if wanted in line]
    if not places:
        return None
    return min(places, key=lambda number: (abs(number - hint), number))


def keep(
    findings: Sequence[Finding], *, max_findings: int, min_severity: Severity
) -> tuple[list[Finding], int]:
    """The findings worth a reader's time, most severe and confident first: those at
    ``min_severity`` or above, at most ``max_findings`` of them; and how many were cut."""
    severe = [finding for finding in findings if at_least(finding.severity, min_severity)]
    ranked = sorted(severe, key=rank)
    kept = ranked[:max_findings]
    return sorted(kept, key=lambda finding: finding.line), len(findings) - len(kept)


def read_scores(answer: str, count: int) -> dict[int, int]:
    """The scores (0 to 10) an answer to a reflection gives findings 1 to ``count``, by
    number; a finding it gives no score keeps none. Raises :class:`Unreadable` when the
    answer holds no scores block."""
    scores: dict[int, int] = {}
    for item in _block(answer, "scores"):
        if not isinstance(item, dict):
            continue
        number, score = item.get("id"), item.get("score")
        if not isinstance(number, int) or not 1 <= number <= count:
            continue
        if isinstance(score, int | float) and not isinstance(score, bool) and math.isfinite(score):
            scores[number] = max(0, min(10, round(score)))
    return scores


def _findings_block(answer: str) -> list[Any]:
    """The list of findings of the answer's first fenced block that holds them."""
    return _block(answer, "findings")


def _block(answer: str, key: str) -> list[Any]:
    """The list under ``key`` in the answer's first fenced block that holds one."""
    for opening in _FENCE.finditer(answer):
        fence, info = opening["fence"], opening["info"].strip().lower()
        if info not in ("json", ""):
            continue
        end = answer.find("\n" + fence, opening.end() - 1)
        if end == -1:
            continue
        try:
            document = json.loads(answer[opening.end() : end])
        except ValueError:
            if info == "json":
                raise Unreadable(
                    "Your ```json block is not valid JSON: answer with one ```json block "
                    f'holding {{"{key}": [...]}}, as described.'
                ) from None
            continue
        if isinstance(document, dict) and isinstance(document.get(key), list):
            return list(document[key])
        if info == "json":
            raise Unreadable(
                f'Your ```json block holds no "{key}" list: answer with one ```json block '
                f'holding {{"{key}": [...]}}{_EMPTY.get(key, "")}.'
            )
    raise Unreadable(
        f'Your answer holds no ```json block: answer with one ```json block holding {{"{key}": '
        f"[...]}}{_EMPTY.get(key, '')}."
    )


_EMPTY = {"findings": " (an empty list when the file has nothing to report)"}
