"""What a run may spend on its agents.

A **budget** counts agent calls (``max_calls``), the tokens of the model's answers and
questions (``max_tokens``), and what those cost (``max_cost``, in US dollars, at the model's
price in ``[tool.stomper.prices]``), for the run (``--max-calls``, ``--max-tokens``,
``--max-cost``) and, in a run of tasks, for each task (the same keys in the task file). A
call is taken before an attempt begins (:meth:`Budget.take`, open until its answer is
counted or it ends without one), and refused once a limit is reached. What an attempt
spends is known only when its answer comes: the calls still open count as what the
answers so far spent on average, so that the run stops taking calls when those under way
are likely to reach its limit, not after (an answer larger than the average may still take
it a little past). When the run's budget is spent, running units end after the
attempt they are in (a unit of ``fix`` keeps what its attempts so far fixed), nothing new
begins (those units are skipped, their reason beginning :data:`NOT_BEGUN`), what finished
still lands, and the run's status is ``budget``: ``stomper resume --max-cost X`` goes on
later with as much again. CLI agents report no tokens and no cost: calls are what a run of
them can count.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from stomper.config import Price
    from stomper.unit import UnitResult

NOT_BEGUN = "not begun: "
"""Begins the reason of a unit the budget left unbegun: ``stomper resume`` works it."""


def unbegun(result: UnitResult) -> bool:
    """Whether the budget left the unit of ``result`` unbegun."""
    return (result.reason or "").startswith(NOT_BEGUN)


def ended(status: str, budget: Budget, results: Iterable[UnitResult]) -> str:
    """The status of a run whose graph ended as ``status``: ``budget`` when it completed
    with its budget spent before some unit began (``stomper resume`` works those)."""
    if status == "completed" and budget.spent and any(unbegun(one) for one in results):
        return "budget"
    return status


class Spent(Exception):
    """The run's (or the task's) budget is spent; ``str()`` says which."""


@dataclass
class Use:
    """What has been spent: calls, tokens in and out, and their cost in dollars."""

    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def to_json(self) -> dict[str, int | float]:
        return {
            "calls": self.calls,
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "cost": round(self.cost, 6),
        }


@dataclass(frozen=True)
class Limits:
    """The most one may spend (None: any)."""

    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None

    def reached(self, use: Use) -> str | None:
        """Which limit ``use`` has reached, in words, or None."""
        if self.max_calls is not None and use.calls >= self.max_calls:
            return f"budget of {self.max_calls} agent calls"
        if self.max_tokens is not None and use.tokens >= self.max_tokens:
            return f"budget of {self.max_tokens:,} tokens"
        if self.max_cost is not None and use.cost >= self.max_cost:
            return f"budget of ${self.max_cost:g}"
        return None

    @property
    def counts_tokens(self) -> bool:
        return self.max_tokens is not None or self.max_cost is not None


@dataclass
class Budget:
    """What a run may spend, and what it and each of its tasks have spent."""

    limits: Limits = field(default_factory=Limits)
    price: Price | None = None
    """The model's price, per million tokens; None: its cost is not known."""
    use: Use = field(default_factory=Use)
    tasks: dict[str, Use] = field(default_factory=dict)
    open: int = 0
    """Calls taken whose answer is not counted yet."""
    answers: int = 0
    """Answers counted so far: what they spent, on average, is what an open call will."""
    refused: str | None = None
    """Why the run's budget last refused a call, in words."""

    def of(self, task: str) -> Use:
        """What ``task`` has spent so far."""
        return self.tasks.setdefault(task, Use())

    def take(self, task: str, limits: Limits | None = None) -> Call:
        """One call for ``task`` (whose own budget is ``limits``), open until the
        :class:`Call` is left; or :class:`Spent`."""
        reached = self.exhausted()
        if reached is not None:
            self.refused = reached
            raise Spent(f"the run's {reached} is spent")
        reached = (limits or Limits()).reached(self.of(task))
        if reached is not None:
            raise Spent(f"the task's {reached} is spent")
        self.use.calls += 1
        self.of(task).calls += 1
        self.open += 1
        return Call(self)

    def spend(self, task: str, tokens_in: int, tokens_out: int) -> None:
        """Count the tokens one answer for ``task`` took, and their cost."""
        cost = self.price.cost(tokens_in, tokens_out) if self.price is not None else 0.0
        self.answers += 1
        for use in (self.use, self.of(task)):
            use.tokens_in += tokens_in
            use.tokens_out += tokens_out
            use.cost += cost

    def exhausted(self) -> str | None:
        """Which of the run's limits a call taken now would go past, in words: one reached
        by what was spent, or by that and what the calls open are likely to spend."""
        reached = self.limits.reached(self.use)
        if reached is not None or not self.open or not self.answers:
            return reached
        share = self.open / self.answers
        likely = replace(
            self.use,
            tokens_in=self.use.tokens_in + round(self.use.tokens_in * share),
            tokens_out=self.use.tokens_out + round(self.use.tokens_out * share),
            cost=self.use.cost * (1 + share),
        )
        return self.limits.reached(likely)

    @property
    def spent(self) -> bool:
        """Whether the run's budget is spent: reached, or a call was refused for it."""
        return self.refused is not None or self.limits.reached(self.use) is not None


class Call:
    """A call taken from a :class:`Budget`, open until left (``async with``): its answer,
    counted by :meth:`Budget.spend` meanwhile, or none."""

    def __init__(self, budget: Budget) -> None:
        self._budget: Budget | None = budget

    async def __aenter__(self) -> Call:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._budget is not None:
            self._budget.open -= 1
            self._budget = None
