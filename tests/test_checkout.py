"""The user's index and working tree updated in-process, checked against git's own view."""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stomper import checkout, git, objects
from stomper.testing.repos import make_repo
from tests.conftest import sh

MODES = {"100644": 0o100644, "100755": 0o100755}
NESTED = {
    "top.py": "TOP = 1\n",
    "pkg/__init__.py": "",
    "pkg/a.py": "A = 1\n",
    "pkg/sub/b.py": "B = 1\n",
    "pkg/sub/deep/c.py": "C = 1\n",
    "other/d.py": "D = 1\n",
}


def land(repo: Path, files: Mapping[str, bytes]) -> list[checkout.Landed]:
    """Move the checked-out branch to a commit changing ``files``, as a landing does, and
    describe the change; the user's index and working tree are left as they were."""
    index = repo / ".git" / "scratch-index"
    env = {"GIT_INDEX_FILE": str(index)}
    run(repo, "read-tree", "HEAD", env=env)
    landed = []
    for path, content in files.items():
        mode, _, old = sh(repo, "ls-tree", "HEAD", "--", path).split("\t")[0].split()
        blob = run(repo, "hash-object", "-w", "--stdin", stdin=content)
        run(repo, "update-index", "--cacheinfo", f"{mode},{blob},{path}", env=env)
        landed.append(checkout.Landed(path, MODES[mode], old, blob, content))
    tree = run(repo, "write-tree", env=env)
    commit = sh(repo, "commit-tree", tree, "-p", "HEAD", "-m", "landed").strip()
    sh(repo, "update-ref", "refs/heads/main", commit)
    index.unlink()
    return landed


def run(repo: Path, *args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> str:
    return asyncio.run(git.git(repo, *args, env=env, stdin=stdin)).stdout.decode().strip()


def user_index(repo: Path) -> Path:
    return repo / ".git" / "index"


def assert_checkout_is_head(repo: Path) -> None:
    """The index and working tree are exactly HEAD's, as git sees them."""
    assert sh(repo, "status", "--porcelain", "--untracked-files=no") == ""
    assert sh(repo, "write-tree").strip() == sh(repo, "rev-parse", "HEAD^{tree}").strip()
    assert sh(repo, "diff-files", "--name-only") == ""


def index_of(repo: Path) -> checkout.Index:
    data = user_index(repo).read_bytes()
    return checkout.Index.walk(data, int(user_index(repo).stat().st_mtime))


def tree_records(repo: Path) -> dict[tuple[str, ...], int]:
    """The folders of the index's ``TREE`` extension and their entry counts (-1: invalid)."""
    index = index_of(repo)
    (payload,) = [data for signature, data in index.extensions if signature == b"TREE"]
    records: dict[tuple[str, ...], int] = {}
    at = 0

    def walk(folder: tuple[str, ...]) -> None:
        nonlocal at
        nul = payload.index(b"\0", at)
        newline = payload.index(b"\n", nul)
        count, subtrees = map(int, payload[nul + 1 : newline].split(b" "))
        records[folder] = count
        at = newline + 1 + (20 if count >= 0 else 0)
        for _ in range(subtrees):
            name = payload[at : payload.index(b"\0", at)].decode()
            walk((*folder, name))

    walk(())
    return records


def test_landed_files_reach_index_and_working_tree(make) -> None:
    repo = make(NESTED)
    landed = land(repo, {"pkg/sub/b.py": b"B = 2\n", "top.py": b"TOP = 2\n"})

    left = checkout.Checkout(repo, user_index(repo)).update(landed)

    assert left == []
    assert (repo / "pkg/sub/b.py").read_bytes() == b"B = 2\n"
    assert (repo / "top.py").read_bytes() == b"TOP = 2\n"
    assert_checkout_is_head(repo)
    assert not (repo / ".git" / "index.lock").exists()
    # Nothing needed a refresh: the stat data written is the files' own.
    assert sh(repo, "diff-files", "--name-only") == ""


def test_the_tree_cache_is_invalidated_only_along_the_landed_paths(make) -> None:
    repo = make(NESTED)
    sh(repo, "read-tree", "HEAD")  # a complete cache of tree ids
    assert all(count >= 0 for count in tree_records(repo).values())

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"pkg/sub/b.py": b"B = 2\n"}))

    records = tree_records(repo)
    assert {folder for folder, count in records.items() if count < 0} == {
        (),
        ("pkg",),
        ("pkg", "sub"),
    }
    assert records[("pkg", "sub", "deep")] >= 0 and records[("other",)] >= 0
    assert_checkout_is_head(repo)


