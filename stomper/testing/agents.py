"""Agents for tests and benchmarks: ruff's own fixes, with a delay, a count or a failure.

Each class implements :class:`stomper.agents.Agent`; each factory takes the run's
:class:`~stomper.config.Settings` and returns an agent, so it can be named on the command
line: ``stomper fix --agent stomper.testing.agents:delayed``. The factories read their
knobs from the environment, the one channel that reaches an agent loaded by name:

- ``STOMPER_TEST_AGENT_DELAY``: seconds each call takes, its fixes included (default 0);
- ``STOMPER_TEST_AGENT_LOG``: the file :class:`Counting` appends one line per call to;
- ``STOMPER_TEST_AGENT_RAISE_ON``: comma-separated unit paths :class:`Raising` fails on
  (default: every unit);
- ``STOMPER_TEST_AGENT_DIE_ONCE``: a folder: :class:`DyingOnce` ends its own process at its
  first call for each unit, and marks the unit there so that the next call fixes it;
- ``STOMPER_TEST_AGENT_TREE``: ``1`` to give the agent a worktree of the whole repository,
  ``0`` for a scratch folder with the one file (default: what the autofix agent asks for).

Each agent says whether it needs a real tree (``needs_tree``) as the agent it wraps does,
unless told otherwise, so a benchmark measures the workspace the wrapped agent would get.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from stomper.agents import Agent, AgentOutcome, AgentTask, close
from stomper.agents.autofix import AutofixAgent
from stomper.errors import AgentError

if TYPE_CHECKING:
    from stomper.config import Settings

DELAY_ENV = "STOMPER_TEST_AGENT_DELAY"
LOG_ENV = "STOMPER_TEST_AGENT_LOG"
RAISE_ON_ENV = "STOMPER_TEST_AGENT_RAISE_ON"
TREE_ENV = "STOMPER_TEST_AGENT_TREE"
DIE_ONCE_ENV = "STOMPER_TEST_AGENT_DIE_ONCE"


class AgentFailure(RuntimeError):
    """What :class:`Raising` raises: an agent that broke, not a verdict on the unit."""


def autofix_for(settings: Settings | None) -> AutofixAgent:
    """The embedded autofix agent, configured as the run would configure it."""
    if settings is None:
        return AutofixAgent()
    return AutofixAgent(
        unsafe_fixes=settings.unsafe_fixes, select=settings.select, ignore=settings.ignore
    )


def wants_tree(agent: Agent, override: bool | None = None) -> bool:
    """Whether ``agent`` asks for a worktree (agents that do not say are given one)."""
    return bool(getattr(agent, "needs_tree", True)) if override is None else override


class Instant:
    """Applies ruff's fixes and nothing else: no delay, for measuring stomper's own cost."""

    name = "instant"

    def __init__(self, inner: Agent | None = None, *, needs_tree: bool | None = None) -> None:
        self.inner = inner if inner is not None else AutofixAgent()
        self.needs_tree = wants_tree(self.inner, needs_tree)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        return await self.inner.fix(task)

    async def aclose(self) -> None:
        await close(self.inner)


class DelayedAutofix:
    """Applies ruff's fixes and answers ``delay`` seconds after it was called: an agent of
    fixed latency, its own work included (a call takes longer only if the fixes do).

    The wait is ``asyncio.sleep``, so N of them overlap: with a perfect orchestrator,
    U units at N at once take ``ceil(U / N) * delay``.
    """

    name = "delayed-autofix"

    def __init__(
        self, delay: float = 0.0, *, inner: Agent | None = None, needs_tree: bool | None = None
    ) -> None:
        if delay < 0:
            raise ValueError(f"delay must not be negative, got {delay}")
        self.delay = delay
        self.inner = inner if inner is not None else AutofixAgent()
        self.needs_tree = wants_tree(self.inner, needs_tree)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        answer_at = time.monotonic() + self.delay
        outcome = await self.inner.fix(task)
        await asyncio.sleep(max(0.0, answer_at - time.monotonic()))
        return outcome

    async def aclose(self) -> None:
        await close(self.inner)


class Counting:
    """Appends the unit's path to ``log`` on every call, then lets ``inner`` work.

    The line is written before ``inner`` runs, so a call that a kill interrupts is counted
    too: a resumed run that redoes a unit shows it twice in the log.
    """

    def __init__(self, inner: Agent, log: Path) -> None:
        self.inner = inner
        self.log = log
        self.name = f"counting({inner.name})"
        self.needs_tree = wants_tree(inner)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        await asyncio.to_thread(_append_line, self.log, task.unit.path)
        return await self.inner.fix(task)

    async def aclose(self) -> None:
        await close(self.inner)


def _append_line(path: Path, line: str) -> None:
    # One write on an O_APPEND descriptor: lines of concurrent calls (and processes) never
    # interleave.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def read_count_log(path: Path) -> list[str]:
    """The unit paths a :class:`Counting` agent logged, one per call, in call order."""
    if not path.exists():
        return []
    return path.read_text(encoding="utf-8").splitlines()


class Raising:
    """Raises :class:`AgentFailure` for the units in ``paths`` (every unit when None).

    Other units go to ``otherwise`` (plain autofix by default), so a run can show that
    one broken unit fails alone while its siblings land.
    """

    name = "raising"

    def __init__(
        self,
        message: str = "the agent broke",
        *,
        paths: Collection[str] | None = None,
        otherwise: Agent | None = None,
        needs_tree: bool | None = None,
    ) -> None:
        self.message = message
        self.paths = frozenset(paths) if paths is not None else None
        self.otherwise = otherwise if otherwise is not None else AutofixAgent()
        self.needs_tree = wants_tree(self.otherwise, needs_tree)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        if self.paths is None or task.unit.path in self.paths:
            raise AgentFailure(f"{self.message} on {task.unit.path}")
        return await self.otherwise.fix(task)

    async def aclose(self) -> None:
        await close(self.otherwise)


class DyingOnce:
    """Ends the process it runs in (``os._exit``, as a machine lost or a worker killed
    would) at its first call for each unit, marked in ``marks``; then fixes as autofix."""

    name = "dying-once"

    def __init__(self, marks: Path, *, otherwise: Agent | None = None) -> None:
        self.marks = marks
        self.otherwise = otherwise if otherwise is not None else AutofixAgent()
        self.needs_tree = wants_tree(self.otherwise)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        mark = self.marks / task.unit.path.replace("/", "%")
        try:
            mark.touch(exist_ok=False)
        except FileExistsError:
            return await self.otherwise.fix(task)
        os._exit(70)

    async def aclose(self) -> None:
        await close(self.otherwise)


# Factories for ``--agent module:attribute`` --------------------------------------------------


def env_delay() -> float:
    """The delay named by ``STOMPER_TEST_AGENT_DELAY``, in seconds (0 when unset)."""
    raw = os.environ.get(DELAY_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        delay = float(raw)
    except ValueError:
        raise AgentError(f"{DELAY_ENV} must be a number of seconds, got {raw!r}") from None
    if delay < 0:
        raise AgentError(f"{DELAY_ENV} must not be negative, got {raw!r}")
    return delay


def env_tree() -> bool | None:
    """``STOMPER_TEST_AGENT_TREE`` as a yes, a no, or None when unset."""
    raw = os.environ.get(TREE_ENV, "").strip().lower()
    if not raw:
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise AgentError(f"{TREE_ENV} must be 1 or 0, got {raw!r}")


def instant(settings: Settings) -> Agent:
    """:class:`Instant`, configured by the run's settings."""
    return Instant(autofix_for(settings), needs_tree=env_tree())


