"""What a mode does with its units, and what the engine asks of it.

The engine (the graph, the run's limit, the journal, the live view) is the same for every
mode; a :class:`Job` says how one mode works its units and lands what they produced:
:class:`~stomper.workflow.pipeline.Pipeline` for ``fix``,
:class:`~stomper.review.job.ReviewJob` for ``review``, :class:`~stomper.tasks.job.TaskJob`
for ``run``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from stomper.events import Phase
from stomper.unit import Patch, UnitResult

if TYPE_CHECKING:
    from stomper.workflow.limit import Limit

Emit = Callable[[Phase], None]
EmitFor = Callable[[str], Emit]
"""The emitter of the unit at a path."""


class Work(Protocol):
    """A unit of any mode: the engine knows it by its path."""

    @property
    def path(self) -> str: ...


U = TypeVar("U", bound=Work)
U_contra = TypeVar("U_contra", bound=Work, contravariant=True)


@dataclass(frozen=True)
class Produced:
    """A unit worked as far as it goes before landing."""

    result: UnitResult
    patches: tuple[Patch, ...] = ()
    """What is to land, one patch a file the unit changes, creates or deletes; none when
    the result is final (nothing to land, or refused)."""
    started: float = 0.0
    """When the unit began (``time.monotonic()``)."""

    @property
    def patch(self) -> Patch | None:
        """The one patch of a unit that changes one file (``fix``, ``review``)."""
        return self.patches[0] if len(self.patches) == 1 else None


class Job(Protocol[U_contra]):
    """How one mode works its units; the engine calls it, never the other way round."""

    @property
    def limit(self) -> Limit:
        """The run's limit: the engine holds a unit's place around :meth:`produce_many`, the
        job takes an agent's place for each call of its agent."""
        ...

    async def produce_many(self, units: Sequence[U_contra], emit: EmitFor) -> list[Produced]:
        """Work ``units`` (one group of a Send) as far as landing; a unit's failure is its
        result, never a raise."""
        ...

    async def land_many(self, produced: Sequence[Produced], emit: EmitFor) -> list[UnitResult]:
        """Land what :meth:`produce_many` made (one landing at a time): the final results."""
        ...

    def landed(self, produced: Produced) -> UnitResult | None:
        """The unit's result if it is on the target now, for a landing whose caller was
        cancelled while it finished; None when it did not land."""
        ...
