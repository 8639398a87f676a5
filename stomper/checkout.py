"""The user's checkout, brought up to date in-process for the files a landing changed.

When a unit lands on the checked-out branch, its file must change in the user's index and
working tree, and nothing else of theirs may. git's own ``status`` and ``restore`` do it in
two processes that each read the whole index; here the index file is read and rewritten
directly (format: git's ``Documentation/gitformat-index.txt``), as git would leave it:

- under git's lock protocol: ``index.lock`` created exclusively, written, renamed over;
- only entries of the landed paths change (object id and stat data); every other byte of
  every other entry stays, except that entries which may be *racily clean* against the old
  index (modified in the second it was written) lose their size, so git compares their
  content again, as git itself does when it writes an index;
- the cache of tree ids (``TREE``) is invalidated along the landed paths; the resolve-undo
  record is kept; the other optional extensions are dropped, which git allows (they are
  caches it rebuilds).

Only index versions 2 and 3 without a split or sparse index are handled, and entries at
stage 0 without the assume-unchanged, skip-worktree or intent-to-add flags; anything else
raises :class:`Unsupported`, and git's own commands do the work. Whether git converts a
file's content (filters, end-of-line, encoding) is the caller's to know: such files are
not for this module.

The index last read or written is kept (:class:`Checkout`), so that a run of landings walks
its entries once, not twice a landing.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import objects

_HEADER = struct.Struct(">4sII")
_FIXED = 62
"""Bytes of an entry before its name: ten stat fields, the object id, the flags."""
_ASSUME_VALID = 0x8000
_EXTENDED = 0x4000
_STAGE = 0x3000
_NAME_LENGTH = 0xFFF
_SKIP_OR_INTENT = 0x6000
_EXECUTABLE = 0o100755
_GITLINK = 0o160000
_CHECKSUM = 20
_KEPT_EXTENSIONS = (b"TREE", b"REUC")


class Unsupported(Exception):
    """The index or a file uses something this module does not write; git's commands must."""


class Locked(Exception):
    """Another process holds the index lock."""


@dataclass(frozen=True)
class Landed:
    """A file a landing changed: it goes from ``old_blob`` to ``content`` (``new_blob``)."""

    path: str
    mode: int
    old_blob: str
    new_blob: str
    content: bytes


class Checkout:
    """The index and working tree of the checkout at ``root``, whose index file is
    ``index_file``.

    The index last read or written here is kept: while the file still holds those bytes
    (compared in full at each read), its entries are not walked again, which on a large
    index costs more than the rest of a landing. Not for concurrent use.
    """

    def __init__(self, root: Path, index_file: Path) -> None:
        self.root = root
        self.index_file = index_file
        self._known: Index | None = None
        self.settled = Settled()
        """The files read lately and what they held."""
        self.walks = 0
        """How many times the entries were walked."""

    def changed_paths(self, head: Mapping[str, tuple[int, str]]) -> set[str]:
        """Those of ``head``'s paths (to their mode and blob at HEAD) whose index entry or
        working-tree file differs from HEAD: what ``git status`` would list of them."""
        index = self._read()
        return {
            path
            for path, (mode, blob) in head.items()
            if index.entry(path) != (mode, blob) or not self._holds(path, mode, blob)
        }

    def update(self, files: Sequence[Landed]) -> list[str]:
        """Under git's index lock, write each landed file into the working tree and its
        entry into the index, where both still hold its old blob; the paths left alone
        (changed by the user since they were checked), whose entry and file stay theirs.

        Raises :class:`Locked` when another process holds the lock, :class:`Unsupported`
        (with nothing written) when the index is one git must write.
        """
        lock = self.index_file.with_name(self.index_file.name + ".lock")
        try:
            descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError as exc:
            raise Locked(f"{lock} exists: another git process is running") from exc
        with open(descriptor, "wb") as out:
            try:
                index = self._read()
                # Every entry is looked at before any file is written: Unsupported leaves
                # nothing half done.
                ready = [
                    file
                    for file in files
                    if index.entry(file.path) == (file.mode, file.old_blob)
                    and self._holds(file.path, file.mode, file.old_blob)
                ]
                changed = {
                    file.path: (
                        file.new_blob,
                        _write(self.root / file.path, file.content, file.mode),
                    )
                    for file in ready
                }
                written = index.rewritten(self.root, changed, self.settled)
                out.write(written.data)
            except BaseException:
                lock.unlink(missing_ok=True)
                raise
        os.replace(lock, self.index_file)
        self._known = written
        return [file.path for file in files if file.path not in changed]

    def _holds(self, path: str, mode: int, blob: str) -> bool:
        return self.settled.holds(os.path.join(self.root, path), mode, blob, None)

    def _read(self) -> Index:
        try:
            with self.index_file.open("rb") as handle:
                mtime = os.fstat(handle.fileno()).st_mtime_ns // 1_000_000_000
                data = handle.read()
        except FileNotFoundError as exc:
            raise Unsupported("there is no index") from exc
        known = self._known
        if known is not None and known.data == data and mtime >= known.since:
            return known.at(mtime)
        self.walks += 1
        self._known = Index.walk(data, mtime)
        return self._known


