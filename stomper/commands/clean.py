"""``stomper clean``: remove what runs that are not running left behind."""

from __future__ import annotations

from pathlib import Path

from stomper import checkpoints, console, redaction
from stomper.config import load_settings
from stomper.errors import StomperError
from stomper.journal import Journal, live_runs, remove_stale_locks, remove_tree
from stomper.recovery import recover
from stomper.repository import Repository, open_repository, require_state
from stomper.workspace import release_folder, release_orphans


async def clean(cwd: Path, *, journals: bool) -> int:
    """Remove worktrees, stale locks and private indexes of runs no live process owns.

    Landed commits are never touched; stomper makes no commit outside the target branch, so
    there is nothing unlanded to lose. With ``journals``, the records of completed runs go too,
    and so do their checkpoints in a PostgreSQL database; a record whose checkpoints cannot be
    removed stays, so that they are not lost track of.
    """
    repo = await open_repository(cwd)
    require_state(repo)
    await recover(repo)
    state = repo.state
    live = live_runs(state)
    removed: list[str] = []
    for folder in sorted((state.root / "worktrees").glob("*")):
        if folder.name not in live:
            release_folder(repo.root, folder)
            removed.append(f"worktrees of run {folder.name}")
    removed += [f"stale lock {name}" for name in remove_stale_locks(state)]
    removed += [f"spaces of a run whose repository is gone: {path}" for path in release_orphans()]
    for run_dir in sorted((state.root / "runs").glob("*")):
        if run_dir.name in live:
            continue
        journal = Journal(run_dir)
        if journal.index_file.exists():
            journal.index_file.unlink()
            removed.append(f"private index of run {run_dir.name}")
        if journals and journal.exists() and _status(journal) == "completed":
            kept = await _remove_checkpoints(repo, journal)
            if kept:
                console.info(
                    f"kept the journal of completed run {run_dir.name}: {kept}", markup=False
                )
                continue
            remove_tree(run_dir)
            removed.append(f"journal of completed run {run_dir.name}")
    if live:
        console.info(f"left alone: {', '.join(sorted(live))} (still running)")
    console.info("\n".join(f"removed {item}" for item in removed) or "nothing to clean")
    return 0


def _status(journal: Journal) -> object:
    """The run's recorded status; None when its record is damaged (it is then kept)."""
    try:
        return journal.meta().get("status")
    except StomperError:
        return None


async def _remove_checkpoints(repo: Repository, journal: Journal) -> str:
    """Remove a run's checkpoints from its PostgreSQL database; why not, if they stay."""
    settings = journal.meta().get("settings")
    recorded = settings.get("checkpointer") if isinstance(settings, dict) else None
    if not isinstance(recorded, str):
        return ""  # they are in the journal
    run_id = journal.dir.name
    try:
        configured = load_settings(repo.root, {}).checkpointer
        url = redaction.resume_url(run_id, "checkpointer", recorded, configured)
        await checkpoints.delete_run(url, run_id)
    except StomperError as exc:
        return str(exc)
    return ""
