"""``--executor ray``: each unit's produce step runs as a Ray task; landing stays here.

The coordinator (this process) keeps the graph, the run's limit, the journal and the
lander. :class:`RayJob` stands in for the mode's job: its :meth:`~RayJob.produce_many`
sends a group of units to the cluster as one task (:mod:`stomper.cluster_worker` is its
body) and waits for what they produced, as bytes; landing is the local job's. What the
workers say as they go (phases, requests, builds) comes back through a queue of the run's,
to the live view and the ops log, as it happens.

Faults: a task is never retried by Ray (``max_retries=0``: a retry of a model's unit would
pay twice). A task whose worker or node died is sent once more, to wherever Ray places it;
a second death fails its units. Cancelling the run cancels its tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stomper import events, git
from stomper.cluster_worker import Spec
from stomper.errors import ConfigError
from stomper.events import Phase
from stomper.unit import Unit, UnitResult
from stomper.workflow.job import EmitFor, Produced
from stomper.workflow.pipeline import Pipeline, failed_unit

if TYPE_CHECKING:
    from stomper.config import Settings
    from stomper.repository import Repository
    from stomper.workflow.limit import Limit

ADDRESS_ENV = "RAY_ADDRESS"
_REMOVAL_WAIT = 30.0
_END_WAIT = 10.0
_SENDS = 2
"""Times a task is sent: once, and once more if its worker died."""


def require_ray() -> Any:
    """The ``ray`` module, or a one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'stomper[ray]'") from None
    return ray


@contextlib.asynccontextmanager
async def connected(address: str | None) -> AsyncIterator[Any]:
    """Ray, connected to the cluster at ``address`` (else ``$RAY_ADDRESS``, else a local
    Ray started for the run and stopped after it); one already connected is used as is."""
    ray = require_ray()
    # Ray prints what its raylets report (a worker that died) on stdout, which is the JSON
    # document's: while the run works on Ray, and prints nothing of its own, stdout is stderr.
    with contextlib.redirect_stdout(sys.stderr):
        if ray.is_initialized():
            yield ray
            return
        async with _started(ray, address) as connection:
            yield connection


@contextlib.asynccontextmanager
async def _started(ray: Any, address: str | None) -> AsyncIterator[Any]:
    where = address or os.environ.get(ADDRESS_ENV) or "local"
    options: dict[str, Any] = {
        "address": where,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
    }
    if where == "local":
        options["include_dashboard"] = False
    try:
        # In the main thread, where Ray may set its signal handlers: the units wait for it.
        ray.init(**options)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"cannot reach the Ray cluster at {where}: {exc}") from None
    try:
        yield ray
    finally:
        await asyncio.to_thread(ray.shutdown)


async def bundle(repo: Repository, commits: Sequence[str]) -> bytes:
    """A ``git bundle`` holding ``commits`` and their history, made in a repository of its
    own that borrows the user's objects: nothing of the user's is written."""
    with tempfile.TemporaryDirectory(prefix="stomper-bundle-") as scratch:
        borrower = Path(scratch) / "borrower.git"
        await git.git(Path(scratch), "init", "--quiet", "--bare", str(borrower))
        alternates = borrower / "objects" / "info" / "alternates"
        alternates.write_text(f"{repo.common_dir / 'objects'}\n")
        for n, commit in enumerate(dict.fromkeys(commits)):
            await git.git(borrower, "update-ref", f"refs/heads/base-{n}", commit)
        out = Path(scratch) / "base.bundle"
        await git.git(borrower, "bundle", "create", "--quiet", str(out), "--branches")
        return out.read_bytes()


@contextlib.asynccontextmanager
async def on_ray(
    run_id: str,
    repo: Repository,
    base: str,
    local: Pipeline,
    units: Sequence[Unit],
    settings: Settings,
) -> AsyncIterator[RayJob]:
    """The job of ``local`` (a run's pipeline), its units produced on the Ray cluster of
    ``settings`` (``ray_address``): the base and the units put in Ray's store once for the
    run. The workers make their agent and tools from ``settings``."""
    async with connected(settings.ray_address) as ray:
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        made = await bundle(repo, [base, *(unit.base for unit in units)])
        # On this node, which lives as long as the run: a worker's node may not.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        spec = Spec(
            key=f"{run_id}-{base[:12]}",
            run_id=run_id,
            base=base,
            settings=settings,
            policy=local.policy,
            tree=local.tree,
            bundle=[ray.put(made)],
            units=[ray.put(list(units))],
            events=queue,
        )
        job = RayJob(local, spec, ray)
        try:
            yield job
        finally:
            await job.aclose()
            with contextlib.suppress(Exception):
                # Killed: nothing it holds is wanted now, and a graceful end waits (1.4 s).
                queue.shutdown(force=True)
            await _remove_clones(ray, spec.key)


