"""Isolation: each unit works in a git worktree of its own at the base commit."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from stomper import git
from stomper.journal import remove_tree


class Workspaces:
    """The worktrees of one run, kept in one folder under the git common directory."""

    def __init__(self, root: Path, folder: Path, base: str) -> None:
        self.root = root
        self.folder = folder
        self.base = base

    @contextlib.asynccontextmanager
    async def isolate(self, name: str) -> AsyncIterator[Path]:
        """A fresh worktree at the base commit, removed however the block ends."""
        path = self.folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            await git.add_worktree(self.root, path, self.base)
            yield path
        finally:
            # A cancelled unit must still give its worktree back: the removal is shielded.
            await asyncio.shield(self._remove(path))

    async def _remove(self, path: Path) -> None:
        await git.remove_worktree(self.root, path)
        if path.exists():
            remove_tree(path)
            await git.prune_worktrees(self.root)

    def close(self) -> None:
        """Remove whatever is left of the run's worktrees; safe to call from any state."""
        release_folder(self.root, self.folder)


def release_folder(root: Path, folder: Path) -> None:
    """Delete a folder of worktrees and let git forget them (blocking; for exits and clean)."""
    if folder.exists():
        remove_tree(folder)
    git.prune_worktrees_sync(root)
