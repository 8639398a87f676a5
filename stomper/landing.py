"""Landing: one unit's patch becomes one commit on the target, one landing at a time.

Commits are built without a checkout and, in the common case, without a git process each:
the trees on the file's path and the commit are written in-process (:mod:`stomper.objects`)
from trees read once through a long-lived ``git cat-file --batch``, and the branch moves by
compare-and-swap on its old value through a long-lived ``git update-ref --stdin``, so a commit
the user makes meanwhile is never overwritten (the landing retries on the new tip).

Patches that queue up while a landing is under way land together next: a chain of commits,
still one per file with its own message, moved onto the branch with one ref update. When
the target is the checked-out branch, only the landed files are brought up to date in the
user's index and working tree, all of them at once; everything else of theirs stays as it was.
That too is done in-process (:mod:`stomper.checkout`) where git stores the files' bytes as
they are, and by ``git status`` and ``git restore`` elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stomper import checkout, git, objects, proc, store
from stomper.unit import Patch, quote_path

_CAS_RETRIES = 20
# How long a landing waits for another process's index.lock to go before giving up the unit.
_INDEX_LOCK_WAIT = 10.0
_POLL = 0.05
# Settings under which git's index entries are not a file's plain bytes and stat data, or
# under which git would flush the index to disk: the checkout is then left to git.
_CHECKOUT_SETTINGS = r"^core\.(filemode|ignorecase|fsync)$"


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
    """This unit's share of the time its landing took (a chain's time is shared among its
    units), not counting the wait for the landing lock."""


@dataclass(eq=False)
class _Request:
    """One call of :meth:`Lander.land`, waiting to land or landed."""

    patch: Patch
    message: str
    landing: asyncio.Future[None] | None = None
    """The landing that took this request, once one has."""
    commit: str | None = None
    error: BaseException | None = None
    seconds: float = 0.0

    def outcome(self) -> Landed:
        if self.commit is not None:
            return Landed(self.commit, self.seconds)
        raise self.error or LandingRefused(f"the landing of {self.patch.path} was cut short")


@dataclass(frozen=True)
class _Link:
    """One commit of a chain being landed."""

    request: _Request
    commit: str
    mode: str
    """The file's mode on the target."""


class _Objects(Protocol):
    """Builds commits that change one file of their parent."""

    async def entry(self, commit: str, path: str) -> git.TreeEntry | None: ...

    async def commit(self, parent: str, path: str, entry: git.TreeEntry, message: str) -> str: ...

    async def flush(self) -> None:
        """Make what was built visible to other git processes."""

    async def aclose(self) -> None: ...


