"""The plain data of one unit of work: what it targets, what it produced, how it ended."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from stomper.diagnostics import Diagnostic
from stomper.findings import Review


class Status(StrEnum):
    FIXED = "fixed"
    PARTIAL = "partial"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNCHANGED = "unchanged"
    REVIEWED = "reviewed"
    APPLIED = "applied"
    """Reviewed, and its edit landed (``review --apply``)."""
    ROLLED_BACK = "rolled_back"
    """Reviewed, and its edit broke the build: left out."""
    LANDED = "landed"
    """A task whose change passed its verification and landed (``run``)."""
    BLOCKED = "blocked"
    """A task whose change broke a rule (a file outside its own): never tried again as is."""


LANDABLE = frozenset({Status.FIXED, Status.PARTIAL})
FIX_ENDINGS = (Status.FIXED, Status.PARTIAL, Status.UNCHANGED, Status.FAILED, Status.SKIPPED)
"""How a unit of ``fix`` may end."""
REVIEW_ENDINGS = (
    Status.REVIEWED,
    Status.APPLIED,
    Status.ROLLED_BACK,
    Status.FAILED,
    Status.SKIPPED,
)
"""How a unit of ``review`` may end."""
TASK_ENDINGS = (Status.LANDED, Status.FAILED, Status.BLOCKED, Status.SKIPPED)
"""How a task of ``run`` may end."""


@dataclass(frozen=True)
class Unit:
    """One file and the diagnostics targeted in it, at the run's base commit."""

    index: int
    path: str
    base: str
    """The commit the unit works from: the run's base, or a newer tip on resume."""
    diagnostics: tuple[Diagnostic, ...]
    """The findings the unit targets."""
    baseline: tuple[Diagnostic, ...]
    """Every finding of the file at the base commit, targeted or not."""
    base_blob: str
    mode: str

    def to_record(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "path": self.path,
            "base": self.base,
            "diagnostics": [diag.to_record() for diag in self.diagnostics],
            "baseline": [diag.to_record() for diag in self.baseline],
            "base_blob": self.base_blob,
            "mode": self.mode,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Unit:
        return cls(
            index=int(record["index"]),
            path=record["path"],
            base=record["base"],
            diagnostics=_diagnostics(record["diagnostics"]),
            baseline=_diagnostics(record["baseline"]),
            base_blob=record["base_blob"],
            mode=record["mode"],
        )


@dataclass(frozen=True)
class Patch:
    """A unit's change to one file: from ``old_blob`` to ``new_blob``. A file the change
    creates has no old blob, and one it deletes no new blob."""

    path: str
    mode: str
    """The mode of a file the change creates; a file it changes keeps the target's mode."""
    old_blob: str | None
    new_blob: str | None
    content: bytes | None = field(default=None, repr=False)
    """The bytes of ``new_blob`` when it is not stored yet: the landing stores them, with
    the commit (git keeps them as they are: no filter, no conversion)."""

    def __post_init__(self) -> None:
        if self.old_blob is None and self.new_blob is None:
            raise ValueError(f"a change of {self.path} needs a blob before or after it")

    @property
    def creates(self) -> bool:
        return self.old_blob is None

    @property
    def deletes(self) -> bool:
        return self.new_blob is None


@dataclass(frozen=True)
class UnitResult:
    path: str
    status: Status
    before: tuple[Diagnostic, ...]
    fixed: tuple[Diagnostic, ...] = ()
    remaining: tuple[Diagnostic, ...] = ()
    introduced: tuple[Diagnostic, ...] = ()
    commit: str | None = None
    attempts: int = 0
    reason: str | None = None
    duration_s: float = 0.0
    agent_s: float = 0.0
    landing_s: float = 0.0
    tokens_in: int = 0
    tokens_out: int = 0
    diff: str | None = field(default=None, compare=False)
    review: Review | None = None
    """What a review of the file found (units of ``review`` only)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "status": self.status.value,
            "commit": self.commit,
            "attempts": self.attempts,
            "diagnostics_before": len(self.before),
            "diagnostics_after": len(self.remaining) + len(self.introduced),
            "fixed": [diag.to_json() for diag in self.fixed],
            "remaining": [diag.to_json() for diag in self.remaining],
            "reason": self.reason,
            "duration_s": round(self.duration_s, 3),
            "tokens": {"input": self.tokens_in, "output": self.tokens_out},
            "diff": self.diff,
        }

    def to_record(self) -> dict[str, Any]:
        """Everything but the diff, for the run's journal."""
        return {
            "path": self.path,
            "status": self.status.value,
            "before": [diag.to_record() for diag in self.before],
            "fixed": [diag.to_record() for diag in self.fixed],
            "remaining": [diag.to_record() for diag in self.remaining],
            "introduced": [diag.to_record() for diag in self.introduced],
            "commit": self.commit,
            "attempts": self.attempts,
            "reason": self.reason,
            "duration_s": self.duration_s,
            "agent_s": self.agent_s,
            "landing_s": self.landing_s,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        } | ({"review": self.review.to_json()} if self.review is not None else {})

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> UnitResult:
        return cls(
            path=record["path"],
            status=Status(record["status"]),
            before=_diagnostics(record["before"]),
            fixed=_diagnostics(record["fixed"]),
            remaining=_diagnostics(record["remaining"]),
            introduced=_diagnostics(record["introduced"]),
            commit=record["commit"],
            attempts=int(record["attempts"]),
            reason=record["reason"],
            duration_s=float(record["duration_s"]),
            agent_s=float(record["agent_s"]),
            landing_s=float(record["landing_s"]),
            tokens_in=int(record["tokens_in"]),
            tokens_out=int(record["tokens_out"]),
            review=Review.from_json(record["review"]) if "review" in record else None,
        )


# git's C-style escapes, as it quotes paths in its output (core.quotepath=off: non-ASCII
# characters stay as they are).
_ESCAPES = {
    "\a": "a",
    "\b": "b",
    "\t": "t",
    "\n": "n",
    "\v": "v",
    "\f": "f",
    "\r": "r",
    '"': '"',
    "\\": "\\",
}
_UNESCAPES = {letter: char for char, letter in _ESCAPES.items()}


def quote_path(path: str) -> str:
    """``path`` as git quotes it: in double quotes, with C escapes, when it holds a control
    character, a double quote or a backslash; unchanged otherwise. It is also quoted when it
    begins or ends with white space, which a commit trailer would lose. So a name with a
    newline cannot break a commit's subject or trailers, and :func:`unquote_path` gives it
    back exactly."""
    plain = path == path.strip() and not any(
        char in _ESCAPES or ord(char) < 0x20 or ord(char) == 0x7F for char in path
    )
    if plain and path:
        return path
    quoted = []
    for char in path:
        if char in _ESCAPES:
            quoted.append("\\" + _ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            quoted.append(f"\\{ord(char):03o}")
        else:
            quoted.append(char)
    return '"' + "".join(quoted) + '"'


def unquote_path(text: str) -> str:
    """The path that :func:`quote_path` (or git) quoted as ``text``; ``text`` itself when it
    is not quoted."""
    if len(text) < 2 or not (text.startswith('"') and text.endswith('"')):
        return text
    body, out, index = text[1:-1], bytearray(), 0
    while index < len(body):
        char = body[index]
        if char != "\\" or index + 1 == len(body):
            out += char.encode()
            index += 1
        elif body[index + 1] in _UNESCAPES:
            out += _UNESCAPES[body[index + 1]].encode()
            index += 2
        else:
            digits = body[index + 1 : index + 4]
            if len(digits) == 3 and all(digit in "01234567" for digit in digits):
                out.append(int(digits, 8) & 0xFF)
                index += 4
            else:
                out += char.encode()
                index += 1
    return out.decode(errors="surrogateescape")


def _diagnostics(records: list[Any]) -> tuple[Diagnostic, ...]:
    return tuple(Diagnostic.from_record(record) for record in records)
