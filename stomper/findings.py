"""The plain data of a review's findings: what a reviewer said of which lines of a file."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning", "note"]
Category = Literal["bug", "security", "performance", "maintainability", "style"]

SEVERITIES: tuple[Severity, ...] = ("error", "warning", "note")
"""Most severe first."""
CATEGORIES: tuple[Category, ...] = ("bug", "security", "performance", "maintainability", "style")


@dataclass(frozen=True)
class Finding:
    """One finding in one file, at lines stomper located itself (by the quoted text), not
    at the lines the reviewer named."""

    path: str
    line: int
    end_line: int
    rule: str
    severity: Severity
    category: Category
    message: str
    quote: str
    """The flagged line's text, as the reviewer quoted it and the file holds it."""
    confidence: float
    score: int | None = None
    """How sure a second look (``--reflect``) was that it is real, from 0 to 10."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Finding:
        return cls(
            path=str(record["path"]),
            line=int(record["line"]),
            end_line=int(record["end_line"]),
            rule=str(record["rule"]),
            severity=record["severity"],
            category=record["category"],
            message=str(record["message"]),
            quote=str(record["quote"]),
            confidence=float(record["confidence"]),
            score=int(record["score"]) if record.get("score") is not None else None,
        )


@dataclass(frozen=True)
class Review:
    """What the review of one file came to."""

    findings: tuple[Finding, ...]
    """Those kept, in the order of their lines."""
    unlocated: int = 0
    """Findings dropped: their quote is no line of the file."""
    malformed: int = 0
    """Findings dropped: they broke the answer's contract."""
    cut: int = 0
    """Findings left out: beyond the most a file keeps, or below the least severity."""
    outside: int = 0
    """Findings left out: on no line the reviewed change touched (``--diff``)."""
    refuted: int = 0
    """Findings left out: a second look scored them under the threshold (``--reflect``)."""
    cached: bool = False
    """Found by an earlier review of the same file (the same blob, persona, prompt and
    model): no request was made."""

    def severities(self) -> dict[str, int]:
        """How many findings it kept of each severity."""
        return {name: sum(1 for f in self.findings if f.severity == name) for name in SEVERITIES}

    def to_json(self) -> dict[str, Any]:
        return {
            "findings": [finding.to_json() for finding in self.findings],
            "unlocated": self.unlocated,
            "malformed": self.malformed,
            "cut": self.cut,
            "outside_diff": self.outside,
            "refuted": self.refuted,
            "cached": self.cached,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Review:
        return cls(
            tuple(Finding.from_json(item) for item in record["findings"]),
            int(record["unlocated"]),
            int(record["malformed"]),
            int(record["cut"]),
            int(record["outside_diff"]),
            int(record["refuted"]),
            bool(record["cached"]),
        )


def rank(finding: Finding) -> tuple[int, float, int]:
    """The order findings are kept in: most severe, then most confident, then first."""
    return (SEVERITIES.index(finding.severity), -finding.confidence, finding.line)


def at_least(severity: Severity, floor: Severity) -> bool:
    """Whether ``severity`` is ``floor`` or more severe."""
    return SEVERITIES.index(severity) <= SEVERITIES.index(floor)
