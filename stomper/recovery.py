"""What a run killed half-way through a landing left behind, put right by the next command.

A landing onto the checked-out branch moves the branch while it holds git's index lock, then
brings the user's index and files along (:mod:`stomper.checkout`). A run killed in between
leaves the lock behind (every git command of the user's then fails on it), and an index that
still holds the files of before: staged reverts of what landed, which a new run would take
for the user's own work. Every command that works on a repository first calls
:func:`recover`, which releases such a lock and brings the landed files along, once per dead
run, and says what it did.
"""

from __future__ import annotations

from stomper import checkout, console, git
from stomper.errors import RepositoryError
from stomper.journal import Journal, live_runs
from stomper.landing import repair_checkout
from stomper.repository import Repository

_REPAIRED = "checkout_repaired"
"""Set in a dead run's record once its landed files were brought along."""


async def recover(repo: Repository) -> list[str]:
    """Put right what dead runs left half-landed in ``repo``'s checkout, saying so in one
    line for each thing done (on stderr); those lines."""
    live = live_runs(repo.state)
    done = []
    owner = checkout.release_stale(repo.git_dir / "index", lambda run: run in live)
    if owner is not None:
        done.append(f"removed the index lock that run {owner} left when it was stopped")
    for journal, target, base in _dead_runs(repo, live):
        repaired = await _bring_along(repo, journal.dir.name, target, base)
        journal.update(**{_REPAIRED: True})
        if repaired:
            more = f" and {len(repaired) - 5} more" if len(repaired) > 5 else ""
            names = ", ".join(repaired[:5]) + more
            done.append(
                f"brought {len(repaired)} file(s) that run {journal.dir.name} landed before it "
                f"was stopped into the index and working tree: {names}"
            )
    for line in done:
        console.info(line, markup=False)
    return done


def _dead_runs(repo: Repository, live: set[str]) -> list[tuple[Journal, str, str]]:
    """The runs that landed on the branch checked out here, died, and were not put right,
    each with its target and base."""
    found = []
    for meta_file in sorted((repo.state.root / "runs").glob("*/run.json")):
        journal = Journal(meta_file.parent)
        try:
            meta = journal.meta()
        except RepositoryError:  # an unreadable record is for `stomper runs` to report
            continue
        target, base = meta.get("target"), meta.get("base")
        if (
            meta.get("status") == "running"
            and meta.get("checked_out")
            and target == repo.branch
            and isinstance(target, str)
            and isinstance(base, str)  # a record edited by hand is for resume to refuse
            and not meta.get(_REPAIRED)
            and journal.dir.name not in live
        ):
            found.append((journal, target, base))
    return found


async def _bring_along(repo: Repository, run_id: str, target: str, base: str) -> list[str]:
    """Bring the files run ``run_id`` landed on ``target`` into the user's index and working
    tree where the landing was cut short; the paths brought along."""
    tip = await git.ref_target(repo.root, target)
    if tip is None or await git.resolve_commit(repo.root, base) is None:
        return []
    landed_by: dict[str, str] = {}  # each path's last commit of the run
    for commit in await git.stomper_commits(repo.root, tip, base):
        if commit.run == run_id:
            landed_by.update(dict.fromkeys(commit.files, commit.sha))
    # Only a file that differs from the branch can have been left behind.
    left = sorted(await git.changed_paths(repo.root, sorted(landed_by)))
    now = await git.tree_entries(repo.root, tip, left) if left else {}
    repaired = []
    for path in left:
        sha = landed_by[path]
        landed = (await git.tree_entries(repo.root, sha, [path])).get(path)
        before = (await git.tree_entries(repo.root, f"{sha}^", [path])).get(path)
        if now.get(path) != landed or before == landed:
            continue  # changed on the branch since
        old_blob = before.blob if before is not None else None
        if await repair_checkout(repo.root, path, old_blob, landed):
            repaired.append(path)
    return repaired
