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

Only what git stores as plain bytes is handled here: index versions 2 and 3 without a split
or sparse index, entries at stage 0 without the assume-unchanged, skip-worktree or
intent-to-add flags, and files whose content git does not convert. Anything else raises
:class:`Unsupported`, and git's own commands do the work.
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
_CHECKSUM = 20
_KEPT_EXTENSIONS = (b"TREE", b"REUC")


class Unsupported(Exception):
    """The index or a file uses something this module does not write; git's commands must."""


class Locked(Exception):
    """Another process holds the index lock."""


@dataclass(frozen=True)
class Entry:
    """One path's entry in the index, as found on disk."""

    offset: int
    mode: int
    blob: str


@dataclass(frozen=True)
class Landed:
    """A file a landing changed: it goes from ``old_blob`` to ``content`` (``new_blob``)."""

    path: str
    mode: int
    old_blob: str
    new_blob: str
    content: bytes


class Index:
    """An index file as read, with the entries of some paths found."""

    def __init__(self, data: bytes, mtime: int, paths: Collection[str]) -> None:
        self.data = data
        signature, version, count = _HEADER.unpack_from(data)
        if signature != b"DIRC" or version not in (2, 3):
            raise Unsupported(f"index version {version}")
        self.entries: dict[str, Entry] = {}
        self.racy: list[tuple[int, bytes]] = []
        """Entries whose file was modified no earlier than the index: their stat data
        cannot tell whether they are clean (Documentation/technical/racy-git.txt)."""
        self.end = self._scan(count, mtime, {path.encode(): path for path in paths})
        self.extensions = list(self._extensions())

    @classmethod
    def read(cls, file: Path, paths: Collection[str]) -> Index:
        """Read ``file`` and find the entries of ``paths``."""
        try:
            with file.open("rb") as handle:
                mtime = os.fstat(handle.fileno()).st_mtime_ns // 1_000_000_000
                data = handle.read()
        except FileNotFoundError as exc:
            raise Unsupported("there is no index") from exc
        return cls(data, mtime, paths)

    def _scan(self, count: int, mtime: int, wanted: Mapping[bytes, str]) -> int:
        """Walk the entries, finding the wanted and the racy ones; where the entries end."""
        data = self.data
        offset = _HEADER.size
        for _ in range(count):
            flags = int.from_bytes(data[offset + 60 : offset + 62])
            head = _FIXED + 2 if flags & _EXTENDED else _FIXED
            length = flags & _NAME_LENGTH
            if length == _NAME_LENGTH:  # a long name: its length is where its NUL is
                length = data.index(b"\0", offset + head) - offset - head
            name = data[offset + head : offset + head + length]
            if int.from_bytes(data[offset + 8 : offset + 12]) >= mtime:
                self.racy.append((offset, name))
            path = wanted.get(name)
            if path is not None:
                self._found(path, offset, flags, head)
            offset += (head + length + 8) & ~7
        return offset

    def _found(self, path: str, offset: int, flags: int, head: int) -> None:
        special = flags & (_ASSUME_VALID | _STAGE)
        if head > _FIXED:
            special |= int.from_bytes(self.data[offset + 62 : offset + 64]) & _SKIP_OR_INTENT
        if special:
            raise Unsupported(f"{path} is unmerged or flagged in the index")
        mode = int.from_bytes(self.data[offset + 24 : offset + 28])
        self.entries[path] = Entry(offset, mode, self.data[offset + 40 : offset + 60].hex())

    def _extensions(self) -> Iterator[tuple[bytes, bytes]]:
        data, at, stop = self.data, self.end, len(self.data) - _CHECKSUM
        while at < stop:
            signature, size = data[at : at + 4], int.from_bytes(data[at + 4 : at + 8])
            if not b"A" <= signature[:1] <= b"Z":
                # A required extension (a split or sparse index): git must write this index.
                raise Unsupported(f"index extension {signature.decode(errors='replace')}")
            yield signature, data[at + 8 : at + 8 + size]
            at += 8 + size

    def rewritten(self, root: Path, changed: Mapping[str, tuple[str, os.stat_result]]) -> bytes:
        """The index with the ``changed`` paths at their new blob and stat data."""
        body = bytearray(self.data[: self.end])
        for offset, name in self.racy:
            # As git does when it writes an index: an entry whose stat data looks clean
            # but whose content is not loses its size, so that git compares it again.
            mode = int.from_bytes(body[offset + 24 : offset + 28])
            if not _holds(root / os.fsdecode(name), mode, body[offset + 40 : offset + 60].hex()):
                body[offset + 36 : offset + 40] = bytes(4)
        for path, (blob, info) in changed.items():
            offset = self.entries[path].offset
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
        folders = [tuple(path.encode().split(b"/")[:-1]) for path in changed]
        for signature, payload in self.extensions:
            if signature == b"TREE":
                payload = _invalidated(payload, folders)
            elif signature not in _KEPT_EXTENSIONS:
                continue  # a cache git rebuilds (untracked files, fsmonitor, offsets)
            body += signature + len(payload).to_bytes(4) + payload
        if self.data[-_CHECKSUM:] == bytes(_CHECKSUM):  # index.skipHash: git writes no hash
            return bytes(body + bytes(_CHECKSUM))
        return bytes(body + hashlib.sha1(body, usedforsecurity=False).digest())


def changed_paths(root: Path, index_file: Path, head: Mapping[str, tuple[int, str]]) -> set[str]:
    """Those of ``head``'s paths (to their mode and blob at HEAD) whose index entry or
    working-tree file differs from HEAD: what ``git status`` would list of them."""
    index = Index.read(index_file, head)
    return {
        path
        for path, (mode, blob) in head.items()
        if _entry_of(index, path) != (mode, blob) or not _holds(root / path, mode, blob)
    }


def update(root: Path, index_file: Path, files: Sequence[Landed]) -> list[str]:
    """Under git's index lock, write each landed file into the working tree and its entry
    into the index, where both still hold its old blob; the paths left alone (changed by
    the user since they were checked), whose index entry and file stay as they are.

    Raises :class:`Locked` when another process holds the lock, :class:`Unsupported`
    (with nothing written) when the index is one git must write.
    """
    lock = index_file.with_name(index_file.name + ".lock")
    try:
        descriptor = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError as exc:
        raise Locked(f"{lock} exists: another git process is running") from exc
    with open(descriptor, "wb") as out:
        try:
            index = Index.read(index_file, [file.path for file in files])
            changed: dict[str, tuple[str, os.stat_result]] = {}
            left = []
            for file in files:
                target = root / file.path
                if _entry_of(index, file.path) != (file.mode, file.old_blob) or not _holds(
                    target, file.mode, file.old_blob
                ):
                    left.append(file.path)
                    continue
                changed[file.path] = (file.new_blob, _write(target, file.content, file.mode))
            out.write(index.rewritten(root, changed))
        except BaseException:
            lock.unlink(missing_ok=True)
            raise
    os.replace(lock, index_file)
    return left


def _entry_of(index: Index, path: str) -> tuple[int, str] | None:
    entry = index.entries.get(path)
    return None if entry is None else (entry.mode, entry.blob)


def _holds(file: Path, mode: int, blob: str) -> bool:
    """Whether ``file`` is a regular file of ``mode`` whose bytes are the blob ``blob``."""
    try:
        info = file.lstat()
        if not stat.S_ISREG(info.st_mode) or bool(info.st_mode & stat.S_IXUSR) != (
            mode == _EXECUTABLE
        ):
            return False
        return objects.object_id(b"blob", file.read_bytes())[0] == blob
    except OSError:
        return False


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