def test_an_entry_racily_clean_against_the_old_index_is_smudged(make) -> None:
    """A file modified in the second its entry was recorded, keeping its size, looks clean
    by its stat data; git compares it because the index is no older. Once the index is
    rewritten later, only a smudged size keeps the change visible (racy-git.txt)."""
    repo = make(NESTED)
    sh(repo, "config", "core.trustctime", "false")
    then = 1_700_000_000
    racy = repo / "pkg" / "a.py"
    racy.write_text("A = 7\n")
    os.utime(racy, (then, then))
    sh(repo, "add", "pkg/a.py")
    racy.write_text("A = 8\n")  # same size, same second
    os.utime(racy, (then, then))
    os.utime(user_index(repo), (then, then))
    # (--no-optional-locks: a status that wrote the index would smudge the entry itself)
    assert "MM pkg/a.py" in sh(repo, "--no-optional-locks", "status", "--porcelain")

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"top.py": b"TOP = 2\n"}))

    assert os.stat(user_index(repo)).st_mtime > then
    assert "MM pkg/a.py" in sh(repo, "status", "--porcelain")


def test_a_file_landed_then_changed_in_the_same_second_is_smudged_later(make) -> None:
    """The entries a landing writes are racy against the index written with them; the
    kept index must still know them when the next landing writes a newer index."""
    repo = make(NESTED)
    sh(repo, "config", "core.trustctime", "false")
    for path in NESTED:  # no entry racy to begin with
        os.utime(repo / path, (1_700_000_000, 1_700_000_000))
    sh(repo, "update-index", "--refresh")
    user = checkout.Checkout(repo, user_index(repo))
    user.update(land(repo, {"pkg/a.py": b"A = 2\n"}))
    landed = repo / "pkg" / "a.py"
    written = landed.stat()
    if written.st_mtime_ns // 10**9 != user_index(repo).stat().st_mtime_ns // 10**9:
        pytest.skip("the file and the index were written in different seconds")
    landed.write_text("A = 3\n")  # same size, and the stat data put back as it was
    os.utime(landed, ns=(written.st_atime_ns, written.st_mtime_ns))
    while time.time() < written.st_mtime_ns // 10**9 + 1:  # the next index is newer
        time.sleep(0.05)

    user.update(land(repo, {"top.py": b"TOP = 2\n"}))

    assert user.walks == 1
    assert " M pkg/a.py" in sh(repo, "--no-optional-locks", "status", "--porcelain")


def test_a_racy_entry_whose_file_is_unchanged_keeps_its_stat_data(make) -> None:
    repo = make(NESTED)
    os.utime(user_index(repo), (1_700_000_000, 1_700_000_000))
    clean = repo / "pkg" / "a.py"
    os.utime(clean, (1_700_000_000, 1_700_000_000))
    sh(repo, "update-index", "--refresh")
    os.utime(user_index(repo), (1_700_000_000, 1_700_000_000))
    before = entry_size(repo, "pkg/a.py")

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"top.py": b"TOP = 2\n"}))

    assert entry_size(repo, "pkg/a.py") == before == len("A = 1\n")
    assert_checkout_is_head(repo)


