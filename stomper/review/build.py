"""A directory's build as the gate of its edits, and the bisection of a build they break.

The build is the project's own command (``build_cmd``; ``{dir}`` is the directory), run in a
workspace of its own (a pooled tree of :mod:`stomper.workspace`, at the target's tip, the
edits written into it), contained as a CLI agent is (:mod:`stomper.sandbox`): the edits are a
model's, and a build runs them. Exit 0 is a pass.

When the edits of a directory break its build, the edits that break it are found as a merge
queue finds the changes of a failed batch that break it: halving, on what is proven to build
so far, down to the first edit whose addition fails, then the rest in one build on top. A
build known to fail is never run twice. One culprit among k edits costs ceil(log2(k)) builds
and one more for the rest, and the edits kept are the largest set so found that builds.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from stomper import proc
from stomper.errors import ConfigError
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


def split_build(command: str) -> tuple[str, ...]:
    """``build_cmd`` as an argv template; a malformed one is the user's to mend."""
    try:
        return proc.split_command(
            command, setting="build_cmd", example="the command that builds a directory"
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


class Builder:
    """Runs the build of a directory with some of its edits; at most ``parallel`` at once.

    A build's tree is made ready (reset to the tip, the edits written in) while the builds
    before it run: ``workspaces`` holds ``parallel + 1`` trees, and a build waits for its
    place among those running only once its tree is ready.
    """

    def __init__(
        self,
        command: str | None,
        *,
        workspaces: Workspaces,
        sandbox: Sandbox,
        timeout: float,
        parallel: int = 1,
    ) -> None:
        self.template = split_build(command) if command is not None else ()
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
        return await self.run(tip, self.argv(directory), edits, urgent=not first)

    async def run(
        self,
        tip: str,
        command: Sequence[str],
        edits: Sequence[Edited],
        *,
        urgent: bool = False,
        within: float | None = None,
    ) -> Built:
        """``command`` (an argv) in a tree at ``tip`` with ``edits`` written in, contained;
        passed when it exits 0 within ``within`` seconds (the builder's timeout unless
        told)."""
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
                        return Built(False, f"{command[0]} ran past {limit:g}s and was stopped")
                    except OSError as exc:
                        return Built(False, f"cannot run {command[0]}: {exc}")
                    seconds = time.monotonic() - began
            # Paths in the output name the files as the repository does, not the workspace.
            output = (done.stdout + done.stderr).decode(errors="replace")
            output = output.replace(f"{space.root}{os.sep}", "")
            return Built(done.returncode == 0, output, seconds)


@dataclass
class Bisected:
    """What bisection kept, and why it left the rest out."""

    kept: list[Edited] = field(default_factory=list)
    """The largest set of edits found to build together (in the order given)."""
    culprits: dict[str, Built] = field(default_factory=dict)
    """Each edit left out, by path, with the build that failed with it."""
    builds: int = 0


async def bisect(
    build: Callable[[Sequence[Edited]], Awaitable[Built]],
    edits: Sequence[Edited],
    failed: Built,
) -> Bisected:
    """Find the edits that break the build: ``failed`` is the build of all of ``edits``,
    ``build`` builds a set of them.

    The first culprit is found by halving the edits' prefixes: what is kept builds, the
    whole does not, so some edit is the first whose prefix fails. Those before it are kept
    (their prefix built), and the edits after it are tried in one build on top: when they
    build, that culprit was the only one."""
    found = Bisected()
    rest, failing = list(edits), failed
    while rest:
        if len(rest) == 1:
            found.culprits[rest[0].path] = failing
            break
        # The prefix of `passing` edits builds (none: what is kept); that of `failed_at` fails.
        passing, failed_at = 0, len(rest)
        while failed_at - passing > 1:
            middle = (passing + failed_at) // 2
            outcome = await build([*found.kept, *rest[:middle]])
            found.builds += 1
            if outcome.passed:
                passing = middle
            else:
                failed_at, failing = middle, outcome
        found.culprits[rest[failed_at - 1].path] = failing
        found.kept += rest[: failed_at - 1]
        rest = rest[failed_at:]
        if not rest:
            break
        outcome = await build([*found.kept, *rest])
        found.builds += 1
        if outcome.passed:
            found.kept += rest
            break
        failing = outcome
    return found
