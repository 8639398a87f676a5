"""Isolation: each unit works in a git worktree of its own at the base commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from stomper import git, proc
from stomper.journal import remove_tree

_ADD_TRIES = 3


class Workspaces:
    """The worktrees of one run, kept in one folder under the git common directory."""

    def __init__(self, root: Path, folder: Path) -> None:
        self.root = root
        self.folder = folder
        # git reads every worktree's metadata when it adds or removes one, and fails on one
        # half-written by a concurrent call ("failed to read .git/worktrees/0/commondir"):
        # adds and removes are serialized.
        self._admin = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def isolate(self, name: str, commit: str) -> AsyncIterator[Path]:
        """A fresh worktree at ``commit``, removed however the block ends."""
        path = self.folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            await self._add(path, commit)
            yield path
        finally:
            # A cancelled unit must still give its worktree back: the removal is shielded.
            await asyncio.shield(self._remove(path))

    async def _add(self, path: Path, commit: str) -> None:
        for attempt in range(_ADD_TRIES):
            async with self._admin:
                try:
                    await git.add_worktree(self.root, path, commit)
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

    async def _remove(self, path: Path) -> None:
        async with self._admin:
            await git.remove_worktree(self.root, path)
            if path.exists():
                remove_tree(path)
                await git.prune_worktrees(self.root)

    def close(self) -> None:
        """Remove whatever is left of the run's worktrees; safe to call from any state."""
        release_folder(self.root, self.folder)


def release_folder(root: Path, folder: Path) -> None:
    """Delete a folder of worktrees and let git forget them (blocking; for exits and clean)."""
    git.release_worktrees_sync(root, folder)
    if folder.exists():
        remove_tree(folder)
    git.prune_worktrees_sync(root)
