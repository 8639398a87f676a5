"""Agents: what edits a unit's file.

An agent gets an :class:`AgentTask` (the unit, the workspace that holds its file, the
attempt number and what verification said about the previous attempt) and edits the
file in the workspace. It never lands anything and never sees the user's checkout.
Each agent is a module of its own, named in :data:`AGENTS`; ``module:attribute`` names a
third-party agent class.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, cast

from stomper.errors import AgentError, StomperError

if TYPE_CHECKING:
    from stomper.config import Settings
    from stomper.diagnostics import Diagnostic
    from stomper.unit import Unit


@dataclass(frozen=True)
class AgentTask:
    unit: Unit
    workspace: Path
    """The root of the unit's private tree; the file is ``workspace / unit.path``."""
    attempt: int = 1
    feedback: str | None = None
    """What verification said about the previous attempt, for the next one."""
    config_path: Path | None = None
    """Where the file stands for the tools' settings, when that is not ``file`` (a scratch
    workspace holds the one file; the project's settings apply at its place in the checkout)."""
    introduced: tuple[Diagnostic, ...] = ()
    """What the previous attempt brought in that was not there before: to be avoided."""

    @property
    def file(self) -> Path:
        return self.workspace / self.unit.path

    @property
    def settings_path(self) -> Path:
        return self.config_path or self.file

    @property
    def settings_root(self) -> Path:
        """The root of the tree ``settings_path`` stands in: where the tools run from, as
        they do for the whole repository."""
        root = self.settings_path
        for _ in Path(self.unit.path).parts:
            root = root.parent
        return root


@dataclass(frozen=True)
class AgentOutcome:
    note: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0


class AttemptFailed(Exception):
    """An attempt produced nothing usable (an answer that does not parse, an edit that does
    not match); ``feedback`` tells the next attempt what went wrong."""

    def __init__(self, feedback: str, *, tokens_in: int = 0, tokens_out: int = 0) -> None:
        super().__init__(feedback)
        self.feedback = feedback
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out


class Agent(Protocol):
    """Edits a unit's file. Agents may also have ``async ready()`` (raise AgentError when
    no unit could work: a missing program, an endpoint that does not answer), ``async
    check() -> (ok, message)`` for ``stomper doctor``, ``async aclose()``,
    ``needs_tree = False`` when they only edit the file: such an agent gets a scratch
    workspace holding the one file, not a tree of the whole repository, and
    ``uncontained = True`` when they run as a program of their own without a sandbox, and
    ``deterministic = True`` when the same task always gets the same edit, ``tools``,
    the names of the tools whose diagnostics it can fix, when those are not any, and
    ``async fix_many(tasks) -> list[AgentOutcome]`` when it can fix many files of one tree
    in one call (:func:`fixes_together`)."""

    name: str

    async def fix(self, task: AgentTask) -> AgentOutcome:
        """Edit ``task.file`` in ``task.workspace`` to resolve the unit's diagnostics."""
        ...


class _FixesMany(Protocol):
    async def fix_many(self, tasks: Sequence[AgentTask]) -> list[AgentOutcome]: ...


def needs_tree(agent: Agent) -> bool:
    """Whether the agent runs in a real tree; agents that do not say so are given one."""
    return bool(getattr(agent, "needs_tree", True))


def fixes(agent: Agent) -> frozenset[str] | None:
    """The tools whose diagnostics the agent can fix (``tools``); None when it can try any."""
    tools = getattr(agent, "tools", None)
    return frozenset(tools) if tools is not None else None


def deterministic(agent: Agent) -> bool:
    """Whether the agent's edit follows from the file and the task alone (``autofix``): told
    only what is still left, it would make the same edit again."""
    return bool(getattr(agent, "deterministic", False))


def fixes_together(agent: Agent) -> bool:
    """Whether the agent fixes many units' files in one call (``fix_many``), each as
    :meth:`Agent.fix` would fix it alone: the tasks share one tree (their ``workspace``),
    none has been tried before, and one outcome comes back for each, in their order."""
    return callable(getattr(agent, "fix_many", None))


