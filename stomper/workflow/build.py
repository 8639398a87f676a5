"""Commands run on edits before they land: a directory's build, a task's verification.

A command runs in a workspace of its own (a pooled tree of :mod:`stomper.workspace`, at the
target's tip, the edits written into it), contained as a CLI agent is
(:mod:`stomper.sandbox`): the edits are an agent's, and the command runs them. Exit 0 is a
pass. Paths in its output name the files as the repository does, not the workspace.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from stomper import events, proc
from stomper.events import BuildEvent
from stomper.sandbox import Sandbox
from stomper.workflow.limit import Places
from stomper.workspace import Workspaces, remove_regular, write_regular

DIR = "{dir}"
_TAIL_LINES = 30
_RELEVANT_LINES = 20


@dataclass(frozen=True)
class Edited:
    """A file's edit, as it would land."""

    path: str
    mode: str
    old_blob: str | None
    """None: the edit creates the file."""
    content: bytes | None
    """None: the edit deletes the file."""


@dataclass(frozen=True)
class Built:
    """How one build went."""

    passed: bool
    output: str
    seconds: float = 0.0

    def tail(self, lines: int = _TAIL_LINES) -> str:
        return "\n".join(self.output.rstrip().splitlines()[-lines:])

    def about(self, path: str) -> str:
        """The lines of the output that name ``path`` (its file name), else its tail: what
        a rolled-back edit is told it broke."""
        name = PurePosixPath(path).name
        named = [line for line in self.output.splitlines() if name in line]
        return "\n".join(named[:_RELEVANT_LINES]) if named else self.tail(_RELEVANT_LINES)


class Builder:
    """Runs a command (a directory's build, a task's verification) in a tree at a commit
    with some edits written in; at most ``parallel`` at once.

    A build's tree is made ready (reset to the tip, the edits written in) while the builds
    before it run: ``workspaces`` holds ``parallel + 1`` trees, and a build waits for its
    place among those running only once its tree is ready.
    """

    def __init__(
        self,
        template: Sequence[str] = (),
        *,
        workspaces: Workspaces,
        sandbox: Sandbox,
        timeout: float,
        parallel: int = 1,
    ) -> None:
        self.template = tuple(template)
        """The argv of :meth:`build`, ``{dir}`` in it standing for the directory."""
        self.workspaces = workspaces
        self.sandbox = sandbox
        self.timeout = timeout
        self._ready = Places(parallel + 1)
        self._running = Places(parallel)

    def argv(self, directory: str) -> tuple[str, ...]:
        where = directory or "."
        return tuple(part.replace(DIR, where) for part in self.template)

    async def build(
        self, tip: str, directory: str, edits: Sequence[Edited], *, first: bool = True
    ) -> Built:
        """The build of ``directory`` at ``tip`` with ``edits`` written in. A group's later
        builds (``first`` False: at the base, bisection) go before the first builds of
        other groups: a group half settled holds its files from landing, and its builds
        come one after the other."""
        what = f"build of {directory or '.'}"
        return await self.run(tip, self.argv(directory), edits, what=what, urgent=not first)

    async def run(
        self,
        tip: str,
        command: Sequence[str],
        edits: Sequence[Edited],
        *,
        what: str,
        urgent: bool = False,
        within: float | None = None,
    ) -> Built:
        """``command`` (an argv) in a tree at ``tip`` with ``edits`` written in, contained;
        passed when it exits 0 within ``within`` seconds (the builder's timeout unless
        told). The run's ops log gets it as a build, named ``what``."""
        asked = time.monotonic()
        built = await self._run(tip, command, edits, urgent=urgent, within=within)
        waited = max(time.monotonic() - asked - built.seconds, 0.0)
        events.record(
            BuildEvent(what, shlex.join(command), len(edits), built.passed, built.seconds, waited)
        )
        return built

    async def _run(
        self,
        tip: str,
        command: Sequence[str],
        edits: Sequence[Edited],
        *,
        urgent: bool,
        within: float | None,
    ) -> Built:
        limit = within if within is not None else self.timeout
        async with self._ready.taken(urgent=urgent), self.workspaces.tree(tip) as space:
            for edit in edits:
                if edit.content is None:
                    await asyncio.to_thread(remove_regular, space.root, edit.path)
                else:
                    await asyncio.to_thread(
                        write_regular, space.root, edit.path, edit.content, edit.mode
                    )
            with tempfile.TemporaryDirectory(prefix="stomper-build-") as scratch:
                argv = self.sandbox.wrap(command, workspace=space.root, scratch=Path(scratch))
                async with self._running.taken(urgent=urgent):
                    began = time.monotonic()
                    try:
                        done = await proc.run(
                            argv, cwd=space.root, timeout=limit, check=False, reap=True
                        )
                    except proc.ProcessTimeout:
                        stopped = f"{command[0]} ran past {limit:g}s and was stopped"
                        return Built(False, stopped, time.monotonic() - began)
                    except OSError as exc:
                        return Built(False, f"cannot run {command[0]}: {exc}")
                    seconds = time.monotonic() - began
            # Paths in the output name the files as the repository does, not the workspace.
            output = (done.stdout + done.stderr).decode(errors="replace")
            output = output.replace(f"{space.root}{os.sep}", "")
            return Built(done.returncode == 0, output, seconds)
