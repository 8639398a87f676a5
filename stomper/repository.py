"""The repository a command works on, and the checks that it is fit to work on."""

from __future__ import annotations

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


def repo_relative(root: Path, cwd: Path, given: str) -> str:
    """A path the user gave (relative to ``cwd``) as a repository-relative POSIX path."""
    path = Path(given)
    absolute = path if path.is_absolute() else cwd / path
    if not absolute.exists():
        raise RepositoryError(f"no such file or directory: {given}")
    resolved = absolute.resolve()
    try:
        relative = resolved.relative_to(root)
    except ValueError:
        raise RepositoryError(f"{given} is outside the repository {root}") from None
    return relative.as_posix() if relative.parts else "."


def toplevel_or_none(cwd: Path) -> Path | None:
    """The top of the repository holding ``cwd``, for finding its pyproject.toml early."""
    return git.toplevel_sync(cwd) if cwd.is_dir() else None
