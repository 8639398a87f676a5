"""The Lander on real repositories: chains, a moving target, the user's git beside it, git's
own bytes, its processes."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from stomper import checkout, git, objects
from stomper.landing import Landed, Lander, LandingRefused, commit_message, repair_checkout
from stomper.testing.repos import IDENTITY, commit_all
from stomper.unit import Patch
from tests.conftest import sh

FIXED_DATES = {
    "GIT_AUTHOR_DATE": "1700000000 +0100",
    "GIT_COMMITTER_DATE": "1700000300 -0230",
}


def patch_for(repo: Path, path: str, content: bytes) -> Patch:
    """A patch of ``path`` (at HEAD) to ``content``, its blob written as a unit's would be."""
    mode, _, old = sh(repo, "ls-tree", "HEAD", "--", path).split("\t")[0].split()
    done = asyncio.run(git.git(repo, "hash-object", "-w", "--stdin", stdin=content))
    return Patch(path, mode, old, done.stdout.decode().strip())


def unstored_patch_for(repo: Path, path: str, content: bytes) -> Patch:
    """A patch of ``path`` (at HEAD) to ``content``, whose blob is left for the landing to
    store, as a unit's is where git keeps the file's bytes as they are."""
    mode, _, old = sh(repo, "ls-tree", "HEAD", "--", path).split("\t")[0].split()
    done = asyncio.run(git.git(repo, "hash-object", "--stdin", stdin=content))
    blob = done.stdout.decode().strip()
    assert git.git_sync(repo, "cat-file", "-e", blob, check=False).returncode != 0
    return Patch(path, mode, old, blob, content)


def message(path: str) -> str:
    return commit_message(path=path, tools=["ruff"], codes=["F401"], run_id="test-run")


def lander(repo: Path, tmp_path: Path, *, checked_out: bool = True, **kwargs: Any) -> Lander:
    """A lander onto the checked-out ``main``, or else onto a new branch ``other`` at HEAD."""
    target = "refs/heads/main"
    if not checked_out:
        target = "refs/heads/other"
        sh(repo, "update-ref", target, "HEAD")
    return Lander(
        repo,
        target,
        run_id="test-run",
        index_file=tmp_path / "private-index",
        checked_out=checked_out,
        **kwargs,
    )


async def land_all(
    landing: Lander, patches: list[Patch], *, prepare: bool = True
) -> list[Landed | BaseException]:
    """Hand every patch over at once, as units finishing together would (after the run's
    preparation, unless told not to: then git alone tells what the user changed)."""
    if prepare:
        paths = [patch.path for patch in patches]
        await landing.prepare(await objects.verbatim_paths(landing.root, paths))

    async def one(patch: Patch) -> Landed | BaseException:
        try:
            return await landing.land(patch, message(patch.path))
        except LandingRefused as refused:
            return refused

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(patch)) for patch in patches]
    finally:
        await landing.aclose()
    return [task.result() for task in tasks]


def new_commits(repo: Path, since: str, tip: str = "HEAD") -> list[str]:
    return sh(repo, "rev-list", "--reverse", f"{since}..{tip}").split()


def files_of(repo: Path, commit: str) -> list[str]:
    out = sh(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", "-z", commit)
    return [name for name in out.split("\0") if name]


def land_moves(repo: Path, ref: str = "refs/heads/main") -> list[str]:
    """The reflog messages of ``ref`` stomper wrote, oldest first."""
    out = sh(repo, "reflog", "show", "--format=%gs", ref)
    return [line for line in reversed(out.splitlines()) if line.startswith("stomper:")]


def assert_fsck_clean(repo: Path) -> None:
    done = git.git_sync(repo, "fsck", "--strict", "--no-dangling", check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stdout.decode().strip() == ""


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], list[tuple[Any, ...]]]:
    """Count the calls of a function of ``stomper.git`` (by name) from here on."""

    def count(name: str) -> list[tuple[Any, ...]]:
        seen: list[tuple[Any, ...]] = []
        original = getattr(git, name)

        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            seen.append(args)
            return await original(*args, **kwargs)

        monkeypatch.setattr(git, name, wrapper)
        return seen

    return count


def project(count: int) -> dict[str, str]:
    return {f"pkg/m{i:02d}.py": f"VALUE = {i}\n" for i in range(count)}


def test_a_landing_waits_for_the_patches_of_units_still_being_worked_on(
    make, tmp_path, counted
) -> None:
    repo = make(project(4))
    patches = [
        patch_for(repo, f"pkg/m{i:02d}.py", f"VALUE = {i + 100}\n".encode()) for i in range(4)
    ]
    merges = counted("read_tree_merge")
    landing = lander(repo, tmp_path)

    async def unit(patch: Patch) -> Landed:
        with landing.producing():
            await asyncio.sleep(0)  # the others are still at work when the first is done
        return await landing.land(patch, message(patch.path))

    async def run() -> list[Landed]:
        try:
            return list(await asyncio.gather(*(unit(patch) for patch in patches)))
        finally:
            await landing.aclose()

    results = asyncio.run(run())
    # The first patch did not land alone: it waited for the three that were coming.
    assert land_moves(repo) == ["stomper: land"]
    assert len(merges) == 1
    assert len({result.commit for result in results}) == 4
    assert sh(repo, "status", "--porcelain") == ""


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "unprepared"])
def test_chained_landing_is_one_commit_per_file_in_one_ref_update(
    make, tmp_path, counted, prepared
) -> None:
    repo = make(project(8))
    base = sh(repo, "rev-parse", "HEAD").strip()
    patches = [
        patch_for(repo, f"pkg/m{i:02d}.py", f"VALUE = {i + 100}\n".encode()) for i in range(8)
    ]
    merges = counted("read_tree_merge")
    statuses = counted("changed_paths")

    results = asyncio.run(land_all(lander(repo, tmp_path), patches, prepare=prepared))

    commits = new_commits(repo, base)
    assert [r.commit for r in results if isinstance(r, Landed)] == commits
    for patch, commit in zip(patches, commits, strict=True):
        assert files_of(repo, commit) == [patch.path]
        body = sh(repo, "log", "-1", "--format=%B", commit)
        assert body == message(patch.path) + "\n"
        assert "Stomper-Run: test-run" in body and f"Stomper-Unit: {patch.path}" in body
    # The first patch lands alone; the seven that queued behind it land as one chain: one
    # ref update, one update of the checkout by git, for all seven.
    assert land_moves(repo) == ["stomper: land", "stomper: land"]
    assert [
        len(sh(repo, "diff-tree", "--name-only", "-r", old, new).split()) for _, old, new in merges
    ] == [1, 7]
    # What the user changed is looked up in-process for the paths git keeps verbatim.
    assert len(statuses) == (0 if prepared else 2)
    assert len({r.seconds for r in results[1:] if isinstance(r, Landed)}) == 1
    for i in range(8):
        assert (repo / f"pkg/m{i:02d}.py").read_text() == f"VALUE = {i + 100}\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert not (repo / ".git" / "index.lock").exists()
    assert_fsck_clean(repo)


