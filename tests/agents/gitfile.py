"""Rewrites its workspace's ``.git`` to point at the user's git directory.

Seen in a linked worktree of the user's repository: stomper's own reset of the pooled
worktree (``checkout --detach --force``, ``clean``) then ran against the user's repository,
detaching their HEAD and dropping a staged file from their index.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from attack import attempt, common_dir, fix


def point_at_user() -> None:
    user = common_dir()
    dot = Path(".git")
    if dot.is_dir():
        shutil.rmtree(dot)
    else:
        dot.unlink(missing_ok=True)
    dot.write_text(f"gitdir: {user}\n")


fix(sys.argv[-1])
attempt("point .git at the user's repository", point_at_user)