class Index:
    """An index file's bytes, where each entry starts, and which entries may be racy."""

    def __init__(
        self,
        data: bytes,
        offsets: dict[bytes, int],
        recent: dict[int, int],
        *,
        since: int,
        end: int,
    ) -> None:
        self.data = data
        self.offsets = offsets
        """Every entry's offset, by its path."""
        self.recent = recent
        """The mtime (in seconds) of each entry modified in the second ``since`` or later:
        the only entries that can be racy against an index written then or later."""
        self.since = since
        self.end = end
        """Where the entries end and the extensions begin."""
        self.extensions = list(_extensions(data, end))

    @classmethod
    def walk(cls, data: bytes, mtime: int) -> Index:
        """The index in ``data``, written in the second ``mtime``: every entry visited."""
        signature, version, count = _HEADER.unpack_from(data)
        if signature != b"DIRC" or version not in (2, 3):
            raise Unsupported(f"index version {version}")
        offsets: dict[bytes, int] = {}
        recent: dict[int, int] = {}
        offset = _HEADER.size
        for _ in range(count):
            second = int.from_bytes(data[offset + 8 : offset + 12])
            if second >= mtime:
                recent[offset] = second
            size, name = _entry_at(data, offset)
            offsets[name] = offset
            offset += size
        return cls(data, offsets, recent, since=mtime, end=offset)

    def at(self, mtime: int) -> Index:
        """This index found again in a file written in the second ``mtime``."""
        recent = {offset: second for offset, second in self.recent.items() if second >= mtime}
        return Index(self.data, self.offsets, recent, since=mtime, end=self.end)

    def entry(self, path: str) -> tuple[int, str] | None:
        """The mode and blob of ``path`` at stage 0; None when it has no entry."""
        offset = self.offsets.get(path.encode())
        if offset is None:
            return None
        data = self.data
        flags = int.from_bytes(data[offset + 60 : offset + 62])
        special = flags & (_ASSUME_VALID | _STAGE)
        if flags & _EXTENDED:
            special |= int.from_bytes(data[offset + 62 : offset + 64]) & _SKIP_OR_INTENT
        if special:
            raise Unsupported(f"{path} is unmerged or flagged in the index")
        mode = int.from_bytes(data[offset + 24 : offset + 28])
        return mode, data[offset + 40 : offset + 60].hex()

    def rewritten(
        self,
        root: Path,
        changed: Mapping[str, tuple[str, os.stat_result]],
        settled: Settled,
    ) -> Index:
        """The index with the ``changed`` paths at their new blob and stat data (the files
        as they were just written). ``settled`` spares the racily clean entries it can vouch
        for the reading of their files."""
        body = bytearray(self.data[: self.end])
        landed = {self.offsets[path.encode()] for path in changed}
        # A moment before any of the checks below: when the last file was written.
        clock = max(
            (info for _, info in changed.values()), key=lambda info: info.st_ctime_ns, default=None
        )
        for offset, second in self.recent.items():
            if second < self.since or offset in landed:
                continue
            # Racily clean (Documentation/technical/racy-git.txt): as git does when it
            # writes an index, an entry whose content is not what its stat data claims
            # loses its size, so that git compares it again.
            name = _entry_at(body, offset)[1]
            mode = int.from_bytes(body[offset + 24 : offset + 28])
            if mode == _GITLINK:
                continue  # a submodule is compared by its commit, never by stat data
            held = body[offset + 40 : offset + 60].hex()
            if not settled.holds(os.path.join(root, os.fsdecode(name)), mode, held, clock):
                body[offset + 36 : offset + 40] = bytes(4)
        recent = dict(self.recent)
        for path, (blob, info) in changed.items():
            offset = self.offsets[path.encode()]
            body[offset : offset + 24] = _stat_words(
                info.st_ctime_ns // 1_000_000_000,
                info.st_ctime_ns % 1_000_000_000,
                info.st_mtime_ns // 1_000_000_000,
                info.st_mtime_ns % 1_000_000_000,
                info.st_dev,
                info.st_ino,
            )
            body[offset + 28 : offset + 40] = _stat_words(info.st_uid, info.st_gid, info.st_size)
            body[offset + 40 : offset + 60] = bytes.fromhex(blob)
            recent[offset] = info.st_mtime_ns // 1_000_000_000
        folders = [tuple(path.encode().split(b"/")[:-1]) for path in changed]
        for signature, payload in self.extensions:
            if signature == b"TREE":
                payload = _invalidated(payload, folders)
            elif signature not in _KEPT_EXTENSIONS:
                continue  # a cache git rebuilds (untracked files, fsmonitor, offsets)
            body += signature + len(payload).to_bytes(4) + payload
        if self.data[-_CHECKSUM:] == bytes(_CHECKSUM):  # index.skipHash: git writes no hash
            body += bytes(_CHECKSUM)
        else:
            body += hashlib.sha1(body, usedforsecurity=False).digest()
        # The entries kept their places. The file is written now, so no earlier second
        # than this index's can make an entry racy against it.
        return Index(bytes(body), self.offsets, recent, since=self.since, end=self.end)