@pytest.mark.parametrize(
    "setup",
    [
        pytest.param(lambda repo: sh(repo, "update-index", "--split-index"), id="split-index"),
        pytest.param(lambda repo: sh(repo, "update-index", "--index-version", "4"), id="v4"),
        pytest.param(
            lambda repo: sh(repo, "config", "core.fileMode", "false"), id="filemode-false"
        ),
        pytest.param(
            lambda repo: (repo / ".git/info/attributes").write_text("*.py text eol=crlf\n"),
            id="eol-attribute",
        ),
        pytest.param(
            lambda repo: (
                sh(repo, "config", "core.untrackedCache", "true"),
                sh(repo, "update-index", "--untracked-cache"),
            ),
            id="untracked-cache",
        ),
        pytest.param(
            lambda repo: sh(repo, "sparse-checkout", "set", "--no-cone", "/pkg/*", "!/pkg/m02.py"),
            id="sparse-checkout",
        ),
        pytest.param(
            # As after a copy or a restore: the index's stat data no longer matches the
            # files, though their bytes do, until a git command refreshes it.
            lambda repo: [os.utime(file, (1, 1)) for file in (repo / "pkg").iterdir()],
            id="stale-stat",
        ),
    ],
)
def test_every_kind_of_checkout_is_brought_along_by_git(
    make, tmp_path, setup: Callable[[Path], object]
) -> None:
    repo = make(project(3))
    setup(repo)
    (repo / "untracked.txt").write_text("the user's\n")
    base = sh(repo, "rev-parse", "HEAD").strip()
    patches = [patch_for(repo, f"pkg/m{i:02d}.py", f"VALUE = {i + 7}\n".encode()) for i in range(3)]

    results = asyncio.run(land_all(lander(repo, tmp_path), patches))

    assert all(isinstance(result, Landed) for result in results)
    assert len(new_commits(repo, base)) == 3
    for i in range(3):
        file = repo / f"pkg/m{i:02d}.py"
        if file.exists():  # a sparse checkout leaves out what it leaves out
            assert file.read_bytes().replace(b"\r\n", b"\n") == f"VALUE = {i + 7}\n".encode()
    assert sh(repo, "status", "--porcelain") == "?? untracked.txt\n"
    assert sh(repo, "diff-files", "--name-only") == ""
    assert_fsck_clean(repo)