class Lander:
    """Lands patches on ``target_ref`` of the repository at ``root``, one landing at a time.

    It keeps git processes running between landings: :meth:`aclose` ends them.
    """

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
        self._queue: list[_Request] = []
        self._objects: _Objects | None = None
        self._refs = git.RefTransactions(root, reason="stomper: land")
        self._tip: str | None = None
        """Where this lander last left the target; None when it must be read again."""
        self._in_process_checkout: frozenset[str] = frozenset()
        """Paths whose landing the user's checkout takes in-process (see :meth:`prepare`)."""
        self._checkout = checkout.Checkout(root, self.user_index)

    async def prepare(self, verbatim: Collection[str]) -> None:
        """Learn which paths can be brought up to date in the user's checkout without git
        processes: of ``verbatim``, the run's paths whose bytes git stores as they are
        (:func:`stomper.store.verbatim_paths`), all unless a setting says otherwise. Until
        then, and for the others, git does it."""
        if not self.checked_out:
            return
        settings = await git.config_matching(self.root, _CHECKOUT_SETTINGS)
        fsync = {word.strip() for word in settings.get("core.fsync", "").split(",")}
        if (
            settings.get("core.filemode", "true").lower() in store.FALSE
            or settings.get("core.ignorecase", "false").lower() in store.TRUE
            or fsync & {"index", "added", "all"}
        ):
            return
        self._in_process_checkout = frozenset(verbatim)

    async def land(self, patch: Patch, message: str) -> Landed:
        """Land ``patch`` as one commit with ``message``, or raise :class:`LandingRefused`.

        Patches handed over while another landing is under way wait, then land together.
        """
        if patch.path in self.landed:
            # Landed before a crash cut the journal short: landing is exactly once.
            return Landed(self.landed[patch.path], 0.0)
        request = _Request(patch, message)
        self._queue.append(request)
        try:
            async with self._lock:
                if request.landing is None:  # not landed along with an earlier request
                    await self._land_queue()
        except asyncio.CancelledError:
            if request.landing is None:
                self._queue.remove(request)  # never begun, so it does not land
            else:
                await _finish(request.landing)
            raise
        return request.outcome()

    async def aclose(self) -> None:
        """End the git processes this lander keeps; safe to call when none ever started."""
        objects_, self._objects = self._objects, None
        if objects_ is not None:
            await objects_.aclose()
        await self._refs.aclose()

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
                if request.commit is None and request.error is None:
                    request.error = LandingRefused(refused.reason, skipped=refused.skipped)
        except Exception as exc:  # each unit fails with it; none may cancel its siblings
            for request in batch:
                if request.commit is None and request.error is None:
                    request.error = exc
        # Each unit carries its share of the batch, so the shares add up to the time spent.
        share = (time.monotonic() - started) / len(batch)
        for request in batch:
            request.seconds = share

    async def _land_requests(self, requests: list[_Request]) -> None:
        if self.checked_out:
            requests = await self._refuse_changed_in_checkout(requests)
        objects_ = await self._open_objects()
        for _ in range(_CAS_RETRIES):
            if not requests:
                return
            tip = await self._read_tip()
            chain = await self._build_chain(objects_, tip, requests)
            if not chain:
                if await self._tip_is_current(tip):
                    _refuse_unchained(requests, chain, self.target_ref)
                    return
                continue
            await objects_.flush()
            if self.checked_out:
                await self._wait_for_index()
            if not await self._refs.move(self.target_ref, chain[-1].commit, tip):
                self._tip = None  # the user moved the branch: build again on the new tip
                continue
            self._tip = chain[-1].commit
            _refuse_unchained(requests, chain, self.target_ref)
            if self.checked_out:
                await self._update_checkout(chain, tip)
            for link in chain:
                link.request.commit = link.commit
                self.landed[link.request.patch.path] = link.commit
            return
        raise LandingRefused(
            f"{self.target_ref} kept moving; gave up after {_CAS_RETRIES} tries"
            + (f" ({self._refs.error})" if self._refs.error else "")
        )

    async def _build_chain(
        self, objects_: _Objects, tip: str, requests: Sequence[_Request]
    ) -> list[_Link]:
        """A commit per request whose file on the target is still what its unit started
        from, each on the one before; the others are left out."""
        chain: list[_Link] = []
        head = tip
        for request in requests:
            patch = request.patch
            before = await objects_.entry(head, patch.path)
            if before is None or before.blob != patch.old_blob:
                continue
            # The target's mode, not the unit's: a mode the user changed meanwhile stays.
            entry = git.TreeEntry(before.mode, patch.new_blob)
            head = await objects_.commit(head, patch.path, entry, request.message)
            chain.append(_Link(request, head, before.mode))
        return chain

    async def _read_tip(self) -> str:
        if self._tip is None:
            self._tip = await git.ref_target(self.root, self.target_ref)
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

    async def _refuse_changed_in_checkout(self, requests: list[_Request]) -> list[_Request]:
        """Refuse the requests whose file the user changed in the checkout; the others."""
        changed = await self._changed_in_checkout([r.patch.path for r in requests])
        for request in requests:
            if request.patch.path in changed:
                request.error = LandingRefused(
                    f"{request.patch.path} was changed in the working tree during the run",
                    skipped=True,
                )
        return [request for request in requests if request.error is None]

    async def _changed_in_checkout(self, paths: Sequence[str]) -> set[str]:
        """Those of ``paths`` whose index entry or file differs from HEAD's."""
        objects_ = await self._in_process_objects(paths)
        if objects_ is not None:
            tip = await self._read_tip()
            head = {}
            for path in paths:
                entry = await objects_.entry(tip, path)
                if entry is not None:  # else not on the target: refused as changed there
                    head[path] = (int(entry.mode, 8), entry.blob)
            with contextlib.suppress(checkout.Unsupported):
                return await asyncio.to_thread(self._checkout.changed_paths, head)
        return await git.changed_paths(self.root, paths)

    async def _update_checkout(self, chain: Sequence[_Link], tip: str) -> None:
        """Bring the landed files up to date in the user's index and working tree, or, when
        another process holds the index for too long, take the chain back off the branch."""
        head = chain[-1].commit
        paths = [link.request.patch.path for link in chain]
        files = await self._landed_files(chain)
        waited = 0.0
        while True:
            try:
                await self._write_checkout(files, head, paths)
                return
            except (checkout.Locked, proc.CalledProcessError) as exc:
                if waited >= _INDEX_LOCK_WAIT:
                    await self._roll_back(head, tip, paths, exc)
                    raise
                await asyncio.sleep(_POLL)
                waited += _POLL

    async def _write_checkout(
        self, files: list[checkout.Landed] | None, head: str, paths: list[str]
    ) -> None:
        if files is not None:
            with contextlib.suppress(checkout.Unsupported):  # raised before anything is written
                # A file the user changed since it was checked stays theirs, and its entry.
                await asyncio.to_thread(self._checkout.update, files)
                return
        await git.restore_paths(self.root, head, paths)

    async def _landed_files(self, chain: Sequence[_Link]) -> list[checkout.Landed] | None:
        """The chain's files with their new bytes, for an in-process update of the checkout;
        None when git must do it."""
        objects_ = await self._in_process_objects([link.request.patch.path for link in chain])
        if objects_ is None:
            return None
        files = []
        for link in chain:
            patch = link.request.patch
            found = await objects_.reader.read(patch.new_blob)
            if found is None or found[0] != b"blob":
                return None
            mode = int(link.mode, 8)
            new = found[1]
            files.append(checkout.Landed(patch.path, mode, patch.old_blob, patch.new_blob, new))
        return files

    async def _in_process_objects(self, paths: Collection[str]) -> _InProcessObjects | None:
        """The in-process object store, when the checkout of ``paths`` can be updated
        in-process; None when git's own commands must do it."""
        if not all(path in self._in_process_checkout for path in paths):
            return None
        objects_ = await self._open_objects()
        return objects_ if isinstance(objects_, _InProcessObjects) else None

    async def _roll_back(self, head: str, tip: str, paths: list[str], cause: Exception) -> None:
        """Take the chain back off the branch, so the branch does not run ahead of the
        checkout; returns only when the user moved the branch on meanwhile."""
        if await git.move_ref(self.root, self.target_ref, tip, head, reason="stomper: undo"):
            self._tip = tip
            raise LandingRefused(
                f"cannot update the checkout for {', '.join(paths)} (rolled back): {cause}"
            )


