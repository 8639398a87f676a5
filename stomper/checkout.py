"""The user's checkout, brought along when a landing moves its branch: by git, under git's lock.

When units land on the checked-out branch, the branch moves and the landed files must change
in the user's index and working tree, while nothing else of theirs may. ``index.lock`` is
taken first (git's lock, created exclusively), the index and the files follow the chain
while it is held, then the branch moves, and only then does the lock go. ``git commit``
reads HEAD, then the index, and takes the lock only after both: in this order one that
finds the branch moved finds the index moved too, and its compare-and-swap of the branch
fails on a tip it did not read, so it never commits, nor writes back, the index of before.
A ``git add`` or ``stash`` of the user's at that moment waits for the lock or fails on it,
as git's commands do with each other. The move is told to a ``git update-ref --stdin``
before the checkout follows, and git makes it when its input ends, which it also does when
stomper dies: a landing cut short leaves the branch moved and the checkout behind, which
the next command brings along (:mod:`stomper.recovery`), never the index ahead.

The index and the files are written by git itself: ``git read-tree -m -u OLD NEW`` into a
copy of the index. That two-tree merge rewrites exactly the files that differ between the
two commits, refuses, writing nothing, when the user changed any of them (staged or not),
keeps every other entry as the user left it, and writes stat data, racy-git smudging,
filters, sparse and split indexes as git does. The copy then replaces the index, still
under the lock. (One change of the user's the merge does not see: a file deleted from the
working tree counts as unchanged, and is written again. The lander looks for changed files
before the checkout follows, deletions included.)

The lock holds one line naming the run that took it (git never reads a lock's content), so
that a lock left behind by a run that was killed is known as stomper's, and removed by the
next command (:func:`release_stale`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import git, proc

_POLL = 0.02
_OWNER = b"stomper: landing of run "
_STALE = b"not uptodate. Cannot merge."
_COPY = ".stomper"
"""The suffix of the index's copy that git brings along before it replaces the index."""


class IndexBusy(Exception):
    """Another process held the index lock for longer than a landing waits."""


class CheckoutRefused(Exception):
    """git would not bring the checkout along (nothing was written); ``str()`` says why."""


@dataclass(frozen=True)
class HeldIndex:
    """The user's index while this process holds its lock."""

    root: Path
    index: Path

    async def follow(self, old: str, new: str) -> None:
        """Bring the index and the working tree from commit ``old`` to ``new``, or raise
        :class:`CheckoutRefused` with both as they were."""
        with self._copy() as copy:
            try:
                await git.read_tree_merge(self.root, old, new, index_file=copy)
            except proc.CalledProcessError as exc:
                if _STALE not in exc.output:
                    raise CheckoutRefused(_said(exc)) from None
                # The index's stat data is older than files whose bytes are unchanged (a
                # copied or restored checkout): the merge counts them as changed until a
                # refresh, which git's own porcelain would have made first. Nothing was
                # written, so once refreshed the merge is tried again.
                await git.refresh_index(self.root, index_file=copy)
                try:
                    await git.read_tree_merge(self.root, old, new, index_file=copy)
                except proc.CalledProcessError as again:
                    raise CheckoutRefused(_said(again)) from None

    async def restore(self, paths: Sequence[str]) -> None:
        """Write ``paths`` back from the index into the working tree: after a
        :class:`CheckoutRefused` that left some of them written (a disk error half-way)."""
        with self._copy() as copy:
            await git.checkout_paths(self.root, paths, index_file=copy)

    @contextlib.contextmanager
    def _copy(self) -> Iterator[Path]:
        """A copy of the index for git to write; it replaces the index when the block ends
        without an error, and is gone however it ends."""
        copy = self.index.with_name(self.index.name + _COPY)
        try:
            if self.index.exists():
                shutil.copyfile(self.index, copy)
            yield copy
            os.replace(copy, self.index)
        finally:
            copy.unlink(missing_ok=True)


def _said(exc: proc.CalledProcessError) -> str:
    return exc.output.decode(errors="replace").strip()


def lock_of(index: Path) -> Path:
    return index.with_name(index.name + ".lock")


@contextlib.asynccontextmanager
async def hold_index(
    root: Path, index: Path, run_id: str, *, wait: float
) -> AsyncIterator[HeldIndex]:
    """Hold git's lock on ``index`` (waiting up to ``wait`` seconds for another process to
    let it go, else :class:`IndexBusy`); released however the block ends."""
    lock = lock_of(index)
    waited = 0.0
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            break
        except FileExistsError:
            if waited >= wait:
                raise IndexBusy(
                    f"another git process held {lock} for {wait:g}s; the unit was not landed"
                ) from None
            await asyncio.sleep(_POLL)
            waited += _POLL
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_OWNER + f"{run_id} (pid {os.getpid()})\n".encode())
        yield HeldIndex(root, index)
    finally:
        lock.unlink(missing_ok=True)


def lock_owner(index: Path) -> str | None:
    """The run whose landing holds (or a killed landing left) the lock on ``index``; None
    when there is no lock or another program holds it."""
    try:
        return _owner(lock_of(index).read_bytes())
    except OSError:
        return None


def _owner(content: bytes) -> str | None:
    if not content.startswith(_OWNER):
        return None
    return content[len(_OWNER) :].split(b" ", 1)[0].decode(errors="replace")


def release_stale(index: Path, alive: Callable[[str], bool]) -> str | None:
    """Remove the lock on ``index`` when a run that is no longer alive left it; that run's
    id, or None when there was nothing to remove."""
    lock = lock_of(index)
    try:
        content, before = lock.read_bytes(), lock.stat()
    except OSError:
        return None
    owner = _owner(content)
    if owner is None or alive(owner):
        return None
    # Only that very lock: a git process may have taken the index since it was read.
    with contextlib.suppress(OSError):
        now = lock.stat()
        same = (now.st_ino, now.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
        if same and lock.read_bytes() == content:
            lock.unlink()
    index.with_name(index.name + _COPY).unlink(missing_ok=True)
    return owner