def test_a_racy_file_is_read_again_only_when_its_stat_data_changed(make) -> None:
    repo = make(NESTED)
    user = checkout.Checkout(repo, user_index(repo))

    def land_racy(path: str, content: bytes) -> int:
        """Land with every entry racy against the old index: the reads it took."""
        os.utime(user_index(repo), (1_700_000_000, 1_700_000_000))
        time.sleep(0.02)  # the clock moves past the last file written
        reads = user.settled.reads
        assert user.update(land(repo, {path: content})) == []
        return user.settled.reads - reads

    # The first landing reads every file (the landed one to see that it still holds its
    # old blob); after it, only the last one landed.
    tracked = sh(repo, "ls-files").split()
    assert land_racy("top.py", b"TOP = 2\n") == len(tracked)
    assert land_racy("pkg/a.py", b"A = 2\n") == 1
    assert land_racy("other/d.py", b"D = 2\n") == 1
    # The user changes a file already vouched for, keeping its size and its mtime: the
    # inode's change time still tells, the file is read, and git will compare it again.
    changed = repo / "pkg" / "a.py"
    before = changed.stat()
    changed.write_bytes(b"A = 3\n")
    os.utime(changed, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert land_racy("pkg/sub/b.py", b"B = 2\n") == 2
    assert entry_size(repo, "pkg/a.py") == 0
    assert " M pkg/a.py" in sh(repo, "status", "--porcelain")


def test_a_file_is_vouched_for_only_once_the_clock_passed_its_change(tmp_path: Path) -> None:
    file = tmp_path / "f.py"
    file.write_bytes(b"F = 1\n")
    blob = objects.object_id(b"blob", b"F = 1\n")[0]
    settled = checkout.Settled()
    # A clock no later than the file's change: a change in the same tick would not show.
    for _ in range(2):
        assert settled.holds(str(file), 0o100644, blob, file.stat())
    assert settled.reads == 2
    time.sleep(0.02)
    (tmp_path / "later").write_bytes(b"")
    assert settled.holds(str(file), 0o100644, blob, (tmp_path / "later").stat())
    assert settled.holds(str(file), 0o100644, blob, None)
    assert settled.reads == 3
    assert not settled.holds(str(file), 0o100755, blob, None)  # not of that mode
    assert not settled.holds(str(tmp_path / "gone.py"), 0o100644, blob, None)


def test_a_racy_submodule_entry_is_left_as_git_leaves_it(make) -> None:
    repo = make(NESTED)
    make_repo(repo / "sub", {"s.py": "S = 1\n"})
    sh(repo, "add", "sub")
    os.utime(user_index(repo), (1_700_000_000, 1_700_000_000))  # every entry racy
    before = entry_size(repo, "sub")

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"top.py": b"TOP = 2\n"}))

    assert entry_size(repo, "sub") == before != 0
    assert entry_size(repo, "pkg/a.py") == len("A = 1\n")


def entry_size(repo: Path, path: str) -> int:
    out = sh(repo, "ls-files", "--debug", "--", path)
    return int(out.split("size: ")[1].split()[0])


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda repo: (repo / "pkg/a.py").write_text("A = 'mine'\n"), id="edited"),
        pytest.param(lambda repo: (repo / "pkg/a.py").unlink(), id="deleted"),
        pytest.param(lambda repo: (repo / "pkg/a.py").chmod(0o755), id="made-executable"),
        pytest.param(lambda repo: sh(repo, "rm", "--cached", "-q", "pkg/a.py"), id="unstaged"),
        pytest.param(
            lambda repo: [(repo / "pkg/a.py").write_text("A = 3\n"), sh(repo, "add", "pkg/a.py")],
            id="staged",
        ),
        pytest.param(
            lambda repo: [(repo / "pkg/a.py").unlink(), (repo / "pkg/a.py").symlink_to("b.py")],
            id="symlink",
        ),
    ],
)
def test_a_file_the_user_changed_is_found_and_left_alone(
    make, change: Callable[[Path], object]
) -> None:
    repo = make(NESTED)
    change(repo)
    status = sh(repo, "status", "--porcelain", "--untracked-files=no")
    head = {
        path: (MODES[mode], blob)
        for path, (mode, blob) in entries(repo, "HEAD", "pkg/a.py", "top.py").items()
    }

    assert checkout.Checkout(repo, user_index(repo)).changed_paths(head) == {"pkg/a.py"}
    assert "pkg/a.py" in status and "top.py" not in status

    entry_before = sh(repo, "ls-files", "-s", "--", "pkg/a.py")
    file = repo / "pkg/a.py"
    file_before = file.read_bytes() if file.exists() else None
    landed = land(repo, {"pkg/a.py": b"A = 2\n", "top.py": b"TOP = 2\n"})

    assert checkout.Checkout(repo, user_index(repo)).update(landed) == ["pkg/a.py"]

    assert (file.read_bytes() if file.exists() else None) == file_before
    assert (repo / "top.py").read_bytes() == b"TOP = 2\n"
    assert sh(repo, "ls-files", "-s", "--", "pkg/a.py") == entry_before


