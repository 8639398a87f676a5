"""Verification: compare a file's diagnostics before and after, by what they say, not where."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from stomper.diagnostics import Diagnostic
from stomper.unit import Status, Unit, UnitResult


@dataclass(frozen=True)
class Verdict:
    status: Status
    fixed: tuple[Diagnostic, ...]
    remaining: tuple[Diagnostic, ...]
    introduced: tuple[Diagnostic, ...]
    reason: str | None = None


def match(
    before: Sequence[Diagnostic], after: Sequence[Diagnostic]
) -> tuple[list[Diagnostic], list[Diagnostic], list[Diagnostic]]:
    """Pair findings of ``before`` with findings of ``after``: (gone, kept, new).

    A pair first needs the same tool, code, message and line text; what is left is paired
    on tool, code and message alone, so a finding whose line was only reformatted is still
    the same finding. Line numbers never count: a fix above shifts everything below it.
    """
    taken = [False] * len(after)
    unpaired = list(before)
    kept: list[Diagnostic] = []
    for key_of in (Diagnostic.key, Diagnostic.identity):
        unpaired = _pair_by(unpaired, after, taken, key_of, kept)
    new = [diag for diag, used in zip(after, taken, strict=True) if not used]
    return unpaired, kept, new


def _pair_by(
    before: list[Diagnostic],
    after: Sequence[Diagnostic],
    taken: list[bool],
    key_of: Callable[[Diagnostic], Hashable],
    kept: list[Diagnostic],
) -> list[Diagnostic]:
    free: defaultdict[Hashable, list[int]] = defaultdict(list)
    for position in reversed(range(len(after))):
        if not taken[position]:
            free[key_of(after[position])].append(position)
    unpaired = []
    for diag in before:
        slots = free.get(key_of(diag))
        if slots:
            taken[slots.pop()] = True
            kept.append(diag)
        else:
            unpaired.append(diag)
    return unpaired


def judge(
    targeted: Sequence[Diagnostic],
    before: Sequence[Diagnostic],
    after: Sequence[Diagnostic],
    *,
    changed: bool,
) -> Verdict:
    """The unit's status from its targeted findings and the file's findings before and after."""
    if not changed:
        return Verdict(Status.UNCHANGED, (), tuple(targeted), (), "the agent changed nothing")
    fixed, remaining, _ = match(targeted, after)
    _, _, introduced = match(before, after)
    if introduced:
        return Verdict(
            Status.FAILED,
            tuple(fixed),
            tuple(remaining),
            tuple(introduced),
            f"the change introduced {len(introduced)} new diagnostic(s): {describe(introduced)}",
        )
    if not fixed:
        return Verdict(
            Status.FAILED, (), tuple(remaining), (), "no targeted diagnostic was resolved"
        )
    if remaining:
        return Verdict(Status.PARTIAL, tuple(fixed), tuple(remaining), ())
    return Verdict(Status.FIXED, tuple(fixed), (), ())


def result_of(unit: Unit, verdict: Verdict, *, reason: str | None, **fields: Any) -> UnitResult:
    """The result of ``unit`` as ``verdict`` judged it (``fields``: the rest of the result)."""
    return UnitResult(
        unit.path,
        verdict.status,
        unit.diagnostics,
        verdict.fixed,
        verdict.remaining,
        verdict.introduced,
        reason=reason,
        **fields,
    )


def describe(found: Sequence[Diagnostic], *, limit: int = 5) -> str:
    shown = "; ".join(f"{d.code} {d.message} (line {d.line})" for d in found[:limit])
    return shown + (f"; and {len(found) - limit} more" if len(found) > limit else "")


def counted(found: Sequence[Diagnostic]) -> str:
    """The codes of ``found`` with how often each occurs: ``F401 x3, E501``."""
    tally = Counter(diag.code for diag in found)
    return ", ".join(code if n == 1 else f"{code} x{n}" for code, n in sorted(tally.items()))
