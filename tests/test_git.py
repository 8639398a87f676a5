"""The git door: what one status call says of a worktree."""

from __future__ import annotations

import asyncio

from stomper import git
from tests.conftest import sh


def test_worktree_state_names_head_branch_and_every_changed_path(make) -> None:
    repo = make(
        {"a.py": "a = 1\n", "b.py": "b = 1\n", "gone.py": "g = 1\n", "old name.py": "o = 1\n"}
    )
    head = sh(repo, "rev-parse", "HEAD").strip()
    clean = asyncio.run(git.worktree_state(repo))
    assert (clean.head, clean.branch, clean.changed) == (head, "main", [])

    (repo / "a.py").write_text("a = 2\n")  # changed, not staged
    (repo / "b.py").write_text("b = 2\n")
    sh(repo, "add", "b.py")  # staged
    (repo / "gone.py").unlink()
    sh(repo, "mv", "old name.py", "new name.py")  # a staged rename, spaces in both names
    (repo / "new dir").mkdir()
    (repo / "new dir" / "untracked file.py").write_text("u = 1\n")
    sh(repo, "checkout", "--quiet", "--detach")
    state = asyncio.run(git.worktree_state(repo))
    assert state.head == head
    assert state.branch is None
    assert sorted(state.changed) == sorted(
        ["a.py", "b.py", "gone.py", "new name.py", "old name.py", "new dir/untracked file.py"]
    )