def entries(repo: Path, commit: str, *paths: str) -> dict[str, tuple[str, str]]:
    found = {}
    for line in sh(repo, "ls-tree", commit, "--", *paths).splitlines():
        meta, path = line.split("\t")
        mode, _, blob = meta.split()
        found[path] = (mode, blob)
    return found


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(("update-index", "--split-index"), id="split-index"),
        pytest.param(("update-index", "--index-version", "4"), id="version-4"),
        pytest.param(("update-index", "--skip-worktree", "pkg/a.py"), id="skip-worktree"),
        pytest.param(("update-index", "--assume-unchanged", "pkg/a.py"), id="assume-unchanged"),
    ],
)
def test_an_index_git_must_write_is_left_to_git(make, setup: tuple[str, ...]) -> None:
    repo = make(NESTED)
    sh(repo, *setup)
    before = user_index(repo).read_bytes()
    landed = land(repo, {"pkg/a.py": b"A = 2\n"})

    with pytest.raises(checkout.Unsupported):
        checkout.Checkout(repo, user_index(repo)).update(landed)

    assert user_index(repo).read_bytes() == before
    assert (repo / "pkg/a.py").read_bytes() == b"A = 1\n"
    assert not (repo / ".git" / "index.lock").exists()


def test_a_flagged_entry_in_a_batch_leaves_every_file_of_it_alone(make) -> None:
    repo = make(NESTED)
    sh(repo, "update-index", "--skip-worktree", "pkg/sub/b.py")
    before = user_index(repo).read_bytes()
    landed = land(repo, {"pkg/a.py": b"A = 2\n", "pkg/sub/b.py": b"B = 2\n"})

    with pytest.raises(checkout.Unsupported):
        checkout.Checkout(repo, user_index(repo)).update(landed)

    assert (repo / "pkg/a.py").read_bytes() == b"A = 1\n"
    assert user_index(repo).read_bytes() == before


def test_an_index_locked_by_another_process_is_not_touched(make) -> None:
    repo = make(NESTED)
    lock = repo / ".git" / "index.lock"
    lock.write_bytes(b"theirs")
    before = user_index(repo).read_bytes()

    with pytest.raises(checkout.Locked):
        checkout.Checkout(repo, user_index(repo)).update(land(repo, {"pkg/a.py": b"A = 2\n"}))

    assert lock.read_bytes() == b"theirs"
    assert user_index(repo).read_bytes() == before
    assert (repo / "pkg/a.py").read_bytes() == b"A = 1\n"


def test_an_index_without_a_checksum_stays_without_one(make) -> None:
    repo = make(NESTED)
    # What git writes with index.skipHash (2.40 on): the trailing hash left as zeros.
    data = user_index(repo).read_bytes()
    user_index(repo).write_bytes(data[:-20] + bytes(20))
    assert sh(repo, "--no-optional-locks", "status", "--porcelain") == ""

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"pkg/a.py": b"A = 2\n"}))

    assert user_index(repo).read_bytes()[-20:] == bytes(20)
    assert_checkout_is_head(repo)