async def fix_many(agent: Agent, tasks: Sequence[AgentTask]) -> list[AgentOutcome]:
    """The agent's ``fix_many`` (see :func:`fixes_together`); one outcome per task."""
    outcomes = await cast(_FixesMany, agent).fix_many(tasks)
    if len(outcomes) != len(tasks):
        raise AgentError(f"{agent.name} answered {len(outcomes)} of {len(tasks)} tasks")
    return outcomes


def uncontained(agent: Agent) -> bool:
    """Whether the agent is a program of its own that runs without a sandbox (after
    :func:`ready`): the user's repository is then watched around its calls."""
    return bool(getattr(agent, "uncontained", False))


async def ready(agent: Agent) -> None:
    """Refuse a run its agent cannot do at all, before any unit starts."""
    prepare = getattr(agent, "ready", None)
    if prepare is not None:
        await prepare()


async def close(agent: object) -> None:
    """End what ``agent`` keeps open (a client, a process), if it keeps anything."""
    closer = getattr(agent, "aclose", None)
    if closer is not None:
        await closer()


async def check(agent: Agent) -> tuple[bool, str] | None:
    """The agent's own health check, for ``stomper doctor``; None when it has none."""
    checker = getattr(agent, "check", None)
    if checker is None:
        return None
    result: tuple[bool, str] = await checker()
    return result


AgentFactory = Callable[["Settings"], Agent]


def _autofix(settings: Settings) -> Agent:
    from stomper.agents.autofix import AutofixAgent

    return AutofixAgent(
        unsafe_fixes=settings.unsafe_fixes, select=settings.select, ignore=settings.ignore
    )


def _openai(settings: Settings) -> Agent:
    from stomper.agents.openai_chat import OpenAIChatAgent

    return OpenAIChatAgent.from_settings(settings)


def _command(preset: str) -> AgentFactory:
    def factory(settings: Settings) -> Agent:
        from stomper.agents.command import CommandAgent

        return CommandAgent.from_settings(preset, settings)

    return factory


AGENTS: dict[str, AgentFactory] = {
    "autofix": _autofix,
    "openai": _openai,
    **{preset: _command(preset) for preset in ("claude", "codex", "aider", "cursor", "command")},
}


_MODULES = {
    "autofix": "stomper.agents.autofix",
    "openai": "stomper.agents.openai_chat",
    **dict.fromkeys(("claude", "codex", "aider", "cursor", "command"), "stomper.agents.command"),
}


def module_of(name: str) -> str:
    """The module the agent called ``name`` is made by (``module:attribute``'s module)."""
    return _MODULES.get(name) or name.partition(":")[0]


def load_agent(name: str, settings: Settings) -> Agent:
    """The agent called ``name``: a registered one, or ``module:attribute``."""
    if name in AGENTS:
        return AGENTS[name](settings)
    if ":" not in name:
        raise AgentError(
            f"unknown agent {name!r}: choose from {', '.join(sorted(AGENTS))}, "
            "or name a class as module:attribute"
        )
    module_name, _, attribute = name.partition(":")
    # The user's own code: whatever it raises is theirs to fix, in one line.
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:
        raise AgentError(f"cannot load agent {name!r}: {_one_line(exc)}") from exc
    if not callable(factory):
        raise AgentError(
            f"cannot load agent {name!r}: it is a {type(factory).__name__}, not a factory "
            "that takes the settings and returns an agent"
        )
    try:
        agent = factory(settings)
    except StomperError:
        raise
    except Exception as exc:
        raise AgentError(f"the agent factory {name!r} failed: {_one_line(exc)}") from exc
    if not isinstance(getattr(agent, "name", None), str) or not callable(
        getattr(agent, "fix", None)
    ):
        raise AgentError(
            f"the agent factory {name!r} returned a {type(agent).__name__}, which is no "
            "agent: an agent has a name and an async fix(task) method"
        )
    return cast(Agent, agent)


def _one_line(exc: Exception) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())
