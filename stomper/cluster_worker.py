"""The worker's side of ``--executor ray``: a unit's produce step, on a node of the cluster.

Each node gets the run's base once: the coordinator puts a ``git bundle`` of it in Ray's
object store, and the first task of the run on a node clones it into a folder of that
node's (under a file lock, so the node's other worker processes wait for it and then share
it). Each worker process keeps, for the run, its own pool of trees of that clone, the agent
and the tools, made at its first task and reused by the next ones; a task works its units
as a local run works them (:class:`~stomper.workflow.pipeline.Pipeline`, with no lander)
and gives back what is to land as bytes. Its phases and what it records (the model's
requests, the tests) go to the coordinator as they happen, through a queue of the run's.

Nothing here imports Ray at import time: the coordinator hands over the functions it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from stomper import git
from stomper.agents import load_agent
from stomper.budget import Budget
from stomper.config import Settings
from stomper.diagnostics import close_collectors, collectors_named
from stomper.events import OpsEvent, Phase, recording
from stomper.gate import TestGate
from stomper.offload import Offload
from stomper.plan import ensure_tools
from stomper.unit import Unit
from stomper.workflow.job import Produced
from stomper.workflow.limit import Limit
from stomper.workflow.pipeline import Pipeline, Policy
from stomper.workspace import Workspaces

FOLDER = "stomper-ray"
"""Under the node's temporary folder: a folder per run's base, holding its clone."""


@dataclass(frozen=True)
class Spec:
    """What a worker needs of the run, the same for every task."""

    key: str
    """Names the run's base on a node: its clone's folder."""
    run_id: str
    base: str
    """The run's base commit (where the tests' baseline runs)."""
    settings: Settings
    policy: Policy
    tree: bool
    bundle: list[Any]
    """The bundle's object in Ray's store, in a list: Ray fetches an argument's objects
    for every task, and a task needs the bundle only where no clone is made yet."""
    units: list[Any]
    """Every unit of the run (their object, in a list): a tree tool checks them together."""
    events: Any
    """The run's queue of events (a :class:`ray.util.queue.Queue`)."""


class _Side:
    """A worker process's part of one run: its trees of the node's clone, its agent, its
    tools, and the loop they live on."""

    def __init__(self, spec: Spec, clone: Path, units: Sequence[Unit]) -> None:
        settings = spec.settings
        self.loop = asyncio.new_event_loop()
        self.workspaces = Workspaces(
            clone, clone.parent / f"spaces-{os.getpid()}", pool_size=2 * settings.parallel
        )
        self.collectors = collectors_named(settings.tools)
        gate = None
        if settings.test_cmd:
            gate = TestGate(
                settings.test_cmd,
                timeout=settings.test_timeout,
                base_tree=lambda: self.workspaces.tree_root(spec.base),
            )
        self.pipeline = Pipeline(
            spec.run_id,
            self.workspaces,
            load_agent(settings.agent, settings),
            self.collectors,
            None,
            spec.policy,
            gate,
            spec.tree,
            None,
            Limit(settings.parallel),
            Offload(),
            Budget(),
        )
        self.loop.run_until_complete(self._prepare(units))

    def close(self) -> None:
        """End the processes this side keeps (the tools', the blob reader's, the
        offload's) and its loop."""
        try:
            self.loop.run_until_complete(self._aclose())
        finally:
            self.loop.close()

    async def _aclose(self) -> None:
        await close_collectors(self.collectors)
        await self.workspaces.aclose()
        if self.pipeline.offload is not None:
            self.pipeline.offload.close()

    async def _prepare(self, units: Sequence[Unit]) -> None:
        await ensure_tools(self.collectors)
        await self.workspaces.prepare(units)

    def produce(
        self, units: Sequence[Unit], send: Callable[[tuple[Any, ...]], None]
    ) -> list[Produced]:
        return self.loop.run_until_complete(self._produce(units, send))

    async def _produce(
        self, units: Sequence[Unit], send: Callable[[tuple[Any, ...]], None]
    ) -> list[Produced]:
        def emit(path: str) -> Callable[[Phase], None]:
            def phase(name: Phase) -> None:
                send(("unit", path, name.value))

            return phase

        def record(event: OpsEvent) -> None:
            send(("ops", event))

        with recording(record):
            produced = await self.pipeline.produce_many(units, emit)
        return [await self._shipped(one) for one in produced]

    async def _shipped(self, produced: Produced) -> Produced:
        """``produced`` with every new blob's bytes in its patch, as the coordinator's
        landing stores them: a blob git wrote here through a filter is read back raw."""
        patches = []
        for patch in produced.patches:
            if patch.new_blob is not None and patch.content is None:
                raw = await self.workspaces.blobs.read(patch.new_blob)
                patch = replace(patch, content=raw)
            patches.append(patch)
        return replace(produced, patches=tuple(patches))