async def on_every_node(
    ray: Any, tools: Sequence[str], program: str | None
) -> dict[str, dict[str, str | None]]:
    """What each node alive has of what a unit needs (:func:`~stomper.cluster_worker.node_facts`),
    by the node's address."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from stomper.cluster_worker import node_facts

    asked = {}
    for node in ray.nodes():
        if node.get("Alive"):
            where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            task = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy=where)(node_facts)
            name = f"{node['NodeManagerAddress']} ({node['NodeID'][:8]})"
            asked[name] = task.remote(list(tools), program)
    try:
        found = await asyncio.wait_for(asyncio.gather(*asked.values()), timeout=_REMOVAL_WAIT)
    except (TimeoutError, ray.exceptions.RayError) as exc:
        raise ConfigError(f"a node of the Ray cluster did not answer: {_first_line(exc)}") from None
    return dict(zip(asked, found, strict=True))


async def _remove_clones(ray: Any, key: str) -> None:
    """Remove the run's clone from every node alive (one that died took its own along)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from stomper.cluster_worker import remove_clone

    removals = []
    for node in ray.nodes():
        if node.get("Alive"):
            where = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
            task = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy=where)(remove_clone)
            removals.append(task.remote(key))
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.gather(*removals), timeout=_REMOVAL_WAIT)


@dataclass
class RayJob:
    """The mode's job, its units produced on the cluster."""

    local: Pipeline
    spec: Spec
    ray: Any
    _remote: Any = None
    _emitters: dict[str, tuple[Callable[[Phase], None], contextvars.Context]] = field(
        default_factory=dict
    )
    """Each unit at work's emitter, with the context it is called in (the graph's node's:
    LangGraph's stream writer reads its run from there)."""
    _phase: dict[str, Phase] = field(default_factory=dict)
    _ends: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    _tokens: Any = field(default_factory=lambda: itertools.count())
    _drain: asyncio.Task[None] | None = None
    resent: int = 0
    """Tasks whose worker died and were sent again."""

    @property
    def limit(self) -> Limit:
        return self.local.limit

    def landed(self, produced: Produced) -> UnitResult | None:
        return self.local.landed(produced)

    async def land_many(self, produced: Sequence[Produced], emit: EmitFor) -> list[UnitResult]:
        return await self.local.land_many(produced, emit)

    async def produce_many(self, units: Sequence[Unit], emit: EmitFor) -> list[Produced]:
        if self._drain is None:
            # Made here, in the run's context: what the workers record reaches its log.
            self._drain = asyncio.ensure_future(self._take_events())
        here = contextvars.copy_context()
        for unit in units:
            self._emitters[unit.path] = (emit(unit.path), here)
        try:
            why = ""
            for send in range(_SENDS):
                try:
                    return await self._send(units)
                except self._died() as died:
                    if send < _SENDS - 1:
                        self.resent += 1
                    why = f"its worker died {_SENDS} times on the cluster: {_first_line(died)}"
                except self.ray.exceptions.RayError as exc:
                    why = f"the cluster could not work it: {_first_line(exc)}"
                    break
            return [Produced(failed_unit(unit, why, attempts=1)) for unit in units]
        finally:
            for unit in units:
                self._emitters.pop(unit.path, None)
                self._left(unit.path)

    async def _send(self, units: Sequence[Unit]) -> list[Produced]:
        token = str(next(self._tokens))
        ended = self._ends[token] = asyncio.get_running_loop().create_future()
        ref = self._task().remote(self.spec, list(units), token)
        try:
            produced: list[Produced] = await ref
            # What the worker sent before it returned is shown before its units end (a
            # worker that could not say it is not waited for long).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ended), timeout=_END_WAIT)
            return produced
        except asyncio.CancelledError:
            self.ray.cancel(ref, force=True)
            raise
        finally:
            self._ends.pop(token, None)

    def _task(self) -> Any:
        if self._remote is None:
            from stomper.cluster_worker import produce

            ray = self.ray

            def work(spec: Spec, units: list[Unit], token: str) -> list[Produced]:
                return produce(spec, units, token, ray.get)

            self._remote = ray.remote(max_retries=0, num_cpus=1)(work)
        return self._remote

    def _died(self) -> tuple[type[BaseException], ...]:
        exceptions = self.ray.exceptions
        return (
            exceptions.WorkerCrashedError,
            exceptions.NodeDiedError,
            exceptions.ObjectLostError,
        )

    async def _take_events(self) -> None:
        """Show what the workers say, as they say it, until the run ends."""
        queue = self.spec.events
        while True:
            try:
                said = await queue.get_async()
            except self.ray.exceptions.RayError:
                return  # the queue is gone: the units' results still come
            kind = said[0]
            if kind == "unit":
                _, path, phase = said
                self._entered(path, Phase(phase))
            elif kind == "ops":
                events.record(said[1])
            elif kind == "end":
                ended = self._ends.get(said[1])
                if ended is not None and not ended.done():
                    ended.set_result(None)

    def _entered(self, path: str, phase: Phase) -> None:
        """A unit's phase on its worker, shown here; the run's count of agent calls in
        flight follows the units in their agent's phase."""
        self._left(path)
        self._phase[path] = phase
        if phase is Phase.AGENT:
            self.limit.calling += 1
            self.limit.peak = max(self.limit.peak, self.limit.calling)
        emitter = self._emitters.get(path)
        if emitter is not None:
            emit, context = emitter
            context.run(emit, phase)

    def _left(self, path: str) -> None:
        if self._phase.pop(path, None) is Phase.AGENT:
            self.limit.calling -= 1

    async def aclose(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._drain


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
