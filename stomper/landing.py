"""Landing: one unit's patch (or patches) becomes one commit on the target, one landing at a
time.

Commits are built without a checkout and, in the common case, without a git process: the
trees along the file's path and the commit are written through libgit2
(:mod:`stomper.objects`), and the branch moves by compare-and-swap on its old value through a
long-lived ``git update-ref --stdin``, so a commit the user makes meanwhile is never
overwritten (the landing tries again on the new tip).

Patches that queue up while a landing is under way land together next: a chain of commits,
still one per file with its own message, moved onto the branch with one ref update. When
the target is the checked-out branch, the whole landing happens under git's own index lock:
the user's index and working tree follow the chain first (:mod:`stomper.checkout`), then the
branch moves, and only then does the lock go. Only the landed files change there,
everything else of the user's stays as it was, and a ``git commit`` of theirs at the same
moment waits or fails as it would beside another git command: one that finds the branch
moved finds the index moved too, so it never commits, nor writes back, the index of before.

A patch changes a file, creates one (it lands only where the target has nothing at its
path, and the checkout has nothing git does not track there), or deletes one (it lands only
where the file is still the one its unit started from, and unchanged in the checkout).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from stomper import checkout, events, git, objects
from stomper.events import LandingEvent
from stomper.unit import Patch, quote_path

_CAS_RETRIES = 20
# On the checked-out branch a landing waits this long at most for more patches to chain, while
# units that may hand one over are still being worked on, and up to this many: git brings the
# checkout along at a cost of the size of the index, however many files a chain changes.
_GATHER_WAIT = 0.05
_GATHER_UP_TO = 16
# From this many commits on, a chain is written by git's fast-import (one process, one pack)
# rather than by libgit2 (loose objects, a few files a commit).
_IMPORTED_FROM = 8
# How long a landing waits for another process's index.lock to go before giving up the unit.
_INDEX_LOCK_WAIT = 10.0
_REASON = "stomper: land"


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
    """The patch cannot land; the message says why (the unit keeps its patch unlanded).

    ``skipped`` when the user's own work is in the way (the unit is theirs to finish), and
    ``superseded`` too when that work is a commit on the target: the file there is no longer
    the one whose diagnostics the run counted.
    """

    def __init__(self, reason: str, *, skipped: bool = False, superseded: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.skipped = skipped or superseded
        self.superseded = superseded


class TipMoved(LandingRefused):
    """The target is no longer at the commit the change was to land on (``on``): what was
    verified there may not hold on the target as it is now."""


@dataclass(frozen=True)
class Landed:
    commit: str
    seconds: float
    """This unit's share of the time its landing took (a chain's time is shared among its
    units), not counting the wait for the landing lock."""


@dataclass(eq=False)
class _Request:
    """One call of :meth:`Lander.land`, waiting to land or landed."""

    patches: tuple[Patch, ...]
    """The files of its one commit (one, unless the unit changed several)."""
    message: str
    whole: tuple[_Request, ...] = ()
    """The requests that land with this one or not at all (this one among them)."""
    on: str | None = None
    """The only tip it may land on (None: any where its files are as it found them)."""
    landing: asyncio.Future[None] | None = None
    """The landing that took this request, once one has."""
    commit: str | None = None
    error: Exception | None = None
    seconds: float = 0.0

    def settled(self) -> Landed | Exception:
        """Where it landed, or why it did not."""
        if self.commit is not None:
            return Landed(self.commit, self.seconds)
        return self.error or LandingRefused(f"the landing of {self.named} was cut short")

    @property
    def paths(self) -> list[str]:
        return [patch.path for patch in self.patches]

    @property
    def named(self) -> str:
        """Its files, for a message."""
        return ", ".join(self.paths)

    def refuse(self, reason: str, *, skipped: bool = False, superseded: bool = False) -> None:
        if self.commit is None and self.error is None:
            self.error = LandingRefused(reason, skipped=skipped, superseded=superseded)


@dataclass(frozen=True)
class _Link:
    """One commit of a chain being landed."""

    request: _Request
    commit: str


class _Objects(Protocol):
    """Builds chains of commits, each changing one file of the one before."""

    async def chain(self, tip: str, requests: Sequence[_Request]) -> list[_Link]:
        """A commit per request whose file at ``tip`` is still what its unit started from,
        each on the one before; the others are left out."""
        ...


class Lander:
    """Lands patches on ``target_ref`` of the repository at ``root``, one landing at a time.

    It keeps a git process running between landings: :meth:`aclose` ends it.
    """

    def __init__(
        self,
        root: Path,
        target_ref: str,
        *,
        run_id: str,
        index_file: Path,
        checked_out: bool,
        landed: Mapping[str, str] = {},
        user_index: Path | None = None,
        once_per_path: bool = True,
    ) -> None:
        self.root = root
        self.target_ref = target_ref
        self.run_id = run_id
        self.index_file = index_file
        """A private index, for git's plumbing where libgit2 may not write the objects."""
        self.checked_out = checked_out
        self.user_index = user_index or root / ".git" / "index"
        """The checkout's own index, whose lock the landing takes."""
        self.landed = dict(landed)
        """Units of this run on the target (path to commit): found by their trailers before
        this lander began, or landed by it."""
        self.once_per_path = once_per_path
        """A change of a path in :attr:`landed` is taken as landed already (a unit is its
        file). Off where several units of a run change one file, one after the other (the
        tasks of ``run``): their job knows what landed."""
        self._lock = asyncio.Lock()
        self._queue: list[_Request] = []
        self._producing = 0
        self._arrived = asyncio.Event()
        self._objects: _Objects | None = None
        self._refs = git.RefTransactions(root, reason=_REASON)
        self._reader = git.RefReader(root)
        self._next_move: git.PendingMove | None = None
        """The move of the next landing on the checked-out branch, started ahead."""
        self._tip: str | None = None
        """Where this lander last left the target; None when it must be read again."""
        self._verbatim: frozenset[str] = frozenset()

    async def prepare(self, verbatim: Collection[str]) -> None:
        """Learn which paths git keeps as they are in the working tree
        (:func:`stomper.objects.verbatim_paths`): whether the user changed one of those is
        checked in-process before a landing, the others by ``git status``."""
        self._verbatim = frozenset(verbatim)

    async def land(self, patch: Patch, message: str) -> Landed:
        """Land ``patch`` as one commit with ``message``, or raise :class:`LandingRefused`.

        Patches handed over while another landing is under way wait, then land together.
        """
        (outcome,) = await self.land_many([(patch, message)])
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def land_many(
        self, patches: Sequence[tuple[Patch, str]], *, whole: bool = False
    ) -> list[Landed | Exception]:
        """Land each patch as one commit with its message, in one chain as far as nothing
        is in the way: for each, in their order, where it landed or why it did not (a
        :class:`LandingRefused`, or what else went wrong). ``whole``: all of them land, in
        one move of the branch, or none does."""
        return await self.land_commits(
            [((patch,), message) for patch, message in patches], whole=whole
        )

    async def land_commits(
        self,
        commits: Sequence[tuple[Sequence[Patch], str]],
        *,
        whole: bool = False,
        on: str | None = None,
    ) -> list[Landed | Exception]:
        """Land each set of patches as one commit with its message, as :meth:`land_many`
        lands one patch a commit; with ``on``, only on that tip of the target (else
        :class:`TipMoved`), as it is read under the index's lock: the commit a change was
        verified on."""
        entries: list[_Request | Landed] = []
        for patches, message in commits:
            done = None
            if self.once_per_path:
                done = next((self.landed[p.path] for p in patches if p.path in self.landed), None)
            if done is not None:
                # Landed before a crash cut the journal short: landing is exactly once.
                entries.append(Landed(done, 0.0))
            else:
                entries.append(_Request(tuple(patches), message, on=on))
        requests = [entry for entry in entries if isinstance(entry, _Request)]
        if whole and len(requests) > 1:
            for request in requests:
                request.whole = tuple(requests)
        if requests:
            await self._land_requested(requests)
        return [entry if isinstance(entry, Landed) else entry.settled() for entry in entries]

    async def _land_requested(self, requests: list[_Request]) -> None:
        self._queue += requests
        self._arrived.set()
        try:
            async with self._lock:
                # Each may have landed along with an earlier request meanwhile.
                if any(request.landing is None for request in requests):
                    if self.checked_out:
                        await self._gather()
                    await self._land_queue()
        except asyncio.CancelledError:
            landings = []
            for request in requests:
                if request.landing is None:
                    self._queue.remove(request)  # never begun, so it does not land
                elif request.landing not in landings:
                    landings.append(request.landing)
            for landing in landings:
                await _finish(landing)
            raise

    @contextlib.contextmanager
    def producing(self) -> Iterator[None]:
        """Around the work on a unit that may hand a patch to :meth:`land` when it ends: a
        landing waits a moment for such patches, to land them in one chain."""
        self._producing += 1
        try:
            yield
        finally:
            self._producing -= 1
            self._arrived.set()

    async def _gather(self) -> None:
        """Let the queue grow for a moment, while patches may still come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + _GATHER_WAIT
        while self._producing and len(self._queue) < _GATHER_UP_TO:
            self._arrived.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._arrived.wait()
            except TimeoutError:
                return

    async def aclose(self) -> None:
        """End the git processes this lander keeps; safe to call when none ever started."""
        await self._refs.aclose()
        await self._reader.aclose()
        move, self._next_move = self._next_move, None
        if move is not None:
            await move.commit()  # told nothing, it moves nothing

    async def _land_queue(self) -> None:
        """Land every request waiting, in one landing that finishes whatever happens."""
        batch, self._queue = self._queue, []
        landing = asyncio.ensure_future(self._land_batch(batch))
        for request in batch:
            request.landing = landing
        _Landings.active += 1
        try:
            await _finish(landing)
        finally:
            _Landings.active -= 1
            if _Landings.exit_code is not None and _Landings.active == 0:
                os._exit(_Landings.exit_code)

    async def _land_batch(self, batch: list[_Request]) -> None:
        """Land ``batch``, leaving each request its commit or its error (never raises)."""
        started = time.monotonic()
        try:
            await self._land_requests(batch)
        except LandingRefused as refused:
            for request in batch:
                request.refuse(
                    refused.reason, skipped=refused.skipped, superseded=refused.superseded
                )
        except Exception as exc:  # each unit fails with it; none may cancel its siblings
            for request in batch:
                if request.commit is None and request.error is None:
                    request.error = exc
        # Each unit carries its share of the batch, so the shares add up to the time spent.
        spent = time.monotonic() - started
        for request in batch:
            request.seconds = spent / len(batch)
        landed = [request for request in batch if request.commit is not None]
        tip = self._tip if landed else None
        commits = tuple(tuple(request.paths) for request in batch)
        events.record(LandingEvent(commits, len(landed), tip, spent))

    async def _land_requests(self, requests: list[_Request]) -> None:
        objects_ = await self._open_objects()
        for _ in range(_CAS_RETRIES):
            if not requests:
                return
            if not self.checked_out:
                requests = await self._land_once(objects_, requests, None)
                continue
            try:
                async with checkout.hold_index(
                    self.root, self.user_index, self.run_id, wait=_INDEX_LOCK_WAIT
                ) as held:
                    await self._refuse_changed_in_checkout(objects_, requests)
                    requests = _refuse_whole(requests)
                    requests = await self._land_once(objects_, requests, held)
            except checkout.IndexBusy as busy:
                raise LandingRefused(str(busy)) from None
        if requests:
            raise LandingRefused(
                f"{self.target_ref} kept moving; gave up after {_CAS_RETRIES} tries"
                + (f" ({self._refs.error})" if self._refs.error else "")
            )

    async def _land_once(
        self, objects_: _Objects, requests: list[_Request], held: checkout.HeldIndex | None
    ) -> list[_Request]:
        """One try at landing ``requests`` as a chain on the target's tip; those left to
        try again (when the tip moved under it, or a file of the user's was in the way)."""
        if not requests:
            return []
        if held is not None:
            # The checkout follows from the very tip the branch moves from, before it moves:
            # read now, under the index's lock (a commit of the user's may have moved it).
            self._tip = None
        tip = await self._read_tip()
        for request in requests:
            if request.on is not None and request.on != tip and request.error is None:
                request.error = TipMoved(
                    f"{self.target_ref} moved from {request.on[:12]}, where the change was "
                    f"verified, to {tip[:12]}"
                )
        requests = _refuse_whole(requests)
        if not requests:
            return []
        chain = await objects_.chain(tip, requests)
        chained = {id(link.request) for link in chain}
        split = [r for r in requests if r.whole and id(r) not in chained]
        if split and any(id(other) in chained for r in split for other in r.whole):
            # Part of what lands whole is no longer what it started from: none of it lands,
            # and the rest is chained again without it.
            _refuse_unchained(split, (), self.target_ref)
            return _refuse_whole(requests)
        if not chain:
            if await self._tip_is_current(tip):
                _refuse_unchained(requests, chain, self.target_ref)
                return []
            return requests
        if held is not None:
            # A file the chain creates where the user has one git does not track (found
            # now: one the branch tracks is superseded above).
            in_the_way = {
                patch.path
                for link in chain
                for patch in link.request.patches
                if patch.creates and _occupied(self.root, patch.path)
            }
            if in_the_way:
                return _refuse_whole(_refuse_in_the_way(requests, in_the_way))
        head = chain[-1].commit
        if held is None:
            moved = await self._refs.move(self.target_ref, head, tip)
        else:
            try:
                moved = await self._move_checked_out(held, tip, head)
            except checkout.CheckoutRefused as refused:
                return await self._take_back(held, chain, str(refused), requests)
        if not moved:
            self._tip = None  # the user moved the branch: build again on the new tip
            return requests
        self._tip = head
        _refuse_unchained(requests, chain, self.target_ref)
        self._landed(chain)
        return []

    async def _move_checked_out(self, held: checkout.HeldIndex, tip: str, head: str) -> bool:
        """Bring the index and the files from ``tip`` to ``head``, then move the branch from
        one to the other; False (the checkout back at ``tip``) when the branch moved first.

        In this order because ``git commit`` reads HEAD, then the index, and takes the
        index's lock only after both: one that finds the branch moved must find the index
        moved too, or it commits on the new tip and writes back the index of before,
        without the landed files. git is told the move before the checkout follows, and
        makes it at the end of its input, which comes when stomper dies too: a landing cut
        short leaves the branch moved and the checkout behind, for the next command to
        bring along (:mod:`stomper.recovery`), never the other way round.
        """
        move, self._next_move = self._next_move, None
        if move is None or not move.alive:
            move = await git.PendingMove.start(self.root, reason=_REASON)
        try:
            await move.tell(self.target_ref, head, tip)
            await held.follow(tip, head)
        except BaseException:
            await move.cancel()
            raise
        moved = await move.commit()
        self._next_move = await git.PendingMove.start(self.root, reason=_REASON)
        if moved or await self._reader.commit_of(self.target_ref) == head:
            return True
        # Another process moved or locked the branch while the checkout followed it.
        try:
            await held.follow(head, tip)
        except checkout.CheckoutRefused as refused:
            raise LandingRefused(
                f"{self.target_ref} moved while the checkout followed the landing ({move.error}),"
                f" and the checkout could not go back: {refused}"
            ) from None
        return False

    async def _take_back(
        self,
        held: checkout.HeldIndex,
        chain: Sequence[_Link],
        why: str,
        requests: list[_Request],
    ) -> list[_Request]:
        """The checkout could not follow the chain, and the branch stayed where it was: put
        back the files git wrote before it failed, and refuse the units whose file the user
        changed meanwhile (the others try again), or, when none did, every unit of the chain
        with git's reason."""
        paths = [path for link in chain for path in link.request.paths]
        written = []
        for patch in (patch for link in chain for patch in link.request.patches):
            # A file git created is left where it is, not tracked: it might be the user's.
            if not patch.creates and await git.hash_path(self.root, patch.path) == patch.new_blob:
                written.append(patch.path)
        if written:
            await held.restore(written)
        changed = await git.changed_paths(self.root, paths)
        if not changed:
            for link in chain:
                link.request.refuse(
                    f"cannot update the checkout for {', '.join(paths)} (rolled back): {why}"
                )
            return _refuse_whole(requests)
        _refuse_changed(requests, changed)
        return _refuse_whole(requests)

    def _landed(self, chain: Sequence[_Link]) -> None:
        for link in chain:
            link.request.commit = link.commit
            for path in link.request.paths:
                self.landed[path] = link.commit

    async def tip(self) -> str | None:
        """The commit the target is at now, read afresh (no process started for it); None
        when the target is gone."""
        return await self._reader.commit_of(self.target_ref)

    async def _read_tip(self) -> str:
        if self._tip is None:
            self._tip = await self._reader.commit_of(self.target_ref)
            if self._tip is None:
                raise LandingRefused(f"the target {self.target_ref} no longer exists")
        return self._tip

    async def _tip_is_current(self, tip: str) -> bool:
        """Whether the target is still at ``tip`` (read anew; the last move may be stale)."""
        self._tip = None
        return await self._read_tip() == tip

    async def _open_objects(self) -> _Objects:
        if self._objects is None:
            self._objects = await _open_objects(self.root, self.index_file)
        return self._objects

    async def _refuse_changed_in_checkout(
        self, objects_: _Objects, requests: list[_Request]
    ) -> list[_Request]:
        """Refuse the requests whose file the user changed in the checkout; the others.

        git's merge refuses them too, but only after the branch moved, which then moves
        back: this look first keeps the branch still in the common case.
        """
        patches = [patch for request in requests for patch in request.patches]
        paths = [patch.path for patch in patches if not patch.creates]
        if isinstance(objects_, _LibgitObjects) and all(p in self._verbatim for p in paths):
            # libgit2's word that a file is unchanged is taken; what it calls changed is
            # asked of git (libgit2 knows no skip-worktree, for one).
            flagged = await asyncio.to_thread(objects_.odb.changed_in_checkout, paths)
            paths = sorted(flagged) if flagged is not None else paths
        # A file to create that the user staged is a change of theirs too.
        paths += [patch.path for patch in patches if patch.creates]
        changed = await git.changed_paths(self.root, paths) if paths else set()
        return _refuse_changed(requests, changed)


def _refuse_changed(requests: Sequence[_Request], changed: Collection[str]) -> list[_Request]:
    """Refuse the requests whose file the user changed in the checkout; the others."""
    return _refuse_for(
        requests,
        changed,
        lambda mine: (
            f"{', '.join(mine)} {'was' if len(mine) == 1 else 'were'} changed in the "
            "working tree during the run"
        ),
    )


def _occupied(root: Path, path: str) -> bool:
    """Whether something is in the checkout at ``path``, or a file where a folder of it
    would be: a file the user has there, tracked or not, that git must not overwrite."""
    parts = path.split("/")
    for count in range(1, len(parts)):
        folder = root.joinpath(*parts[:count])
        if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
            return True
    return os.path.lexists(root.joinpath(*parts))


def _refuse_in_the_way(requests: Sequence[_Request], occupied: Collection[str]) -> list[_Request]:
    """Refuse the requests that would create a file where the checkout has one; the others."""
    return _refuse_for(
        requests,
        occupied,
        lambda mine: (
            f"{', '.join(mine)} would be created where the working tree has "
            "something of yours that git does not track; it is kept as it is"
        ),
    )


def _refuse_for(
    requests: Sequence[_Request], paths: Collection[str], why: Callable[[list[str]], str]
) -> list[_Request]:
    """Refuse, as the user's (skipped), the requests with a file among ``paths``, saying
    ``why`` of those files; the others."""
    for request in requests:
        mine = [path for path in request.paths if path in paths]
        if mine:
            request.refuse(why(mine), skipped=True)
    return [request for request in requests if request.error is None]


def _refuse_whole(requests: Sequence[_Request]) -> list[_Request]:
    """Refuse the requests that land whole with one refused; those left to land."""
    for request in requests:
        if request.error is None:
            continue
        for other in request.whole:
            other.refuse(
                f"not landed: it lands with {request.named} or not at all, and that did "
                f"not land ({request.error})",
                skipped=isinstance(request.error, LandingRefused) and request.error.skipped,
            )
    return [request for request in requests if request.error is None]


def _refuse_unchained(requests: Sequence[_Request], chain: Sequence[_Link], target: str) -> None:
    """Refuse the requests left out of the chain: their file on the target is no longer the
    one the unit started from, because a commit that is not this run's changed it (the user's,
    most often). That version is theirs and stays."""
    chained = {id(link.request) for link in chain}
    branch = target.removeprefix("refs/heads/")
    for request in requests:
        if id(request) not in chained:
            request.refuse(
                f"{_which(request)} changed by a commit on {branch} during the run "
                "(not one of this run's): that version is kept as it is",
                superseded=True,
            )


def _which(request: _Request) -> str:
    """The subject of "was changed" for ``request``'s files."""
    return f"{request.named} was" if len(request.patches) == 1 else f"one of {request.named} was"


def _as_started(patch: Patch, before: git.TreeEntry | None) -> bool:
    """Whether the target's file (``before``, None where there is none) is still the one
    ``patch``'s unit started from: the same blob, or no file where it creates one."""
    return before is None if patch.creates else before is not None and before.blob == patch.old_blob


def _entry_after(patch: Patch, before: git.TreeEntry | None) -> git.TreeEntry | None:
    """What the target holds at ``patch``'s path once it lands (None: nothing). A changed
    file keeps the target's mode, not the unit's: a mode the user changed meanwhile stays."""
    if patch.new_blob is None:
        return None
    return git.TreeEntry(before.mode if before is not None else patch.mode, patch.new_blob)


def _stored(patch: Patch, blob: str) -> None:
    """Check that the blob stored for ``patch`` is the one its unit verified and named."""
    if blob != patch.new_blob:
        raise LandingRefused(
            f"the bytes of {patch.path} were stored as {blob}, not as {patch.new_blob}"
        )


async def _finish(landing: asyncio.Future[None]) -> None:
    """Wait for ``landing`` to end whatever cancellations arrive, then pass one on.

    Once begun, a landing finishes: no half-landed state (a moved branch with a stale
    working tree) is ever left behind by a cancelled caller.
    """
    cancelled = False
    while not landing.done():
        try:
            await asyncio.shield(landing)
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError


async def _open_objects(root: Path, index_file: Path) -> _Objects:
    """Commits through libgit2 where it writes exactly what git would; else through git's
    own plumbing (SHA-256 repositories, shared permissions, a legacy commit encoding)."""
    found = await objects.open_objects(root)
    people = await objects.idents(root) if found is not None and found.writable else None
    if found is None or people is None:
        return _PlumbingObjects(root, index_file)
    author, committer = people
    return _LibgitObjects(root, found, author, committer)


@dataclass
class _LibgitObjects:
    """Commits written through libgit2, a whole chain in one hop off the event loop; a long
    chain through one ``git fast-import``."""

    root: Path
    odb: objects.Objects
    author: objects.Ident
    committer: objects.Ident

    async def chain(self, tip: str, requests: Sequence[_Request]) -> list[_Link]:
        if len(requests) < _IMPORTED_FROM:
            return await asyncio.to_thread(self._chain, tip, requests)
        return await self._imported(tip, requests)

    async def _imported(self, tip: str, requests: Sequence[_Request]) -> list[_Link]:
        """The chain as git's fast-import writes it: one process and one pack, where libgit2
        writes a loose object for every tree and commit (a file each: on a slow disk, 0.3 ms
        each, four or five a commit)."""
        taken = await asyncio.to_thread(self._still_there, tip, requests)
        if not taken:
            return []
        commits = [
            git.NewCommit(
                tuple(
                    git.NewFile(
                        patch.path,
                        entry.mode if entry is not None else patch.mode,
                        patch.new_blob,
                        patch.content,
                    )
                    for patch, entry in zip(request.patches, entries, strict=True)
                ),
                request.message,
            )
            for request, entries in taken
        ]
        made = await git.import_commits(
            self.root,
            tip,
            commits,
            author=self.author.line(),
            committer=self.committer.line(),
            scratch_ref=f"refs/stomper/import/{os.getpid()}-{id(self):x}",
        )
        return [
            _Link(request, commit) for (request, _entries), commit in zip(taken, made, strict=True)
        ]

    def _still_there(
        self, tip: str, requests: Sequence[_Request]
    ) -> list[tuple[_Request, list[git.TreeEntry | None]]]:
        """The requests whose files at ``tip`` are still what their unit started from, with
        the entry each file gets (None: deleted)."""
        taken = []
        for request in requests:
            entries = []
            for patch in request.patches:
                before = self.odb.entry(tip, patch.path)
                if patch.creates and not self.odb.free(tip, patch.path):
                    break
                if not _as_started(patch, before):
                    break
                entries.append(_entry_after(patch, before))
            else:
                taken.append((request, entries))
        return taken

    def _chain(self, tip: str, requests: Sequence[_Request]) -> list[_Link]:
        chain: list[_Link] = []
        head = tip
        # Each request changes a file of its own: the chain so far holds every other one as
        # the tip does.
        for request, entries in self._still_there(tip, requests):
            for patch in request.patches:
                if patch.content is not None:
                    _stored(patch, self.odb.write_blob(patch.content))
            head = self.odb.commit(
                head,
                {patch.path: entry for patch, entry in zip(request.patches, entries, strict=True)},
                request.message,
                author=self.author,
                committer=self.committer,
            )
            chain.append(_Link(request, head))
        return chain


@dataclass
class _PlumbingObjects:
    """Commits built by git's plumbing in a private index: a few processes per commit."""

    root: Path
    index_file: Path
    index_tip: str | None = None
    """The commit whose tree the private index holds."""

    async def chain(self, tip: str, requests: Sequence[_Request]) -> list[_Link]:
        chain: list[_Link] = []
        head = tip
        for request in requests:
            await self._load(head)
            befores = [
                await git.index_entry(self.root, patch.path, index_file=self.index_file)
                for patch in request.patches
            ]
            if not await self._still_there(head, request.patches, befores):
                continue
            for patch, before in zip(request.patches, befores, strict=True):
                if patch.content is not None:
                    _stored(patch, await git.write_blob(self.root, patch.path, patch.content))
                entry = _entry_after(patch, before)
                if entry is None:
                    await git.remove_index_entry(self.root, patch.path, index_file=self.index_file)
                else:
                    await git.set_index_entry(
                        self.root, patch.path, entry, index_file=self.index_file
                    )
            self.index_tip = None  # the index no longer holds ``head``'s tree
            tree = await git.write_tree(self.root, index_file=self.index_file)
            head = self.index_tip = await git.commit_tree(self.root, tree, head, request.message)
            chain.append(_Link(request, head))
        return chain

    async def _still_there(
        self, head: str, patches: Sequence[Patch], befores: Sequence[git.TreeEntry | None]
    ) -> bool:
        """Whether each file at ``head`` is still what its unit started from."""
        for patch, before in zip(patches, befores, strict=True):
            if not _as_started(patch, before):
                return False
            if patch.creates and not await git.path_free(self.root, head, patch.path):
                return False
        return True

    async def _load(self, commit: str) -> None:
        if commit != self.index_tip:
            await git.read_tree(self.root, commit, index_file=self.index_file)
            self.index_tip = commit


async def repair_checkout(
    root: Path, path: str, old_blob: str | None, landed: git.TreeEntry | None
) -> bool:
    """Finish a landing cut short after the branch moved: the file is still the old one in
    the user's working tree or their index, and the landed one or the old one in the other.
    ``old_blob`` None: the landing created the file; ``landed`` None: it deleted it. True
    when something was repaired."""
    current = await git.index_entry(root, path)
    there = os.path.lexists(root / path)
    on_disk = await git.hash_path(root, path) if there else None
    if there and on_disk is None:
        return False  # a folder, or something else git cannot read as a file: the user's
    old = current.blob if current is not None else None
    if old != old_blob:
        if current is not None and current == landed and on_disk == old_blob:
            # Cut short between the index and the working tree: the file is the old one.
            await git.checkout_index(root, path)
            return True
        if current is None and landed is None and on_disk == old_blob:
            return _remove_file(root, path)  # as it was committed before it was deleted
        return False
    # The index is the old one: the working tree is the old one too, or already the landed.
    if on_disk not in (old_blob, landed.blob if landed is not None else None):
        return False
    if old_blob is not None and on_disk == old_blob and await git.worktree_differs(root, path):
        return False  # the same bytes, but the user changed the file's mode: theirs
    if landed is None:
        await git.remove_index_entry(root, path)
        if on_disk is not None:
            _remove_file(root, path)
        return True
    await git.set_index_entry(root, path, landed)
    if on_disk != landed.blob:
        await git.checkout_index(root, path)
    return True


def _remove_file(root: Path, path: str) -> bool:
    """Remove the checkout's file at ``path``, unless a folder on its way is a link (git
    never follows one; the file it leads to is not the checkout's). Whether it was removed."""
    parts = path.split("/")
    if any(root.joinpath(*parts[:count]).is_symlink() for count in range(1, len(parts))):
        return False
    (root / path).unlink()
    return True


# git's own advice for a subject line: what ``git log --oneline`` and most tools show whole.
_SUBJECT_MAX = 72


def commit_message(*, path: str, tools: list[str], codes: list[str], run_id: str) -> str:
    """The landed commit's message: a subject of at most 72 characters naming the file (its
    path, or as much of its end as fits), the codes resolved, and the trailers that record
    the run and the unit with the full path. When the subject cannot hold the whole path, the
    body begins with it."""
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    body = ", ".join(f"{code} x{n}" if n > 1 else code for code, n in sorted(counts.items()))
    name = quote_path(path)
    noun = "diagnostic" if len(codes) == 1 else "diagnostics"
    action = f"fix({'+'.join(tools)}): resolve {len(codes)} {noun}"
    place = subject_place(path, _SUBJECT_MAX - len(action) - len(" in "))
    subject = f"{action} in {place}" if place else action
    where = "" if place == name else f"File: {name}\n"
    return f"{subject}\n\n{where}Resolved: {body}\n\nStomper-Run: {run_id}\nStomper-Unit: {name}\n"


def subject_place(path: str, room: int) -> str:
    """``path`` as the subject names it: whole if it fits in ``room`` characters, else its
    last components after ``.../`` (at least the file's own name), else nothing: a subject
    that names no file reads better than one that names part of a name."""
    if len(quote_path(path)) <= room:
        return quote_path(path)
    parts = path.split("/")
    tail = parts[-1]
    for part in reversed(parts[:-1]):
        if len(".../" + quote_path(f"{part}/{tail}")) > room:
            break
        tail = f"{part}/{tail}"
    place = ".../" + quote_path(tail)
    return place if len(place) <= room else ""