_SIDES: dict[str, _Side] = {}


def produce(
    spec: Spec, units: Sequence[Unit], token: str, get: Callable[[Any], Any]
) -> list[Produced]:
    """Work ``units`` on this node: the body of the run's Ray task. ``get`` fetches an
    object of Ray's store (``ray.get``); the last event sent says ``token`` is done."""

    def send(said: tuple[Any, ...]) -> None:
        # Not waited for: a task blocked in ray.get gives its CPU back to Ray, which starts
        # another task meanwhile (N + 1 units at once were seen). A caller's calls of an
        # actor arrive in order, the last ("end") after the others. What a worker says is
        # for the view and the log: it is never worth the work.
        with contextlib.suppress(Exception):
            spec.events.actor.put.remote(said)

    try:
        return _side(spec, get).produce(units, send)
    finally:
        send(("end", token))


def _side(spec: Spec, get: Callable[[Any], Any]) -> _Side:
    """This process's side of the run of ``spec``, made at its first task. A process works
    for one coordinator, whose runs come one after the other: a side of an earlier run is
    ended when the next one begins."""
    side = _SIDES.get(spec.key)
    if side is None:
        for key in list(_SIDES):
            _SIDES.pop(key).close()
        clone = node_clone(spec, get)
        side = _SIDES[spec.key] = _Side(spec, clone, get(spec.units[0]))
    return side


def node_facts(tools: Sequence[str], program: str | None) -> dict[str, str | None]:
    """What this node has of what a unit needs: its host, Python, stomper, git, the tools
    of ``tools`` and the agent's ``program`` (each None where it has none)."""
    import importlib.metadata
    import platform
    import socket

    git_found = shutil.which("git")
    said = None
    if git_found is not None:
        done = subprocess.run([git_found, "--version"], capture_output=True, text=True, check=False)
        said = done.stdout.strip() or None
    facts: dict[str, str | None] = {
        "host": socket.gethostname(),
        "python": platform.python_version(),
        "stomper": importlib.metadata.version("stomper"),
        "git": said,
    }
    # The tools as the units look for them (ruff beside this Python, not only on PATH).
    for collector in collectors_named(tools):
        info = asyncio.run(collector.info())
        facts[collector.name] = info.version if info.found else None
    if program is not None:
        facts[program] = shutil.which(program)
    return facts


def remove_clone(key: str) -> None:
    """Remove the node's clone of the run's base named ``key``, and the trees made of it."""
    shutil.rmtree(Path(tempfile.gettempdir()) / FOLDER / key, ignore_errors=True)


def node_clone(spec: Spec, get: Callable[[Any], Any]) -> Path:
    """The node's clone of the run's base: made by the first worker to ask, from the
    bundle; the others wait for it, then share it."""
    from filelock import FileLock

    folder = Path(tempfile.gettempdir()) / FOLDER / spec.key
    folder.mkdir(parents=True, exist_ok=True)
    clone = folder / "repo"
    with FileLock(str(folder / "clone.lock")):
        if (folder / "ready").exists():
            return clone
        shutil.rmtree(clone, ignore_errors=True)
        bundle = folder / "base.bundle"
        bundle.write_bytes(get(spec.bundle[0]))
        git.git_sync(folder, "clone", "--quiet", "--no-checkout", str(bundle), str(clone))
        # Checked out at the base: a unit worked in a scratch folder is checked by the
        # tools' settings of its place here, as a local run checks it by the checkout's.
        git.git_sync(clone, "checkout", "--quiet", "--detach", spec.base)
        bundle.unlink()
        (folder / "ready").touch()
    return clone
