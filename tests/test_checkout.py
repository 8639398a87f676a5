"""The user's checkout brought along by git under git's index lock, and a killed run's lock
told from another program's."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from stomper import checkout
from stomper.testing.repos import commit_all
from tests.conftest import sh


def index_of(repo: Path) -> Path:
    return repo / ".git" / "index"


def two_commits(make, files: dict[str, str], changed: dict[str, str]) -> tuple[Path, str, str]:
    """A repository at ``old`` whose next commit ``new`` changes ``changed``; HEAD at old."""
    repo = make(files)
    old = sh(repo, "rev-parse", "HEAD").strip()
    for name, text in changed.items():
        (repo / name).write_text(text)
    new = commit_all(repo, "next")
    sh(repo, "reset", "--quiet", "--hard", old)
    sh(repo, "update-ref", "refs/heads/main", new)  # the branch moved; index and files not
    return repo, old, new


async def follow(repo: Path, old: str, new: str) -> None:
    async with checkout.hold_index(repo, index_of(repo), "run-1", wait=1) as held:
        await held.follow(old, new)


def test_the_changed_files_follow_and_the_users_own_work_stays(make) -> None:
    repo, old, new = two_commits(
        make, {"a.py": "A = 1\n", "b.py": "B = 1\n", "c.py": "C = 1\n"}, {"a.py": "A = 2\n"}
    )
    (repo / "b.py").write_text("B = 'staged'\n")
    sh(repo, "add", "b.py")
    (repo / "c.py").write_text("C = 'unstaged'\n")
    (repo / "new.txt").write_text("untracked\n")

    asyncio.run(follow(repo, old, new))

    assert (repo / "a.py").read_text() == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == "M  b.py\n M c.py\n?? new.txt\n"
    assert sh(repo, "show", ":b.py") == "B = 'staged'\n"
    assert sh(repo, "diff-files", "--name-only") == "c.py\n"  # the stat data is git's own
    assert not checkout.lock_of(index_of(repo)).exists()


@pytest.mark.parametrize("how", ["staged", "unstaged"])
def test_a_changed_file_the_user_changed_too_is_refused_with_nothing_written(make, how) -> None:
    repo, old, new = two_commits(
        make, {"a.py": "A = 1\n", "b.py": "B = 1\n"}, {"a.py": "A = 2\n", "b.py": "B = 2\n"}
    )
    (repo / "b.py").write_text("B = 'mine'\n")
    if how == "staged":
        sh(repo, "add", "b.py")
    index_before = index_of(repo).read_bytes()

    with pytest.raises(checkout.CheckoutRefused, match="b.py"):
        asyncio.run(follow(repo, old, new))

    assert index_of(repo).read_bytes() == index_before
    assert (repo / "a.py").read_text() == "A = 1\n"
    assert (repo / "b.py").read_text() == "B = 'mine'\n"
    assert not checkout.lock_of(index_of(repo)).exists()
    assert not (repo / ".git" / "index.stomper").exists()


def test_an_edit_in_the_same_second_as_the_landing_is_still_seen_by_git(make) -> None:
    """Racy git: a file the user rewrites, at the same size, right as the index is written,
    must not look clean to git afterwards."""
    repo, old, new = two_commits(make, {"a.py": "A = 1\n", "b.py": "B = 1\n"}, {"a.py": "A = 2\n"})
    asyncio.run(follow(repo, old, new))
    before = (repo / "b.py").stat()
    (repo / "b.py").write_text("B = 9\n")  # same size
    os.utime(repo / "b.py", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert sh(repo, "status", "--porcelain") == " M b.py\n"


def test_the_lock_is_git_s_and_names_the_run(make) -> None:
    repo = make({"a.py": "A = 1\n"})

    async def scenario() -> None:
        async with checkout.hold_index(repo, index_of(repo), "run-7", wait=1):
            assert checkout.lock_owner(index_of(repo)) == "run-7"
            added = sh_allow_failure(repo, "add", "a.py")
            assert "index.lock" in added  # the user's git sees git's own lock
            with pytest.raises(checkout.IndexBusy, match="index.lock"):
                async with checkout.hold_index(repo, index_of(repo), "run-8", wait=0.1):
                    pass

    asyncio.run(scenario())
    assert not checkout.lock_of(index_of(repo)).exists()


def sh_allow_failure(repo: Path, *args: str) -> str:
    from stomper import git

    done = git.git_sync(repo, *args, check=False)
    return done.stdout.decode() + done.stderr.decode()


def test_the_lock_goes_when_the_block_fails(make) -> None:
    repo = make({"a.py": "A = 1\n"})

    async def scenario() -> None:
        async with checkout.hold_index(repo, index_of(repo), "run-1", wait=1):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        asyncio.run(scenario())
    assert not checkout.lock_of(index_of(repo)).exists()


def test_only_a_lock_a_dead_run_left_is_removed(make) -> None:
    repo = make({"a.py": "A = 1\n"})
    lock = checkout.lock_of(index_of(repo))

    lock.write_bytes(b"")  # another program's (git writes the new index into it)
    assert checkout.release_stale(index_of(repo), lambda run: False) is None
    assert lock.exists()

    lock.write_bytes(b"stomper: landing of run 20261202-000000-abcdef (pid 1)\n")
    assert checkout.release_stale(index_of(repo), lambda run: True) is None  # still alive
    assert lock.exists()
    assert checkout.release_stale(index_of(repo), lambda run: False) == "20261202-000000-abcdef"
    assert not lock.exists()
    assert checkout.release_stale(index_of(repo), lambda run: False) is None
