"""Isolation: each unit works in a space of its own, at its base commit.

Two kinds, chosen per unit by what its agent and checks need:

- a **scratch** space: a private folder holding the unit's one file at its base content.
  Agents that only edit the file (autofix, the HTTP LLM agent) need no more, and the tools
  verify it through stdin under the file's real path, so they apply the project's settings.
  It costs a blob read and a file write, where a worktree costs a checkout of the whole tree.
- a **worktree** from a pool of N made once per run and reset to the unit's base before each
  use (checkout, then a clean of everything untracked or ignored), for agents that run in a
  real tree (CLI agents), for mypy, and for ``--test-cmd``.

Both live below the run's folder under the git common directory, never in the working tree,
and are removed when the run ends however it ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import git, proc
from stomper.diagnostics import Collector, Diagnostic
from stomper.guardrails import file_violation, scope_violation
from stomper.journal import remove_tree
from stomper.store import Blobs
from stomper.unit import Unit

_ADD_TRIES = 3


@dataclass(frozen=True)
class Space:
    """Where one unit works: the folder an agent sees, and how to check and reset it."""

    root: Path
    """The folder the agent works in; the unit's file is ``root / unit.path``."""
    repo: Path
    real_tree: bool
    """A full worktree at the base (True), or a scratch folder with the one file."""
    blobs: Blobs

    def file(self, unit: Unit) -> Path:
        return self.root / unit.path

    def config_path(self, unit: Unit) -> Path:
        """Where the file stands for the tools' configuration (per-file ignores, nested
        settings): its real place in a worktree, its place in the checkout for scratch."""
        return (self.root if self.real_tree else self.repo) / unit.path

    async def violation(self, unit: Unit) -> str | None:
        if self.real_tree:
            return await scope_violation(self.root, unit.path, unit.mode, unit.base)
        return _scratch_violation(self.root, unit)

    async def restore(self, unit: Unit, content: bytes) -> None:
        """Undo everything the agent did, then give the unit's file ``content``."""
        if self.real_tree:
            await git.reset_worktree(self.root, unit.base)
        else:
            _clear_scratch(self.root)
            _place(self.root, unit, content)
            return
        self.file(unit).write_bytes(content)

    async def collect(self, collectors: Sequence[Collector], unit: Unit) -> list[Diagnostic]:
        """The unit file's findings as it stands in the space.

        Tools whose findings depend on the file alone check its bytes as if at its place in
        the checkout, in a worktree as in a scratch folder (ruff then answers through its
        long-lived server); the others check the worktree.
        """
        found: list[Diagnostic] = []
        source = self.file(unit).read_bytes()
        for collector in collectors:
            if collector.per_file:
                found += await collector.collect_source(self.repo, unit.path, source)
            else:
                found += await collector.collect(self.root, [unit.path])
        return found

    async def blob(self, unit: Unit) -> str:
        """Write the unit's file into the object store; its blob id."""
        return await self.blobs.write(unit.path, self.file(unit).read_bytes())


class Workspaces:
    """The spaces of one run: scratch folders and a pool of worktrees, in one folder.

    :meth:`aclose` ends the git process it reads blobs through; :meth:`close` removes the
    spaces.
    """

    def __init__(self, root: Path, folder: Path, *, pool_size: int = 4) -> None:
        self.root = root
        self.folder = folder
        self.pool_size = pool_size
        self.blobs = Blobs(root)
        self._free: asyncio.Queue[Path] = asyncio.Queue()
        self._made = 0
        # git reads every worktree's metadata when it adds or removes one, and fails on one
        # half-written by a concurrent call ("failed to read .git/worktrees/0/commondir"):
        # adds and removes are serialized.
        self._admin = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def scratch(self, unit: Unit) -> AsyncIterator[Space]:
        """A private folder holding only the unit's file, at its base content."""
        path = self.folder / f"s{unit.index}"
        remove_tree(path)
        _place(path, unit, await self.blobs.read(unit.base_blob))
        try:
            yield Space(path, self.root, False, self.blobs)
        finally:
            remove_tree(path)

    @contextlib.asynccontextmanager
    async def tree(self, commit: str) -> AsyncIterator[Space]:
        """A worktree of the pool, reset to ``commit`` with nothing left of earlier units."""
        path = await self._take()
        try:
            await git.reset_worktree(path, commit)
            yield Space(path, self.root, True, self.blobs)
        finally:
            self._free.put_nowait(path)

    @contextlib.asynccontextmanager
    async def tree_root(self, commit: str) -> AsyncIterator[Path]:
        """The folder of a pooled worktree at ``commit``."""
        async with self.tree(commit) as space:
            yield space.root

    async def _take(self) -> Path:
        if self._free.empty() and self._made < self.pool_size:
            self._made += 1
            path = self.folder / f"w{self._made}"
            try:
                await self._add(path)
            except BaseException:
                self._made -= 1
                raise
            return path
        return await self._free.get()

    async def _add(self, path: Path) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for attempt in range(_ADD_TRIES):
            async with self._admin:
                try:
                    # Only the registration needs the lock; the checkout of the files is
                    # the first reset, outside it, so the pool fills in parallel.
                    await git.add_worktree(self.root, path, "HEAD", checkout=False)
                    return
                except proc.CalledProcessError:
                    # Another run in the same repository may be adding one at this moment,
                    # or a killed run left this one registered (and locked): clear it.
                    if attempt == _ADD_TRIES - 1:
                        raise
                    await git.remove_worktree(self.root, path)
                    remove_tree(path)
                    await git.prune_worktrees(self.root)
            await asyncio.sleep(0.05 * (attempt + 1))

    async def prepare(self, units: Sequence[Unit]) -> None:
        """Learn which unit files' blobs can be written without a git process each."""
        await self.blobs.prepare([unit.path for unit in units])

    async def aclose(self) -> None:
        await self.blobs.aclose()

    def close(self) -> None:
        """Remove the run's spaces; safe to call from any state, also after a cancel."""
        release_folder(self.root, self.folder)


def release_folder(root: Path, folder: Path) -> None:
    """Delete a folder of worktrees and let git forget them (blocking; for exits and clean)."""
    git.release_worktrees_sync(root, folder)
    if folder.exists():
        remove_tree(folder)
    git.prune_worktrees_sync(root)


def _place(folder: Path, unit: Unit, content: bytes) -> None:
    file = folder / unit.path
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_bytes(content)
    if unit.mode == "100755":
        file.chmod(file.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _clear_scratch(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            remove_tree(entry)
        else:
            entry.unlink()


def _scratch_violation(folder: Path, unit: Unit) -> str | None:
    """Why a scratch folder holds more or other than the unit's one regular file."""
    others = []
    for directory, _dirs, files in os.walk(folder):
        for name in files:
            relative = (Path(directory) / name).relative_to(folder).as_posix()
            if relative != unit.path:
                others.append(relative)
    if others:
        return f"the change touches files outside the unit: {', '.join(sorted(others))}"
    return file_violation(folder / unit.path, unit.path, unit.mode)
