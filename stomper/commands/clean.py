"""``stomper clean``: remove what runs that are not running left behind."""

from __future__ import annotations

from pathlib import Path

from stomper import console
from stomper.journal import Journal, live_runs, read_lock, remove_tree
from stomper.repository import open_repository
from stomper.workspace import release_folder


async def clean(cwd: Path, *, journals: bool) -> int:
    """Remove worktrees, stale locks and private indexes of runs no live process owns.

    Landed commits are never touched; stomper makes no commit outside the target branch, so
    there is nothing unlanded to lose. With ``journals``, the records of completed runs go too.
    """
    repo = await open_repository(cwd)
    state = repo.state
    live = live_runs(state)
    removed: list[str] = []
    for folder in sorted((state.root / "worktrees").glob("*")):
        if folder.name not in live:
            release_folder(repo.root, folder)
            removed.append(f"worktrees of run {folder.name}")
    for lock in sorted((state.root / "locks").glob("*.lock")):
        owner = read_lock(lock)
        if owner is None or str(owner.get("run_id")) not in live:
            lock.unlink(missing_ok=True)
            removed.append(f"stale lock {lock.name}")
    for run_dir in sorted((state.root / "runs").glob("*")):
        if run_dir.name in live:
            continue
        journal = Journal(run_dir)
        if journal.index_file.exists():
            journal.index_file.unlink()
            removed.append(f"private index of run {run_dir.name}")
        if journals and journal.exists() and journal.meta().get("status") == "completed":
            remove_tree(run_dir)
            removed.append(f"journal of completed run {run_dir.name}")
    if live:
        console.info(f"left alone: {', '.join(sorted(live))} (still running)")
    console.info("\n".join(f"removed {item}" for item in removed) or "nothing to clean")
    return 0