def _entry_at(data: bytes | bytearray, offset: int) -> tuple[int, bytes]:
    """The size and path of the entry at ``offset``."""
    flags = int.from_bytes(data[offset + 60 : offset + 62])
    head = _FIXED + 2 if flags & _EXTENDED else _FIXED
    length = flags & _NAME_LENGTH
    if length == _NAME_LENGTH:  # a long name: its length is where its NUL is
        length = data.index(b"\0", offset + head) - offset - head
    return (head + length + 8) & ~7, bytes(data[offset + head : offset + head + length])


def _extensions(data: bytes, start: int) -> Iterator[tuple[bytes, bytes]]:
    at, stop = start, len(data) - _CHECKSUM
    while at < stop:
        signature, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8])
        if not b"A" <= signature[:1] <= b"Z":
            # A required extension (a split or sparse index): git must write this index.
            raise Unsupported(f"index extension {signature.decode(errors='replace')}")
        yield signature, data[at + 8 : at + 8 + size]
        at += 8 + size


class Settled:
    """Files found to hold their entry's blob after the clock had passed their last change.

    A file's change stamps its inode with the time (``st_ctime``, which no one can set
    back). A file read after a moment when the clock was past its ``st_ctime`` can only
    have changed since with a later stamp: while its stat data is what it was then, it
    still holds what was read. That spares reading, again and again, the files landed in
    the second of the index, which each index written in that second must check (and
    which, at a hundred landings a second, are a hundred files a landing).
    """

    def __init__(self) -> None:
        self._files: dict[str, tuple[int, str, tuple[int, ...]]] = {}
        self.reads = 0
        """How many files were read to check them."""

    def holds(self, file: str, mode: int, blob: str, clock: os.stat_result | None) -> bool:
        """Whether ``file`` is a regular file of ``mode`` holding the blob ``blob``; read
        unless vouched for. ``clock`` is the stat data of a file written before this call,
        on the file system of the checkout, or None."""
        try:
            info = os.lstat(file)
        except OSError:
            return False
        signature = _signature(info)
        if self._files.get(file) == (mode, blob, signature):
            return True
        if not _regular_of(info, mode):
            return False
        self.reads += 1
        try:
            with open(file, "rb") as handle:
                data = handle.read()
        except OSError:
            return False
        if objects.object_id(b"blob", data)[0] != blob:
            return False
        if (
            clock is not None
            and info.st_dev == clock.st_dev
            and info.st_ctime_ns < clock.st_ctime_ns
        ):
            self._files[file] = (mode, blob, signature)
        return True


def _signature(info: os.stat_result) -> tuple[int, ...]:
    return (
        info.st_mode,
        info.st_size,
        info.st_dev,
        info.st_ino,
        info.st_mtime_ns,
        info.st_ctime_ns,
    )


def _regular_of(info: os.stat_result, mode: int) -> bool:
    return stat.S_ISREG(info.st_mode) and bool(info.st_mode & stat.S_IXUSR) == (mode == _EXECUTABLE)


def _write(file: Path, content: bytes, mode: int) -> os.stat_result:
    """Replace ``file`` by a new one holding ``content``, as git's checkout does."""
    file.unlink()
    permissions = 0o777 if mode == _EXECUTABLE else 0o666
    with open(os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, permissions), "wb") as out:
        out.write(content)
    return file.lstat()


def _stat_words(*values: int) -> bytes:
    """Stat fields as the index keeps them: each cut to 32 bits, as git does."""
    return b"".join((value & 0xFFFFFFFF).to_bytes(4) for value in values)


def _invalidated(tree: bytes, folders: Collection[tuple[bytes, ...]]) -> bytes:
    """The ``TREE`` extension with every folder on ``folders`` marked invalid.

    Each record is ``name NUL entry-count SP subtree-count LF``, then the folder's tree id
    unless the count is -1 (invalid); a folder's subtrees follow it, depth first.
    """
    invalid = {folder[:depth] for folder in folders for depth in range(len(folder) + 1)}
    out = bytearray()
    at = 0

    def copy(folder: tuple[bytes, ...]) -> None:
        nonlocal at
        start = at
        nul = tree.index(b"\0", at)
        newline = tree.index(b"\n", nul)
        count, subtrees = tree[nul + 1 : newline].split(b" ")
        at = newline + 1 + (_CHECKSUM if int(count) >= 0 else 0)
        if folder in invalid:
            out.extend(tree[start:nul] + b"\0-1 " + subtrees + b"\n")
        else:
            out.extend(tree[start:at])
        for _ in range(int(subtrees)):
            copy((*folder, tree[at : tree.index(b"\0", at)]))

    if tree:
        copy(())
    return bytes(out)