def delayed(settings: Settings) -> Agent:
    """:class:`DelayedAutofix` with the delay of ``STOMPER_TEST_AGENT_DELAY``."""
    return DelayedAutofix(env_delay(), inner=autofix_for(settings), needs_tree=env_tree())


def counting(settings: Settings) -> Agent:
    """:func:`delayed`, counted into the file named by ``STOMPER_TEST_AGENT_LOG``."""
    log = os.environ.get(LOG_ENV, "").strip()
    if not log:
        raise AgentError(f"set {LOG_ENV} to the file the counting agent appends to")
    return Counting(delayed(settings), Path(log))


def raising(settings: Settings) -> Agent:
    """:class:`Raising` on the paths of ``STOMPER_TEST_AGENT_RAISE_ON`` (every unit if unset)."""
    raw = os.environ.get(RAISE_ON_ENV, "")
    paths = [part.strip() for part in raw.split(",") if part.strip()]
    return Raising(paths=paths or None, otherwise=autofix_for(settings), needs_tree=env_tree())


def dying_once(settings: Settings) -> Agent:
    """:class:`DyingOnce`, marking the units in the folder of ``STOMPER_TEST_AGENT_DIE_ONCE``."""
    marks = os.environ.get(DIE_ONCE_ENV, "").strip()
    if not marks:
        raise AgentError(f"set {DIE_ONCE_ENV} to the folder the dying agent marks units in")
    return DyingOnce(Path(marks), otherwise=autofix_for(settings))