def test_the_untracked_cache_is_dropped_and_untracked_files_still_show(make) -> None:
    repo = make(NESTED)
    sh(repo, "config", "core.untrackedCache", "true")
    (repo / "pkg" / "new.py").write_text("NEW = 1\n")
    sh(repo, "status", "--porcelain")
    signatures = [sig for sig, _ in index_of(repo).extensions]
    assert b"UNTR" in signatures

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"pkg/a.py": b"A = 2\n"}))

    signatures = [sig for sig, _ in index_of(repo).extensions]
    assert b"UNTR" not in signatures
    assert sh(repo, "status", "--porcelain") == "?? pkg/new.py\n"


def test_an_executable_file_keeps_its_mode(make) -> None:
    repo = make(NESTED)
    (repo / "tool.py").write_text("print(1)\n")
    (repo / "tool.py").chmod(0o755)
    sh(repo, "add", "tool.py")
    sh(repo, "commit", "-qm", "tool")

    checkout.Checkout(repo, user_index(repo)).update(land(repo, {"tool.py": b"print(2)\n"}))

    assert (repo / "tool.py").stat().st_mode & stat.S_IXUSR
    assert_checkout_is_head(repo)


folders = st.lists(st.sampled_from(["a", "b", "a/c", "a/c/d", "e/f", ""]), min_size=2, max_size=8)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    layout=folders,
    rounds=st.lists(st.tuples(st.floats(0.0, 1.0), st.booleans()), min_size=1, max_size=3),
    cached=st.booleans(),
)
def test_landings_leave_the_index_git_would(
    tmp_path_factory: pytest.TempPathFactory,
    layout: list[str],
    rounds: list[tuple[float, bool]],
    cached: bool,
) -> None:
    """Successive landings through one Checkout, the user staging a change between some of
    them: every landed file reaches the index and working tree, the user's change stays."""
    files = {f"{folder}/m{i}.py".lstrip("/"): f"V = {i}\n" for i, folder in enumerate(layout)}
    repo = make_repo(tmp_path_factory.mktemp("prop"), files)
    if cached:
        sh(repo, "read-tree", "HEAD")
    theirs, *ours = sorted(files)
    user = checkout.Checkout(repo, user_index(repo))
    staged = False
    for number, (share, stage) in enumerate(rounds):
        if stage:  # the user stages a change: the index's bytes are no longer the ones kept
            (repo / theirs).write_text(f"MINE = {number}\n")
            sh(repo, "add", theirs)
            staged = True
        chosen = ours[: max(1, round(share * len(ours)))]
        content = f"V = 'round {number}'\n".encode()

        assert user.update(land(repo, dict.fromkeys(chosen, content))) == []

        for path in chosen:
            assert (repo / path).read_bytes() == content
    status = sh(repo, "status", "--porcelain", "--untracked-files=no")
    assert status == (f"M  {theirs}\n" if staged else "")
    assert sh(repo, "diff-files", "--name-only") == ""
    assert user.walks == 1 + sum(stage for _, stage in rounds[1:])


def test_the_index_is_walked_again_only_when_its_bytes_changed(make) -> None:
    repo = make(NESTED)
    user = checkout.Checkout(repo, user_index(repo))
    for number in range(3):
        user.update(land(repo, {"pkg/a.py": f"A = {number + 10}\n".encode()}))
    assert user.walks == 1
    sh(repo, "update-index", "--refresh")  # nothing to refresh: the bytes stay
    user.update(land(repo, {"pkg/a.py": b"A = 20\n"}))
    sh(repo, "read-tree", "HEAD")  # the same entries, a new tree cache: new bytes
    user.update(land(repo, {"top.py": b"TOP = 2\n"}))
    assert user.walks == 2
    assert_checkout_is_head(repo)
