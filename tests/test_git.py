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


def test_changed_lines_are_the_lines_of_the_new_version_added_or_changed(make) -> None:
    old = "".join(f"line {n}\n" for n in range(1, 11))
    repo = make({"a.py": old, "gone.py": "x = 1\n", "my file.txt": "one\n", "plus.txt": "a\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    lines = old.splitlines(keepends=True)
    lines[1] = "changed 2\n"
    lines[6:8] = ["changed 7\n", "new\n", "changed 8\n"]
    del lines[9]
    (repo / "a.py").write_text("".join(lines))
    (repo / "gone.py").unlink()
    (repo / "my file.txt").write_text("one\ntwo\n")
    # An added line of text "++ x" is shown as "+++ x", as a file's header is.
    (repo / "plus.txt").write_text("a\n++ b/elsewhere.txt\n")
    (repo / "new.py").write_text("a = 1\nb = 2\n")
    sh(repo, "add", "-A")
    sh(repo, "commit", "-qm", "change")
    found = asyncio.run(git.changed_lines(repo, base, "HEAD"))
    assert found == {
        "a.py": [(2, 2), (7, 9)],
        "my file.txt": [(2, 2)],
        "new.py": [(1, 2)],
        "plus.txt": [(2, 2)],
    }


def test_merge_base_is_none_for_commits_without_common_history(make) -> None:
    repo = make({"a.py": "x = 1\n"})
    head = sh(repo, "rev-parse", "HEAD").strip()
    sh(repo, "checkout", "-q", "--orphan", "other")
    sh(repo, "commit", "-qm", "unrelated")
    other = sh(repo, "rev-parse", "HEAD").strip()
    assert asyncio.run(git.merge_base(repo, head, head)) == head
    assert asyncio.run(git.merge_base(repo, head, other)) is None
