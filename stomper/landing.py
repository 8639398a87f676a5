"""Landing: one unit's patch becomes one commit on the target, one landing at a time.

Commits are built without a checkout: a private index holds the target's tree, the unit's
blob replaces its file there, and the branch moves by compare-and-swap on its old value, so
a commit the user makes meanwhile is never overwritten (the landing retries on the new tip).
When the target is the checked-out branch, only the landed file is brought up to date in
the user's index and working tree; everything else of theirs stays as it was.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from stomper import git, proc
from stomper.unit import Patch

_CAS_RETRIES = 20
# How long a landing waits for another process's index.lock to go before giving up the unit.
_INDEX_LOCK_WAIT = 10.0
_POLL = 0.05


class _Landings:
    """Process-wide, for a second Ctrl-C: it exits at once, but never half-way through a
    landing, which takes milliseconds."""

    active = 0
    exit_code: int | None = None


def exit_when_landed(code: int) -> None:
    """Exit the process now, or the moment the landing under way is done."""
    if _Landings.active == 0:
        os._exit(code)
    _Landings.exit_code = code


class LandingRefused(Exception):
    """The patch cannot land; the message says why (the unit keeps its patch unlanded)."""

    def __init__(self, reason: str, *, skipped: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skipped = skipped


@dataclass(frozen=True)
class Landed:
    commit: str
    seconds: float
    """Time spent landing, not counting the wait for the landing lock."""


class Lander:
    """Lands patches on ``target_ref`` of the repository at ``root``, one at a time."""

    def __init__(
        self,
        root: Path,
        target_ref: str,
        *,
        index_file: Path,
        checked_out: bool,
        landed: Mapping[str, str] = {},
        user_index: Path | None = None,
    ) -> None:
        self.root = root
        self.target_ref = target_ref
        self.index_file = index_file
        self.checked_out = checked_out
        self.user_index = user_index or root / ".git" / "index"
        """The checkout's own index, whose lock other git processes may hold."""
        self.landed = dict(landed)
        """Units of this run already on the target (path to commit), found by their trailers."""
        self._lock = asyncio.Lock()
        self._index_tip: str | None = None

    async def land(self, patch: Patch, message: str) -> Landed:
        async with self._lock:
            if patch.path in self.landed:
                # Landed before a crash cut the journal short: landing is exactly once.
                return Landed(self.landed[patch.path], 0.0)
            started = time.monotonic()
            # Once begun, a landing finishes: a cancellation waits for it, so no half-landed
            # state (a moved branch with a stale working tree) is ever left behind.
            _Landings.active += 1
            landing = asyncio.ensure_future(self._land(patch, message))
            try:
                commit = await asyncio.shield(landing)
            except asyncio.CancelledError:
                await landing
                raise
            finally:
                _Landings.active -= 1
                if _Landings.exit_code is not None and _Landings.active == 0:
                    os._exit(_Landings.exit_code)
            self.landed[patch.path] = commit
            return Landed(commit, time.monotonic() - started)

    async def _land(self, patch: Patch, message: str) -> str:
        if self.checked_out and await git.status_of(self.root, patch.path):
            raise LandingRefused(
                f"{patch.path} was changed in the working tree during the run", skipped=True
            )
        for _ in range(_CAS_RETRIES):
            tip = await git.ref_target(self.root, self.target_ref)
            if tip is None:
                raise LandingRefused(f"the target {self.target_ref} no longer exists")
            if tip != self._index_tip:
                await git.read_tree(self.root, tip, index_file=self.index_file)
                self._index_tip = tip
            current = await git.index_entry(self.root, patch.path, index_file=self.index_file)
            if current is None or current.blob != patch.old_blob:
                raise LandingRefused(
                    f"{patch.path} changed on {self.target_ref} since the run began"
                )
            entry = git.TreeEntry(patch.mode, patch.new_blob)
            await git.set_index_entry(self.root, patch.path, entry, index_file=self.index_file)
            tree = await git.write_tree(self.root, index_file=self.index_file)
            commit = await git.commit_tree(self.root, tree, tip, message)
            if self.checked_out:
                await self._wait_for_index()
            if await git.move_ref(self.root, self.target_ref, commit, tip, reason="stomper: land"):
                self._index_tip = commit
                if self.checked_out:
                    await self._update_checkout(patch, entry, commit, tip)
                return commit
            self._index_tip = None  # the user moved the branch: build again on the new tip
        raise LandingRefused(f"{self.target_ref} kept moving; gave up after {_CAS_RETRIES} tries")

    async def _wait_for_index(self) -> None:
        lock = self.user_index.with_name("index.lock")
        waited = 0.0
        while lock.exists():
            if waited >= _INDEX_LOCK_WAIT:
                raise LandingRefused(
                    f"another git process held {lock} for {_INDEX_LOCK_WAIT:g}s; "
                    "the unit was not landed"
                )
            await asyncio.sleep(_POLL)
            waited += _POLL

    async def _update_checkout(
        self, patch: Patch, entry: git.TreeEntry, commit: str, tip: str
    ) -> None:
        """Bring the landed file up to date in the user's index and working tree, or, when
        another process holds the index for too long, take the commit back off the branch."""
        waited = 0.0
        while True:
            try:
                await git.set_index_entry(self.root, patch.path, entry)
                await git.checkout_index(self.root, patch.path)
                return
            except proc.CalledProcessError as exc:
                if waited >= _INDEX_LOCK_WAIT:
                    if await git.move_ref(
                        self.root, self.target_ref, tip, commit, reason="stomper: undo"
                    ):
                        self._index_tip = tip
                        raise LandingRefused(
                            f"cannot update the checkout for {patch.path} (rolled back): {exc}"
                        ) from exc
                    raise
                await asyncio.sleep(_POLL)
                waited += _POLL


async def repair_checkout(root: Path, path: str, old_blob: str, landed: git.TreeEntry) -> bool:
    """Finish a landing cut short after the branch moved: the file is still the old one in
    the user's index and working tree. True when something was repaired."""
    current = await git.index_entry(root, path)
    if current is None or current.blob != old_blob or await git.worktree_differs(root, path):
        return False
    await git.set_index_entry(root, path, landed)
    await git.checkout_index(root, path)
    return True


def commit_message(*, path: str, tools: list[str], codes: list[str], run_id: str) -> str:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    body = ", ".join(f"{code} x{n}" if n > 1 else code for code, n in sorted(counts.items()))
    return (
        f"fix({'+'.join(tools)}): resolve {len(codes)} diagnostics in {path}\n\n"
        f"Resolved: {body}\n\n"
        f"Stomper-Run: {run_id}\nStomper-Unit: {path}\n"
    )