def test_a_commit_the_user_makes_between_landings_is_kept(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n", "notes.md": "v1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    first = patch_for(repo, "a.py", b"A = 2\n")
    second = patch_for(repo, "b.py", b"B = 2\n")

    async def scenario() -> None:
        landing = lander(repo, tmp_path)
        try:
            await landing.land(first, message("a.py"))
            (repo / "notes.md").write_text("v2\n")
            commit_all(repo, "the user's own commit")
            # The lander's idea of the tip is now stale: the landing is built on the new one.
            await landing.land(second, message("b.py"))
        finally:
            await landing.aclose()

    asyncio.run(scenario())
    subjects = sh(repo, "log", "--reverse", "--format=%s", f"{base}..HEAD").splitlines()
    assert subjects == [
        "fix(ruff): resolve 1 diagnostic in a.py",
        "the user's own commit",
        "fix(ruff): resolve 1 diagnostic in b.py",
    ]
    assert sh(repo, "show", "HEAD:notes.md") == "v2\n"
    assert sh(repo, "show", "HEAD:a.py") == "A = 2\n"
    assert sh(repo, "show", "HEAD:b.py") == "B = 2\n"
    assert sh(repo, "status", "--porcelain") == ""


def test_a_file_changed_on_the_target_is_refused_and_the_rest_land(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    patches = [patch_for(repo, "a.py", b"A = 2\n"), patch_for(repo, "b.py", b"B = 2\n")]
    (repo / "a.py").write_text("A = 'the user'\n")
    user = commit_all(repo, "the user's fix")

    refused, landed = asyncio.run(land_all(lander(repo, tmp_path), patches))

    assert isinstance(refused, LandingRefused) and refused.skipped and refused.superseded
    assert "a.py was changed by a commit on main during the run" in refused.reason
    assert isinstance(landed, Landed)
    assert new_commits(repo, user) == [landed.commit]
    assert (repo / "a.py").read_text() == "A = 'the user'\n"


def test_a_file_the_user_edits_during_the_run_is_skipped_and_kept(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n", "c.py": "C = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    patches = [patch_for(repo, name, b"X = 2\n") for name in ("a.py", "b.py", "c.py")]
    (repo / "b.py").write_text("B = 'being edited'\n")

    results = asyncio.run(land_all(lander(repo, tmp_path), patches))

    refused = results[1]
    assert isinstance(refused, LandingRefused) and refused.skipped
    assert "b.py was changed in the working tree" in refused.reason
    commits = new_commits(repo, base)
    assert [files_of(repo, sha) for sha in commits] == [["a.py"], ["c.py"]]
    assert (repo / "b.py").read_text() == "B = 'being edited'\n"
    assert sh(repo, "status", "--porcelain") == " M b.py\n"


@pytest.mark.parametrize("prepared", [True, False], ids=["prepared", "unprepared"])
def test_a_file_the_user_deleted_during_the_run_is_skipped_and_stays_deleted(
    make, tmp_path, prepared
) -> None:
    """git's merge would write a deleted file back: the look before the landing skips it."""
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    patches = [patch_for(repo, "a.py", b"A = 2\n"), patch_for(repo, "b.py", b"B = 2\n")]
    (repo / "b.py").unlink()

    landed, refused = asyncio.run(land_all(lander(repo, tmp_path), patches, prepare=prepared))

    assert isinstance(landed, Landed)
    assert isinstance(refused, LandingRefused) and refused.skipped
    assert not (repo / "b.py").exists()
    assert sh(repo, "status", "--porcelain") == " D b.py\n"


async def land_one_at_a_time(landing: Lander, patches: list[Patch]) -> list[Landed | BaseException]:
    """Land each patch after the one before has landed, as units finishing apart would."""
    await landing.prepare(await objects.verbatim_paths(landing.root, [p.path for p in patches]))
    results: list[Landed | BaseException] = []
    try:
        for patch in patches:
            try:
                results.append(await landing.land(patch, message(patch.path)))
            except LandingRefused as refused:
                results.append(refused)
    finally:
        await landing.aclose()
    return results


def beside(
    user: Callable[[], None], done: threading.Event, landings: Callable[[], Any]
) -> list[Landed | BaseException]:
    """Run ``landings`` while ``user`` runs in a thread of its own, until ``done``."""
    worker = threading.Thread(target=user)
    worker.start()
    try:
        results: list[Landed | BaseException] = asyncio.run(landings())
    finally:
        done.set()
        worker.join()
    return results


def test_the_users_git_working_beside_the_landings_loses_nothing(make, tmp_path) -> None:
    """While patches land one at a time, the user keeps staging other files and running
    git status (which rewrites the index when it can): each side waits for or retries
    around the other's index lock, and nothing either of them wrote is lost."""
    repo = make(project(40))
    ours = [f"pkg/m{i:02d}.py" for i in range(30)]
    theirs = [f"pkg/m{i:02d}.py" for i in range(30, 40)]
    patches = [patch_for(repo, path, f"VALUE = 'landed {path}'\n".encode()) for path in ours]
    staged: dict[str, str] = {}
    done = threading.Event()

    def user() -> None:
        round_ = 0
        while not done.is_set():
            path = theirs[round_ % len(theirs)]
            text = f"MINE = {round_}\n"
            (repo / path).write_text(text)
            added = git.git_sync(repo, "add", "--", path, check=False)
            if added.returncode == 0:
                staged[path] = text
            else:  # our lock was held: the user's git says so; put the file back
                (repo / path).write_text(staged.get(path, sh(repo, "show", f"HEAD:{path}")))
            git.git_sync(repo, "status", "--porcelain", check=False)
            round_ += 1

    results = beside(user, done, lambda: land_one_at_a_time(lander(repo, tmp_path), patches))

    assert all(isinstance(result, Landed) for result in results), results
    for path in ours:
        assert (repo / path).read_text() == f"VALUE = 'landed {path}'\n"
    for path, text in staged.items():
        assert (repo / path).read_text() == text
        assert sh(repo, "show", f":{path}") == text
    status = sh(repo, "status", "--porcelain", "--untracked-files=no")
    assert sorted(status.splitlines()) == sorted(f"M  {path}" for path in staged)
    assert staged, "the user's git never got the index"


def test_a_landing_waits_for_the_users_git_to_let_the_index_go(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n"})
    head = sh(repo, "rev-parse", "HEAD").strip()
    lock = repo / ".git" / "index.lock"
    lock.write_text("")  # as a git command of the user's holds it
    timer = threading.Timer(0.3, lock.unlink)
    timer.start()
    try:
        (landed,) = asyncio.run(
            land_all(lander(repo, tmp_path), [patch_for(repo, "a.py", b"A = 2\n")])
        )
    finally:
        timer.join()
    assert isinstance(landed, Landed)
    assert new_commits(repo, head) == [landed.commit]
    assert (repo / "a.py").read_text() == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == ""


@pytest.fixture
def immutable() -> Iterator[Callable[[Path], None]]:
    """Make folders that nothing may be written into, not even by root (``chattr +i``)."""
    made: list[Path] = []

    def make_immutable(folder: Path) -> None:
        done = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, check=False)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not possible here: {done.stderr.decode().strip()}")
        made.append(folder)

    yield make_immutable
    for folder in made:
        subprocess.run(["chattr", "-i", str(folder)], check=False)


def test_a_checkout_git_cannot_write_leaves_the_branch_where_it_was(
    make, tmp_path, immutable
) -> None:
    """git writes a chain's first file, then cannot write the second: the branch never
    moves, the first file is written back, and the index and files are as they were."""
    repo = make({"c.py": "C = 1\n", "a/x.py": "X = 1\n", "b/y.py": "Y = 1\n"})
    patches = [
        patch_for(repo, "c.py", b"C = 2\n"),  # lands alone; the two behind it, as a chain
        patch_for(repo, "a/x.py", b"X = 2\n"),
        patch_for(repo, "b/y.py", b"Y = 2\n"),
    ]
    immutable(repo / "b")

    first, *chain = asyncio.run(land_all(lander(repo, tmp_path), patches))

    assert isinstance(first, Landed)
    assert all(isinstance(r, LandingRefused) for r in chain), chain
    reason = chain[0].reason  # type: ignore[union-attr]
    assert "rolled back" in reason and "b/y.py" in reason
    assert sh(repo, "rev-parse", "HEAD").strip() == first.commit
    assert land_moves(repo) == ["stomper: land"]
    assert sh(repo, "ls-files", "--stage", "a/x.py", "b/y.py") == sh(
        repo, "ls-tree", "HEAD", "a/x.py", "b/y.py"
    ).replace("blob ", "").replace("\t", " 0\t")
    assert (repo / "a/x.py").read_text() == "X = 1\n"
    assert (repo / "b/y.py").read_text() == "Y = 1\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert not (repo / ".git" / "index.lock").exists()


# Run by git when the landing's ref transaction is committed, that is, the moment the branch
# has moved: the user's `git commit` of another file, then. Each try is logged.
USER_COMMITS_HOOK = """#!/bin/bash
[ "$1" = committed ] || exit 0
[ -z "$IN_USER_COMMIT" ] || exit 0
grep -q " refs/heads/main$" || exit 0
export IN_USER_COMMIT=1
echo "mine $RANDOM" >> notes.md
if git add notes.md 2>>"$HOOK_LOG.err" && git commit -q -m mine 2>>"$HOOK_LOG.err"; then
  echo committed >> "$HOOK_LOG"
else
  echo refused >> "$HOOK_LOG"
fi
"""


def test_a_user_commit_the_moment_the_branch_moves_never_reverts_a_landing(
    make, tmp_path, monkeypatch
) -> None:
    """The user's git commit runs right after the branch moved and before the index
    followed: it fails on git's index lock, and never commits the index of before."""
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n", "notes.md": "v1\n"})
    hook = repo / ".git" / "hooks" / "reference-transaction"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(USER_COMMITS_HOOK)
    hook.chmod(0o755)
    log = tmp_path / "hook.log"
    monkeypatch.setenv("HOOK_LOG", str(log))
    patches = [patch_for(repo, "a.py", b"A = 2\n"), patch_for(repo, "b.py", b"B = 2\n")]

    results = asyncio.run(land_all(lander(repo, tmp_path), patches))

    assert all(isinstance(r, Landed) for r in results), results
    assert log.read_text().split() == ["refused", "refused"]
    assert "index.lock" in (tmp_path / "hook.log.err").read_text()
    assert sh(repo, "show", "HEAD:a.py") == "A = 2\n"
    assert sh(repo, "show", "HEAD:b.py") == "B = 2\n"
    assert sh(repo, "log", "--format=%s", "-3").splitlines()[0].startswith("fix(ruff)")
    # What the user meant to commit is still theirs, in the working tree.
    assert sh(repo, "status", "--porcelain") == " M notes.md\n"


def test_the_users_commits_beside_the_landings_revert_nothing(make, tmp_path) -> None:
    """While patches land one at a time, the user keeps committing other files: every
    landed change is on the branch at the end, and no commit of theirs holds ours."""
    repo = make(project(40))
    ours = [f"pkg/m{i:02d}.py" for i in range(30)]
    theirs = [f"pkg/m{i:02d}.py" for i in range(30, 40)]
    patches = [patch_for(repo, path, f"VALUE = 'landed {path}'\n".encode()) for path in ours]
    done = threading.Event()

    def user() -> None:
        round_ = 0
        while not done.is_set():
            path = theirs[round_ % len(theirs)]
            (repo / path).write_text(f"MINE = {round_}\n")
            git.git_sync(repo, "commit", "-q", "-m", "mine", "--", path, check=False)
            round_ += 1

    results = beside(user, done, lambda: land_one_at_a_time(lander(repo, tmp_path), patches))
    # The user's commits, as the branch's log has them: HEAD read after a commit of theirs
    # may already be a landing made since.
    log = sh(repo, "reflog", "show", "--format=%H %gs", "refs/heads/main").splitlines()
    committed = [
        sha for sha, said in (line.split(" ", 1) for line in log) if said == "commit: mine"
    ]

    assert all(isinstance(result, Landed) for result in results), results
    for path in ours:
        assert sh(repo, "show", f"HEAD:{path}") == f"VALUE = 'landed {path}'\n"
        assert (repo / path).read_text() == f"VALUE = 'landed {path}'\n"
    for commit in committed:
        touched = files_of(repo, commit)
        assert set(touched) <= set(theirs), (commit, touched)
    assert committed, "the user's git never got the index"
    # A commit refused on the lock leaves the user's edit in their working tree.
    status = sh(repo, "status", "--porcelain", "--untracked-files=no").splitlines()
    assert {line[3:] for line in status} <= set(theirs)


# A filesystem monitor, which git runs each time it reads an index: it answers that anything
# may have changed, and holds two git processes where the test says, each until told to go
# on: the landing's merge that brings the checkout along, and the user's `git commit -- path`
# at its second read of the index, the last one before it takes the index's lock. What it
# leaves to say a git is held names the index that git reads, if not the user's.
HOLDING_MONITOR = """#!/bin/sh
held="{held}"
hold() {{
  echo "$GIT_INDEX_FILE" > "$held/$1.held"
  while [ ! -e "$held/$1.go" ]; do sleep 0.01; done
}}
case "$(tr '\\0' ' ' < /proc/$PPID/cmdline)" in
  *" read-tree -m -u "*)
    if [ -e "$held/landing" ]; then rm "$held/landing"; hold landing; fi ;;
  *" commit "*)
    echo read >> "$held/reads.$PPID"
    if [ "$(wc -l < "$held/reads.$PPID")" -eq 2 ]; then hold user; fi ;;
esac
printf 'token\\0/\\0'
"""


def holding_monitor(repo: Path, tmp_path: Path) -> Path:
    """Make git run :data:`HOLDING_MONITOR` in ``repo``; the folder it holds git through."""
    held = tmp_path / "held"
    held.mkdir()
    monitor = tmp_path / "monitor"
    monitor.write_text(HOLDING_MONITOR.format(held=held))
    monitor.chmod(0o755)
    sh(repo, "config", "core.fsmonitor", str(monitor))
    sh(repo, "config", "core.fsmonitorHookVersion", "2")
    return held


async def _appears(path: Path) -> None:
    """Wait for the monitor, another process, to make ``path`` (bounded by the test's timeout)."""
    while True:
        if path.exists():
            return
        await asyncio.sleep(0.01)


@pytest.mark.skipif(sys.platform != "linux", reason="the monitor finds its git through /proc")
def test_a_user_commit_that_read_the_index_during_a_landing_reverts_nothing(make, tmp_path) -> None:
    """``git commit -- path`` reads HEAD, then the index, and only then takes the index's
    lock. Held after its reads while a landing is under way, and let go once the landing
    has let the lock go, it must not commit on the moved branch with the index of before
    (which it would then write back, without the landed file)."""
    repo = make({"a.py": "A = 1\n", "notes.md": "v1\n"})
    held = holding_monitor(repo, tmp_path)
    patch = patch_for(repo, "a.py", b"A = 2\n")
    # Of another size: git's status must not take the edit for the file it saw a moment ago.
    (repo / "notes.md").write_text("the user's v2\n")
    (held / "landing").touch()

    async def scenario() -> tuple[Landed, int, bytes]:
        landing = lander(repo, tmp_path)
        try:
            landed = asyncio.ensure_future(landing.land(patch, message("a.py")))
            await _appears(held / "landing.held")
            user = await asyncio.create_subprocess_exec(
                "git",
                "commit",
                "-q",
                "-m",
                "mine",
                "--",
                "notes.md",
                cwd=repo,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await _appears(held / "user.held")
            (held / "landing.go").touch()
            result = await landed
            (held / "user.go").touch()
            _, said = await user.communicate()
        finally:
            await landing.aclose()
        return result, user.returncode or 0, said

    landed, returncode, said = asyncio.run(scenario())

    assert sh(repo, "show", "HEAD:a.py") == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == " M notes.md\n"
    # git refuses the user's commit: the branch is no longer where it read it.
    assert returncode != 0 and b"cannot lock ref" in said, said
    assert sh(repo, "rev-parse", "HEAD").strip() == landed.commit


@pytest.mark.skipif(sys.platform != "linux", reason="the monitor finds its git through /proc")
def test_a_branch_moved_while_the_checkout_follows_is_landed_on_anew(make, tmp_path) -> None:
    """Another process moves the branch while git brings the checkout along: the move
    fails, the checkout goes back, and the landing is built again on the new tip."""
    repo = make({"a.py": "A = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    other = sh(repo, "commit-tree", "HEAD^{tree}", "-p", "HEAD", "-m", "other").strip()
    held = holding_monitor(repo, tmp_path)
    patch = patch_for(repo, "a.py", b"A = 2\n")
    (held / "landing").touch()

    async def scenario() -> Landed:
        landing = lander(repo, tmp_path)
        try:
            landed = asyncio.ensure_future(landing.land(patch, message("a.py")))
            await _appears(held / "landing.held")
            sh(repo, "update-ref", "refs/heads/main", other, base)
            (held / "landing.go").touch()
            return await landed
        finally:
            await landing.aclose()

    landed = asyncio.run(scenario())

    assert new_commits(repo, base) == [other, landed.commit]
    assert land_moves(repo) == ["stomper: land"]
    assert (repo / "a.py").read_text() == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == ""


# One landing in a process of its own, to be killed half-way.
LAND_ONE = """
import asyncio, sys
from pathlib import Path
from stomper.landing import Lander
from stomper.unit import Patch

repo, index, path, mode, old, new = sys.argv[1:]


async def land() -> None:
    lander = Lander(
        Path(repo), "refs/heads/main", run_id="test-run", index_file=Path(index), checked_out=True
    )
    try:
        await lander.land(Patch(path, mode, old, new), "fix " + path)
    finally:
        await lander.aclose()


asyncio.run(land())
"""


def _until_sync(condition: Callable[[], object]) -> None:
    """Wait for another process to make ``condition`` true (bounded by the test's timeout)."""
    while not condition():
        time.sleep(0.01)


@pytest.mark.skipif(sys.platform != "linux", reason="the monitor finds its git through /proc")
def test_a_landing_killed_while_the_checkout_follows_leaves_what_recovery_repairs(
    make, tmp_path
) -> None:
    """Killed while git brings the checkout along, a landing leaves the branch moved (git
    makes the move it was told once its input ends), the index's lock, and a checkout
    behind the branch, which the next command brings along: never an index ahead of the
    branch, which the user's next commit would take for their own work."""
    repo = make({"a.py": "A = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    held = holding_monitor(repo, tmp_path)
    patch = patch_for(repo, "a.py", b"A = 2\n")
    (held / "landing").touch()
    argv = [patch.path, patch.mode, patch.old_blob, patch.new_blob]
    child = subprocess.Popen(
        [sys.executable, "-c", LAND_ONE, str(repo), str(tmp_path / "private-index"), *argv]
    )
    try:
        _until_sync((held / "landing.held").exists)
    finally:
        child.kill()
        child.wait()
    copy_lock = Path((held / "landing.held").read_text().strip() + ".lock")
    (held / "landing.go").touch()
    _until_sync(lambda: not copy_lock.exists())  # the merge git was held in has ended
    _until_sync(lambda: sh(repo, "rev-parse", "HEAD").strip() != base)

    assert sh(repo, "show", "HEAD:a.py") == "A = 2\n"
    index = repo / ".git" / "index"
    assert checkout.release_stale(index, lambda run: False) == "test-run"
    landed = git.TreeEntry(patch.mode, patch.new_blob)
    assert asyncio.run(repair_checkout(repo, "a.py", patch.old_blob, landed))
    assert (repo / "a.py").read_text() == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == ""


def test_objects_are_the_ones_git_would_write(make, tmp_path, monkeypatch) -> None:
    for name, value in FIXED_DATES.items():
        monkeypatch.setenv(name, value)
    files = {"deep/er/still/deeper/x.py": "X = 1\n", "deep/y.py": "Y = 1\n", "deep.py": "Z\n"}
    files |= {"deep-er.txt": "sorts between deep and deep/\n", "top.py": "T = 1\n"}
    repo = make(files)
    base = sh(repo, "rev-parse", "HEAD").strip()
    patch = patch_for(repo, "deep/er/still/deeper/x.py", b"X = 2\n")

    (landed,) = asyncio.run(land_all(lander(repo, tmp_path, checked_out=False), [patch]))
    assert isinstance(landed, Landed)
    assert sh(repo, "rev-parse", "HEAD").strip() == base

    # What git's own plumbing makes of the same change, in a private index.
    env = {"GIT_INDEX_FILE": str(tmp_path / "git-index")}

    async def by_git() -> tuple[str, str]:
        await git.git(repo, "read-tree", base, env=env)
        info = f"{patch.mode},{patch.new_blob},{patch.path}"
        await git.git(repo, "update-index", "--cacheinfo", info, env=env)
        tree = (await git.git(repo, "write-tree", env=env)).stdout.decode().strip()
        commit = await git.commit_tree(repo, tree, base, message(patch.path))
        return tree, commit

    tree, commit = asyncio.run(by_git())
    assert sh(repo, "rev-parse", f"{landed.commit}^{{tree}}").strip() == tree
    assert landed.commit == commit
    assert_fsck_clean(repo)


AWKWARD = ["with space.py", "ünïcode/ñame.py", "-dash.py", "x/\tab.py", 'quote"d.py', " lead.py"]


@pytest.mark.parametrize("checked_out", [True, False])
def test_a_long_chain_is_written_by_git_as_its_plumbing_would_write_it(
    make, tmp_path, monkeypatch, checked_out
) -> None:
    for name, value in FIXED_DATES.items():
        monkeypatch.setenv(name, value)
    paths = [*AWKWARD, *(f"pkg/sub/m{n}.py" for n in range(6))]
    repo = make({path: "OLD = 1\n" for path in [*paths, "pkg/kept.py"]})
    # Every object git's fast-import writes stays in its pack: seen there, it wrote them.
    sh(repo, "config", "fastimport.unpackLimit", "1")
    packs = set((repo / ".git" / "objects" / "pack").glob("*.pack"))
    base = sh(repo, "rev-parse", "HEAD").strip()
    # Half of the blobs are stored already, half are left for the landing to store.
    patches = [
        (unstored_patch_for if n % 2 else patch_for)(repo, path, f"NEW = {n}\n".encode())
        for n, path in enumerate(paths)
    ]
    landing = lander(repo, tmp_path, checked_out=checked_out)
    refs = sh(repo, "for-each-ref", "--format=%(refname)")

    async def land() -> list[Landed | Exception]:
        try:
            return await landing.land_many([(patch, message(patch.path)) for patch in patches])
        finally:
            await landing.aclose()

    landed = asyncio.run(land())
    commits = [outcome.commit for outcome in landed if isinstance(outcome, Landed)]
    assert len(commits) == len(paths), landed
    target = "HEAD" if checked_out else "other"
    assert new_commits(repo, base, target) == commits
    assert set((repo / ".git" / "objects" / "pack").glob("*.pack")) > packs
    env = {"GIT_INDEX_FILE": str(tmp_path / "git-index")}

    async def by_git(parent: str, patch: Patch) -> str:
        """What git's own plumbing makes of the same change on the same parent."""
        await git.git(repo, "read-tree", parent, env=env)
        info = f"{patch.mode},{patch.new_blob},{patch.path}"
        await git.git(repo, "update-index", "--cacheinfo", info, env=env)
        tree = (await git.git(repo, "write-tree", env=env)).stdout.decode().strip()
        return await git.commit_tree(repo, tree, parent, message(patch.path))

    for parent, patch, commit in zip([base, *commits], patches, commits, strict=False):
        assert files_of(repo, commit) == [patch.path]
        assert commit == asyncio.run(by_git(parent, patch)), patch.path
    assert sh(repo, "for-each-ref", "--format=%(refname)") == refs
    if checked_out:
        assert sh(repo, "status", "--porcelain") == ""
        assert all((repo / path).read_text() == f"NEW = {n}\n" for n, path in enumerate(paths))
    assert_fsck_clean(repo)


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A time zone half an hour off the hour, for this process and its children."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_identity_and_zone_are_what_git_var_gives(make, tmp_path, zone) -> None:
    repo = make({"a.py": "A = 1\n"})
    patch = patch_for(repo, "a.py", b"A = 2\n")
    ident = sh(repo, "var", "GIT_COMMITTER_IDENT").strip()
    (landed,) = asyncio.run(land_all(lander(repo, tmp_path), [patch]))
    assert isinstance(landed, Landed)
    raw = sh(repo, "cat-file", "commit", landed.commit).splitlines()
    person, _, zone_offset = ident.rsplit(" ", 2)
    author, committer = raw[2], raw[3]
    assert author.startswith(f"author {IDENTITY['user.name']} <{IDENTITY['user.email']}> ")
    assert committer.startswith(f"committer {person} ")
    assert author.endswith(" +0530") and committer.endswith(" " + zone_offset)
    assert abs(int(committer.split()[-2]) - time.time()) < 60


@pytest.mark.parametrize(
    "path",
    ["a/b/c/d/e/f/g/deep.py", "with space.py", "ünïcode/ñame.py", "-dash.py", "x/\tab.py"],
)
@pytest.mark.parametrize("stored", [True, False])
def test_awkward_paths_land(make, tmp_path, path, stored) -> None:
    repo = make({path: "OLD = 1\n", "a/b/c/sibling.py": "S = 1\n", "zzz.py": "Z = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    patch = (patch_for if stored else unstored_patch_for)(repo, path, b"NEW = 1\n")
    (landed,) = asyncio.run(land_all(lander(repo, tmp_path), [patch]))
    assert isinstance(landed, Landed)
    assert files_of(repo, landed.commit) == [path]
    assert new_commits(repo, base) == [landed.commit]
    assert (repo / path).read_text() == "NEW = 1\n"
    assert sh(repo, "status", "--porcelain") == ""
    assert_fsck_clean(repo)


def test_a_commit_subject_is_grammatical_and_at_most_72_characters(make, tmp_path) -> None:
    deep = "src/project/subsystem/component/internal/implementation/details/handlers.py"
    long_name = "tests/" + "a_module_whose_name_alone_is_longer_than_any_subject" * 2 + ".py"
    repo = make({"a.py": "A = 1\n", deep: "D = 1\n", long_name: "L = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    messages = [
        commit_message(path="a.py", tools=["ruff"], codes=["F401"], run_id="test-run"),
        commit_message(path=deep, tools=["mypy", "ruff"], codes=["F401", "E501"], run_id="r"),
        commit_message(path=long_name, tools=["ruff"], codes=["F401"] * 12, run_id="r"),
    ]
    patches = [patch_for(repo, path, b"X = 2\n") for path in ("a.py", deep, long_name)]
    landing = lander(repo, tmp_path)

    async def land() -> None:
        await landing.prepare(await objects.verbatim_paths(repo, [p.path for p in patches]))
        try:
            for patch, text in zip(patches, messages, strict=True):
                await landing.land(patch, text)
        finally:
            await landing.aclose()

    asyncio.run(land())

    subjects = sh(repo, "log", "--reverse", "--format=%s", f"{base}..HEAD").splitlines()
    assert subjects == [
        "fix(ruff): resolve 1 diagnostic in a.py",
        "fix(mypy+ruff): resolve 2 diagnostics in .../details/handlers.py",
        "fix(ruff): resolve 12 diagnostics",
    ]
    assert all(len(subject) <= 72 for subject in subjects)
    bodies = sh(repo, "log", "--reverse", "--format=%b%x00", f"{base}..HEAD").split("\0")
    assert f"File: {deep}\n" in bodies[1] and f"File: {long_name}\n" in bodies[2]
    assert "File:" not in bodies[0]
    trailer = "--format=%(trailers:key=Stomper-Unit,valueonly)"
    units = sh(repo, "log", "--reverse", trailer, f"{base}..HEAD").split()
    assert units == ["a.py", deep, long_name]


def test_the_targets_mode_is_kept(make, tmp_path) -> None:
    repo = make({"run.py": "R = 1\n"})
    patch = patch_for(repo, "run.py", b"R = 2\n")
    (repo / "run.py").chmod(0o755)
    commit_all(repo, "the user makes it executable")
    (landed,) = asyncio.run(land_all(lander(repo, tmp_path), [patch]))
    assert isinstance(landed, Landed)
    assert sh(repo, "ls-tree", "HEAD", "run.py").startswith("100755 ")
    assert sh(repo, "status", "--porcelain") == ""


def sha256_repo(root: Path, files: Mapping[str, str]) -> Path:
    root.mkdir(parents=True)
    git.git_sync(root, "init", "--quiet", "--object-format=sha256", "--initial-branch=main")
    for key, value in IDENTITY.items():
        git.git_sync(root, "config", key, value)
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(content)
    commit_all(root, "initial")
    return root


@pytest.mark.parametrize("checked_out", [True, False])
def test_sha256_repositories_land(tmp_path, checked_out) -> None:
    repo = sha256_repo(tmp_path / "repo", {"a.py": "A = 1\n", "d/b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    assert len(base) == 64
    patches = [patch_for(repo, "a.py", b"A = 2\n"), patch_for(repo, "d/b.py", b"B = 2\n")]
    results = asyncio.run(land_all(lander(repo, tmp_path, checked_out=checked_out), patches))
    tip = "main" if checked_out else "other"
    commits = new_commits(repo, base, tip)
    assert [r.commit for r in results if isinstance(r, Landed)] == commits
    assert [files_of(repo, sha) for sha in commits] == [["a.py"], ["d/b.py"]]
    assert sh(repo, "show", f"{tip}:d/b.py") == "B = 2\n"
    assert (repo / "d" / "b.py").read_text() == ("B = 2\n" if checked_out else "B = 1\n")
    assert sh(repo, "status", "--porcelain") == ""
    assert_fsck_clean(repo)


@pytest.mark.parametrize(
    ("setting", "value"), [("core.sharedRepository", "group"), ("i18n.commitEncoding", "latin1")]
)
def test_settings_the_writer_does_not_cover_fall_back_to_gits_plumbing(
    make, tmp_path, setting, value
) -> None:
    repo = make({"a.py": "A = 1\n"})
    sh(repo, "config", setting, value)
    objects = repo / ".git" / "objects"
    new_folders = 0
    # A commit whose fan-out folder the repository's first objects made (before the
    # setting) says nothing of how the writer makes folders: land until one's is new.
    for number in range(2, 8):
        before = {folder.name for folder in objects.iterdir()}
        patch = patch_for(repo, "a.py", f"A = {number}\n".encode())
        (landed,) = asyncio.run(land_all(lander(repo, tmp_path), [patch]))
        assert isinstance(landed, Landed)
        raw = sh(repo, "cat-file", "commit", landed.commit)
        assert ("encoding latin1\n" in raw) == (value == "latin1")
        if value != "group":
            break
        if landed.commit[:2] not in before:
            folder = objects / landed.commit[:2]
            assert folder.stat().st_mode & 0o2070 == 0o2070  # git's shared folders
            new_folders += 1
            break
    assert value != "group" or new_folders == 1
    assert sh(repo, "status", "--porcelain") == ""
    assert_fsck_clean(repo)


def child_pids() -> set[int]:
    """The live child processes of this process (Linux)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == os.getpid():
            found.add(int(stat.parent.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="children are found through /proc")
def test_aclose_ends_the_processes_it_started(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n"})
    patch = patch_for(repo, "a.py", b"A = 2\n")
    before = child_pids()

    async def scenario() -> set[int]:
        landing = lander(repo, tmp_path)
        await landing.aclose()  # never opened: nothing to do
        await landing.land(patch, message("a.py"))
        running = child_pids() - before
        await landing.aclose()
        await landing.aclose()  # twice is fine
        return running

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        running = asyncio.run(scenario())
        gc.collect()
    # Kept between landings: cat-file for the tip, and update-ref for the next move.
    assert len(running) == 2
    assert not child_pids() & running
    assert not [w for w in caught if issubclass(w.category, ResourceWarning)]


def test_a_queued_patch_whose_caller_is_cancelled_does_not_land(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    first = patch_for(repo, "a.py", b"A = 2\n")
    second = patch_for(repo, "b.py", b"B = 2\n")

    async def scenario() -> None:
        landing = lander(repo, tmp_path)
        try:
            leader = asyncio.ensure_future(landing.land(first, message("a.py")))
            queued = asyncio.ensure_future(landing.land(second, message("b.py")))
            await _until(lambda: landing._queue)  # the second waits behind the first
            queued.cancel()
            leader.cancel()  # begun: it lands all the same
            for task in (leader, queued):
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            await landing.aclose()

    asyncio.run(scenario())
    (commit,) = new_commits(repo, base)
    assert files_of(repo, commit) == ["a.py"]
    assert (repo / "a.py").read_text() == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == ""


async def _until(condition: Callable[[], object]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("never happened")


def test_units_landed_before_are_not_landed_again(make, tmp_path) -> None:
    repo = make({"a.py": "A = 1\n"})
    head = sh(repo, "rev-parse", "HEAD").strip()
    patch = patch_for(repo, "a.py", b"A = 2\n")
    landing = lander(repo, tmp_path, landed={"a.py": head})
    (result,) = asyncio.run(land_all(landing, [patch]))
    assert result == Landed(head, 0.0)
    assert new_commits(repo, head) == []


def cut_short(repo: Path, patch: Patch) -> git.TreeEntry:
    """The branch moved with the patch's commit, as a landing killed half-way leaves it."""
    env = {"GIT_INDEX_FILE": str(repo / ".git" / "cut-index")}
    sh(repo, "read-tree", "HEAD")
    done = asyncio.run(_commit_patch(repo, patch, env))
    sh(repo, "update-ref", "refs/heads/main", done)
    return git.TreeEntry(patch.mode, patch.new_blob)


async def _commit_patch(repo: Path, patch: Patch, env: dict[str, str]) -> str:
    await git.git(repo, "read-tree", "HEAD", env=env)
    info = f"{patch.mode},{patch.new_blob},{patch.path}"
    await git.git(repo, "update-index", "--cacheinfo", info, env=env)
    tree = (await git.git(repo, "write-tree", env=env)).stdout.decode().strip()
    return await git.commit_tree(repo, tree, "HEAD", "landed\n")


@pytest.mark.parametrize("followed", ["nothing", "index", "file"])
def test_repair_checkout_finishes_a_landing_cut_short(make, followed) -> None:
    repo = make({"a.py": "A = 1\n"})
    patch = patch_for(repo, "a.py", b"A = 2\n")
    landed = cut_short(repo, patch)
    if followed == "index":  # killed between the index and the working tree
        sh(repo, "update-index", "--cacheinfo", f"{patch.mode},{patch.new_blob},a.py")
    if followed == "file":  # killed between the working tree and the index
        (repo / "a.py").write_text("A = 2\n")
    assert sh(repo, "status", "--porcelain") != ""
    assert asyncio.run(repair_checkout(repo, "a.py", patch.old_blob, landed))
    assert (repo / "a.py").read_text() == "A = 2\n"
    assert sh(repo, "status", "--porcelain") == ""


def test_repair_checkout_leaves_a_file_the_user_changed(make) -> None:
    repo = make({"a.py": "A = 1\n"})
    patch = patch_for(repo, "a.py", b"A = 2\n")
    landed = cut_short(repo, patch)
    (repo / "a.py").write_text("A = 'mine'\n")
    assert not asyncio.run(repair_checkout(repo, "a.py", patch.old_blob, landed))
    assert (repo / "a.py").read_text() == "A = 'mine'\n"


async def land_whole(landing: Lander, patches: list[Patch]) -> list[Landed | Exception]:
    try:
        return await landing.land_many([(p, message(p.path)) for p in patches], whole=True)
    finally:
        await landing.aclose()


@pytest.mark.parametrize("checked_out", [True, False], ids=["checked-out", "other-branch"])
def test_patches_that_land_whole_land_in_one_move_or_not_at_all(
    make, tmp_path, checked_out: bool
) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n", "c.py": "C = 1\n"})
    patches = [patch_for(repo, name, b"X = 2\n") for name in ("a.py", "b.py", "c.py")]
    (repo / "b.py").write_text("B = 'the user'\n")
    user = commit_all(repo, "the user's change to b.py")
    target = "refs/heads/main" if checked_out else "refs/heads/other"

    results = asyncio.run(land_whole(lander(repo, tmp_path, checked_out=checked_out), patches))

    assert all(isinstance(result, LandingRefused) for result in results), results
    assert "b.py was changed by a commit on" in str(results[1])
    assert "lands with b.py or not at all" in str(results[0])
    assert sh(repo, "rev-parse", target).strip() == user
    assert sh(repo, "status", "--porcelain") == ""
    assert (repo / "a.py").read_text() == "A = 1\n"

    # Nothing in the way: all three land, one commit each, in one move of the branch.
    patches = [patch_for(repo, name, b"X = 3\n") for name in ("a.py", "b.py", "c.py")]
    before = len(land_moves(repo, target))
    results = asyncio.run(land_whole(lander(repo, tmp_path, checked_out=checked_out), patches))
    assert all(isinstance(result, Landed) for result in results), results
    assert len(new_commits(repo, user, target)) == 3
    assert len(land_moves(repo, target)) == before + 1
    assert_fsck_clean(repo)


def test_patches_that_land_whole_stay_out_when_one_file_is_the_users_in_the_checkout(
    make, tmp_path
) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    patches = [patch_for(repo, "a.py", b"A = 2\n"), patch_for(repo, "b.py", b"B = 2\n")]
    (repo / "b.py").write_text("B = 'being edited'\n")

    results = asyncio.run(land_whole(lander(repo, tmp_path), patches))

    assert all(isinstance(result, LandingRefused) for result in results), results
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert sh(repo, "status", "--porcelain") == " M b.py\n"
    assert (repo / "a.py").read_text() == "A = 1\n"


@pytest.mark.parametrize(
    ("writer", "commits"),
    [("libgit2", 2), ("fast-import", 9), ("plumbing", 2)],
)
@pytest.mark.parametrize("checked_out", [True, False], ids=["checked-out", "other-branch"])
def test_a_commit_of_several_files_lands_whole_through_every_writer(
    make, tmp_path, writer: str, commits: int, checked_out: bool
) -> None:
    files = {f"d{n}/{name}.py": f"{name.upper()} = {n}\n" for n in range(commits) for name in "ab"}
    repo = make(files)
    if writer == "plumbing":
        sh(repo, "config", "i18n.commitEncoding", "latin1")
    base = sh(repo, "rev-parse", "HEAD").strip()
    wanted = [
        (
            [
                patch_for(repo, f"d{n}/{name}.py", f"{name.upper()} = {n + 100}\n".encode())
                for name in "ab"
            ],
            f"both files of d{n}",
        )
        for n in range(commits)
    ]

    async def land() -> list[Landed | Exception]:
        landing = lander(repo, tmp_path, checked_out=checked_out)
        try:
            return await landing.land_commits(wanted)
        finally:
            await landing.aclose()

    results = asyncio.run(land())
    tip = "main" if checked_out else "other"
    made = new_commits(repo, base, tip)
    assert [r.commit for r in results if isinstance(r, Landed)] == made
    assert [files_of(repo, sha) for sha in made] == [
        [f"d{n}/a.py", f"d{n}/b.py"] for n in range(commits)
    ]
    assert sh(repo, "show", f"{tip}:d0/b.py") == "B = 100\n"
    assert (repo / "d0/b.py").read_text() == ("B = 100\n" if checked_out else "B = 0\n")
    assert sh(repo, "status", "--porcelain") == ""
    assert_fsck_clean(repo)


def test_a_commit_of_several_files_stays_out_whole_when_one_file_is_the_users(
    make, tmp_path
) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    patches = [patch_for(repo, "a.py", b"A = 2\n"), patch_for(repo, "b.py", b"B = 2\n")]
    (repo / "b.py").write_text("B = 'the user'\n")
    user = commit_all(repo, "the user's b.py")

    async def land() -> list[Landed | Exception]:
        landing = lander(repo, tmp_path)
        try:
            return await landing.land_commits([(patches, "both")])
        finally:
            await landing.aclose()

    (refused,) = asyncio.run(land())
    assert isinstance(refused, LandingRefused) and refused.superseded
    assert "one of a.py, b.py was changed by a commit on main" in refused.reason
    assert sh(repo, "rev-parse", "HEAD").strip() == user
    assert (repo / "a.py").read_text() == "A = 1\n"


def created(repo: Path, path: str, content: bytes, *, stored: bool = True) -> Patch:
    """A patch that creates ``path`` with ``content``."""
    argv = ["hash-object", *(["-w"] if stored else []), "--stdin"]
    blob = asyncio.run(git.git(repo, *argv, stdin=content)).stdout.decode().strip()
    return Patch(path, "100644", None, blob, None if stored else content)


def deleted(repo: Path, path: str) -> Patch:
    """A patch that deletes ``path`` (at HEAD)."""
    mode, _, old = sh(repo, "ls-tree", "HEAD", "--", path).split("\t")[0].split()
    return Patch(path, mode, old, None)


def land_commits_of(
    repo: Path, tmp_path: Path, commits: list[tuple[list[Patch], str]], *, checked_out: bool = True
) -> list[Landed | Exception]:
    async def land() -> list[Landed | Exception]:
        landing = lander(repo, tmp_path, checked_out=checked_out)
        try:
            return await landing.land_commits(commits)
        finally:
            await landing.aclose()

    return asyncio.run(land())


@pytest.mark.parametrize(
    ("writer", "commits"),
    [("libgit2", 2), ("fast-import", 9), ("plumbing", 2)],
)
@pytest.mark.parametrize("checked_out", [True, False], ids=["checked-out", "other-branch"])
def test_a_commit_that_creates_and_deletes_files_lands_through_every_writer(
    make, tmp_path, writer: str, commits: int, checked_out: bool
) -> None:
    files = {f"d{n}/{name}.py": f"{name.upper()} = {n}\n" for n in range(commits) for name in "ab"}
    repo = make({**files, "gone/only.py": "ONLY = 1\n"})
    if writer == "plumbing":
        sh(repo, "config", "i18n.commitEncoding", "latin1")
    base = sh(repo, "rev-parse", "HEAD").strip()
    wanted = [
        (
            [
                patch_for(repo, f"d{n}/a.py", f"A = {n + 100}\n".encode()),
                created(repo, f"d{n}/new/c.py", f"C = {n}\n".encode(), stored=n % 2 == 0),
                deleted(repo, f"d{n}/b.py"),
                *([deleted(repo, "gone/only.py")] if n == 0 else []),
            ],
            f"d{n}: a changed, c created, b deleted",
        )
        for n in range(commits)
    ]

    results = land_commits_of(repo, tmp_path, wanted, checked_out=checked_out)

    tip = "main" if checked_out else "other"
    made = new_commits(repo, base, tip)
    assert [r.commit for r in results if isinstance(r, Landed)] == made, results
    assert [sorted(files_of(repo, sha)) for sha in made] == [
        sorted([f"d{n}/a.py", f"d{n}/b.py", f"d{n}/new/c.py", *(["gone/only.py"] * (n == 0))])
        for n in range(commits)
    ]
    tree = sh(repo, "ls-tree", "-r", "--name-only", tip).split()
    assert "d0/new/c.py" in tree and "d0/b.py" not in tree
    assert not any(path.startswith("gone/") for path in tree)
    assert sh(repo, "show", f"{tip}:d1/new/c.py") == "C = 1\n"
    if checked_out:
        assert (repo / "d1/new/c.py").read_text() == "C = 1\n"
        assert not (repo / "d0/b.py").exists() and not (repo / "gone").exists()
    else:
        assert not (repo / "d0/new").exists() and (repo / "d0/b.py").exists()
    assert sh(repo, "status", "--porcelain") == ""
    assert_fsck_clean(repo)


@pytest.mark.parametrize("what", ["untracked", "ignored", "folder", "file-for-folder"])
def test_a_file_created_where_the_user_has_one_lands_nothing_and_keeps_theirs(
    make, tmp_path, what: str
) -> None:
    repo = make({"a.py": "A = 1\n", ".gitignore": "*.log\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    path = {
        "untracked": "new.py",
        "ignored": "new.log",
        "folder": "new.py",
        "file-for-folder": "pkg/new.py",
    }[what]
    if what == "folder":
        (repo / "new.py").mkdir()
        (repo / "new.py" / "mine.txt").write_text("the user's\n")
    elif what == "file-for-folder":
        (repo / "pkg").write_text("the user's file, where a folder would be created\n")
    else:
        (repo / path).write_text("the user's\n")
    before = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    patches = [patch_for(repo, "a.py", b"A = 2\n"), created(repo, path, b"NEW = 1\n")]

    (refused,) = land_commits_of(repo, tmp_path, [(patches, "both")])

    assert isinstance(refused, LandingRefused) and refused.skipped, refused
    assert "would be created where the working tree has something of yours" in refused.reason
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    after = {p: p.read_bytes() for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert after == before


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_file_created_on_the_branch_meanwhile_is_kept_and_the_creation_refused(
    make, tmp_path, what: str
) -> None:
    repo = make({"a.py": "A = 1\n"})
    patch = created(repo, "new.py", b"NEW = 'stomper'\n")
    if what == "file":
        (repo / "new.py").write_text("NEW = 'the user'\n")
    else:
        (repo / "new.py").mkdir()
        (repo / "new.py" / "inner.py").write_text("INNER = 'the user'\n")
    user = commit_all(repo, "the user's new.py")

    (refused,) = land_commits_of(repo, tmp_path, [([patch], "create new.py")])

    assert isinstance(refused, LandingRefused) and refused.superseded, refused
    assert sh(repo, "rev-parse", "HEAD").strip() == user
    assert sh(repo, "status", "--porcelain") == ""


def test_a_deleted_file_the_user_edits_is_kept_and_nothing_of_its_commit_lands(
    make, tmp_path
) -> None:
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    base = sh(repo, "rev-parse", "HEAD").strip()
    patches = [patch_for(repo, "a.py", b"A = 2\n"), deleted(repo, "b.py")]
    (repo / "b.py").write_text("B = 'being edited'\n")

    (refused,) = land_commits_of(repo, tmp_path, [(patches, "a changed, b deleted")])

    assert isinstance(refused, LandingRefused) and refused.skipped, refused
    assert sh(repo, "rev-parse", "HEAD").strip() == base
    assert (repo / "b.py").read_text() == "B = 'being edited'\n"
    assert (repo / "a.py").read_text() == "A = 1\n"


@pytest.mark.parametrize("cut", ["before-the-index", "between-index-and-files"])
def test_recovery_brings_created_and_deleted_files_along(make, tmp_path, cut: str) -> None:
    """The branch moved, and the checkout was left behind: wholly, or with the index
    moved and the files not."""
    repo = make({"a.py": "A = 1\n", "b.py": "B = 1\n"})
    patches = [
        patch_for(repo, "a.py", b"A = 2\n"),
        created(repo, "new/c.py", b"C = 1\n"),
        deleted(repo, "b.py"),
    ]
    (landed,) = land_commits_of(repo, tmp_path, [(patches, "three")], checked_out=False)
    assert isinstance(landed, Landed)
    sh(repo, "update-ref", "refs/heads/main", landed.commit)  # the checkout stays behind
    if cut == "between-index-and-files":
        sh(repo, "read-tree", landed.commit)
    assert sh(repo, "status", "--porcelain") != ""

    for patch in patches:
        after = None
        if patch.new_blob is not None:
            after = git.TreeEntry("100644", patch.new_blob)
        assert asyncio.run(repair_checkout(repo, patch.path, patch.old_blob, after)), patch.path

    assert sh(repo, "status", "--porcelain") == ""
    assert (repo / "new/c.py").read_text() == "C = 1\n"
    assert not (repo / "b.py").exists()
    assert (repo / "a.py").read_text() == "A = 2\n"