def _refuse_unchained(requests: Sequence[_Request], chain: Sequence[_Link], target: str) -> None:
    chained = {id(link.request) for link in chain}
    for request in requests:
        if id(request) not in chained:
            request.error = LandingRefused(
                f"{request.patch.path} changed on {target} since the run began"
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
    """The in-process object writer where it writes exactly what git would; else git's
    own plumbing (SHA-256 repositories, shared permissions, a legacy commit encoding)."""
    loose = await store.in_process_store(root)
    if loose is None:
        return _PlumbingObjects(root, index_file)
    author = await git.ident(root, "GIT_AUTHOR_IDENT")
    committer = await git.ident(root, "GIT_COMMITTER_IDENT")
    reader = git.ObjectReader(root)
    trees = objects.Trees(
        reader.read,
        # With GIT_*_DATE set, git commits every commit at that date; else at the moment.
        author=objects.Ident.parse(author, fixed_date="GIT_AUTHOR_DATE" in os.environ),
        committer=objects.Ident.parse(committer, fixed_date="GIT_COMMITTER_DATE" in os.environ),
    )
    return _InProcessObjects(trees, reader, loose.objects_dir, fsync=loose.fsync)


@dataclass
class _InProcessObjects:
    """Objects written in-process (SHA-1 repositories)."""

    trees: objects.Trees
    reader: git.ObjectReader
    objects_dir: Path
    fsync: bool = field(default=False, kw_only=True)

    async def entry(self, commit: str, path: str) -> git.TreeEntry | None:
        found = await self.trees.entry(commit, path)
        return git.TreeEntry(*found) if found is not None else None

    async def commit(self, parent: str, path: str, entry: git.TreeEntry, message: str) -> str:
        return await self.trees.commit(parent, path, entry.mode, entry.blob, message)

    async def flush(self) -> None:
        pending, self.trees.pending = self.trees.pending, {}
        # File writes off the event loop: one hop to a thread for a whole chain.
        if len(pending) >= objects.PACK_AT:
            await asyncio.to_thread(objects.write_pack, self.objects_dir, pending)
        elif pending:
            await asyncio.to_thread(
                objects.write_loose, self.objects_dir, pending, fsync=self.fsync
            )

    async def aclose(self) -> None:
        await self.reader.aclose()


@dataclass
class _PlumbingObjects:
    """Objects built by git's plumbing in a private index: a few processes per commit."""

    root: Path
    index_file: Path
    index_tip: str | None = None
    """The commit whose tree the private index holds."""

    async def entry(self, commit: str, path: str) -> git.TreeEntry | None:
        await self._load(commit)
        return await git.index_entry(self.root, path, index_file=self.index_file)

    async def commit(self, parent: str, path: str, entry: git.TreeEntry, message: str) -> str:
        await self._load(parent)
        await git.set_index_entry(self.root, path, entry, index_file=self.index_file)
        tree = await git.write_tree(self.root, index_file=self.index_file)
        self.index_tip = await git.commit_tree(self.root, tree, parent, message)
        return self.index_tip

    async def flush(self) -> None:
        pass  # git wrote each object as it built it

    async def aclose(self) -> None:
        pass

    async def _load(self, commit: str) -> None:
        if commit != self.index_tip:
            await git.read_tree(self.root, commit, index_file=self.index_file)
            self.index_tip = commit


async def repair_checkout(root: Path, path: str, old_blob: str, landed: git.TreeEntry) -> bool:
    """Finish a landing cut short after the branch moved: the file is still the old one in
    the user's working tree or their index, and the landed one or the old one in the other.
    True when something was repaired."""
    current = await git.index_entry(root, path)
    if current is None:
        return False
    if current.blob == old_blob and not await git.worktree_differs(root, path):
        await git.set_index_entry(root, path, landed)
        await git.checkout_index(root, path)
        return True
    # Cut short between the working tree and the index (the in-process order, git's own).
    if current.blob == old_blob and await git.hash_file(root, path) == landed.blob:
        await git.set_index_entry(root, path, landed)
        return True
    # Cut short between the index and the working tree: the file there is still the old one.
    if current == landed and await git.hash_file(root, path) == old_blob:
        await git.checkout_index(root, path)
        return True
    return False


def commit_message(*, path: str, tools: list[str], codes: list[str], run_id: str) -> str:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    body = ", ".join(f"{code} x{n}" if n > 1 else code for code, n in sorted(counts.items()))
    name = quote_path(path)
    return (
        f"fix({'+'.join(tools)}): resolve {len(codes)} diagnostics in {name}\n\n"
        f"Resolved: {body}\n\n"
        f"Stomper-Run: {run_id}\nStomper-Unit: {name}\n"
    )
