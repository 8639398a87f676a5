"""The repository a command works on, and the checks that it is fit to work on."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from stomper import git
from stomper.errors import RepositoryError
from stomper.journal import StateDir

_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or am",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "BISECT_LOG": "a bisect",
}
_STATE_FOLDERS = ("locks", "runs", "worktrees", "cache")


@dataclass(frozen=True)
class Repository:
    root: Path
    git_dir: Path
    common_dir: Path
    head: str
    branch: str | None
    """The checked-out branch's full name; None on a detached HEAD."""

    @property
    def state(self) -> StateDir:
        return StateDir.of(self.common_dir)


async def open_repository(cwd: Path) -> Repository:
    """The repository at ``cwd``, checked: it has commits and no operation in progress."""
    if not cwd.is_dir():
        raise RepositoryError(f"{cwd} is not a directory: pass a repository with --repo")
    root = await git.toplevel(cwd)
    if root is None:
        where = await git.outside_work_tree(cwd)
        if where == "bare":
            raise RepositoryError(
                f"{cwd} is a bare repository, with no working tree to fix: run stomper in a "
                "clone that has one"
            )
        if where == "git-dir":
            raise RepositoryError(
                f"{cwd} is inside a repository's git directory: run stomper in its working tree"
            )
        raise RepositoryError(
            f"not a git repository: {cwd}: run stomper inside one, or pass --repo"
        )
    git_dir, common_dir = await git.git_dirs(root)
    head = await git.resolve_commit(root, "HEAD")
    if head is None:
        raise RepositoryError("the repository has no commits yet: commit something first")
    for marker, operation in _IN_PROGRESS.items():
        if (git_dir / marker).exists():
            raise RepositoryError(
                f"{operation} is in progress: finish or abort it before running stomper"
            )
    return Repository(root, git_dir, common_dir, head, await git.current_branch(root))


async def require_index(repo: Repository) -> None:
    """Refuse a repository whose index git cannot read, before any work: every git command
    that needs it would fail half-way through the run."""
    problem = await git.index_problem(repo.root)
    if problem is not None:
        index = repo.git_dir / "index"
        raise RepositoryError(
            f"git cannot read the index: {problem}: repair it (removing {index}, then "
            "`git reset`, rebuilds it from HEAD and keeps your files)"
        )


def require_state(repo: Repository) -> None:
    """Refuse a git directory stomper cannot keep its runs in, before any tool writes there
    (ruff's cache, the journal, the lock, the workspaces)."""
    state = repo.state.root
    for folder in (state, *(state / name for name in _STATE_FOLDERS)):
        if folder.exists() and not folder.is_dir():
            raise RepositoryError(
                f"{folder} is a file, where stomper keeps its runs: move it away or remove it"
            )
    try:
        # A probe where the state is or will be; nothing is left behind.
        with tempfile.TemporaryFile(dir=state if state.exists() else state.parent):
            pass
    except OSError as exc:
        raise RepositoryError(
            f"stomper cannot write its runs in {state}: {exc.strerror or exc}: make "
            f"{repo.common_dir} writable"
        ) from exc


async def repo_relative(root: Path, cwd: Path, given: str) -> str:
    """A path the user gave (relative to ``cwd``) as a repository-relative POSIX path.

    Refused, saying why, when it names nothing stomper can work on: a path that does not
    exist or is outside the repository, one inside a submodule (or another repository
    nested in this one), or one outside a sparse checkout.
    """
    path = Path(given)
    absolute = path if path.is_absolute() else cwd / path
    resolved = absolute.resolve()
    try:
        relative = resolved.relative_to(root)
    except ValueError:
        if not absolute.exists():
            raise RepositoryError(f"no such file or directory: {given}") from None
        raise RepositoryError(f"{given} is outside the repository {root}") from None
    name = relative.as_posix() if relative.parts else "."
    nested = await _nested_repository(root, relative, cwd=cwd, exists=absolute.exists())
    if nested is not None:
        raise RepositoryError(f"{given} {nested}")
    if not absolute.exists():
        tags = await git.tracked_tags(root, [name])
        if tags and all(tag == "S" for tag in tags.values()):
            raise RepositoryError(
                f"{given} is outside the sparse checkout, so not in the working tree: include "
                "it (`git sparse-checkout add ...`) to fix it"
            )
        raise RepositoryError(f"no such file or directory: {given}")
    return name


async def _nested_repository(root: Path, relative: Path, *, cwd: Path, exists: bool) -> str | None:
    """What to say of a path inside a submodule or another repository nested in this one
    (its files are not this repository's to fix), or None when it is in neither."""
    folders = [relative, *relative.parents][:-1] if relative.parts else []
    modes = await git.tracked_modes(root, [folder.as_posix() for folder in folders])
    # The index knows every submodule, also one that is not checked out (no .git there).
    found = next((f for f in reversed(folders) if modes.get(f.as_posix()) == "160000"), None)
    kind = "submodule"
    if found is None and exists:
        found = next((f for f in reversed(folders) if (root / f / ".git").exists()), None)
        kind = "repository nested in this one"
    if found is None:
        return None
    where = found.as_posix()
    place = f"is a {kind}" if found == relative else f"is inside the {kind} {where}"
    there = os.path.relpath(root / found, cwd)
    return f"{place}, a repository of its own: run stomper there (stomper fix --repo {there})"


def toplevel_or_none(cwd: Path) -> Path | None:
    """The top of the repository holding ``cwd``, for finding its pyproject.toml early."""
    return git.toplevel_sync(cwd) if cwd.is_dir() else None
