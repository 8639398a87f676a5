"""Git objects made in-process: trees rewritten along one path, commits, and their storage.

Landing one file onto a commit needs new versions of only the trees on that file's path and
one commit object. Built here, they cost microseconds instead of a git process each. The
trees they start from are read through a caller-given ``read`` (a long-lived
``git cat-file --batch``) and cached, so a run of landings reads each tree at most once.
They are stored as loose objects, or, many at once, as one pack.

Only the SHA-1 object format is written here; other formats use git's own plumbing.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import struct
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

Read = Callable[[str], Awaitable[tuple[bytes, bytes] | None]]
"""Read an object by id: its kind (``b"tree"``) and body, or None when it does not exist."""

_OID_BYTES = 20
_TREE_MODE = b"40000"
# core.looseCompression's default: git writes loose objects at zlib level 1 too.
_LOOSE_LEVEL = 1
_TREE_CACHE_BYTES = 64 << 20
_COMMITS_REMEMBERED = 4096
PACK_AT = 100
"""From this many objects on, they are stored as one pack rather than as loose files: git's
own rule (``transfer.unpackLimit``) for objects that arrive together."""
_PACK_TYPES = {b"commit": 1, b"tree": 2, b"blob": 3, b"tag": 4}


def object_id(kind: bytes, body: bytes) -> tuple[str, bytes]:
    """The id of an object and its bytes as stored (header and body, not yet compressed)."""
    stored = b"%s %d\0" % (kind, len(body)) + body
    return hashlib.sha1(stored, usedforsecurity=False).hexdigest(), stored


@dataclass(frozen=True)
class Ident:
    """A commit's author or committer as ``git var GIT_*_IDENT`` gives it."""

    person: bytes
    """``Name <email>``, bytes as configured."""
    date: bytes | None
    """``<seconds> <+hhmm>`` when the environment fixes it (``GIT_*_DATE``); else None: now."""

    @classmethod
    def parse(cls, line: bytes, *, fixed_date: bool) -> Ident:
        person, seconds, zone = line.strip().rsplit(b" ", 2)
        return cls(person, seconds + b" " + zone if fixed_date else None)

    def at(self, now: int) -> bytes:
        return self.person + b" " + (self.date or local_date(now))


def local_date(now: int) -> bytes:
    """``now`` the way git writes it: seconds and the local zone's offset at that moment."""
    offset = time.localtime(now).tm_gmtoff // 60
    sign = b"+" if offset >= 0 else b"-"
    hours, minutes = divmod(abs(offset), 60)
    return b"%d %s%02d%02d" % (now, sign, hours, minutes)


def commit_body(tree: str, parent: str, author: bytes, committer: bytes, message: bytes) -> bytes:
    """A commit exactly as ``git commit-tree TREE -p PARENT`` writes it (no message cleanup)."""
    head = b"tree %s\nparent %s\nauthor %s\ncommitter %s\n\n" % (
        tree.encode(),
        parent.encode(),
        author,
        committer,
    )
    return head + message


@dataclass(frozen=True)
class Tree:
    """A tree object's bytes, with where each entry's mode and id sit in them."""

    raw: bytes
    entries: Mapping[bytes, tuple[int, int]]
    """name -> (offset of its mode, offset of its binary id)."""

    @classmethod
    def parse(cls, raw: bytes) -> Tree:
        entries = {}
        start = 0
        while start < len(raw):
            space = raw.index(b" ", start)
            nul = raw.index(b"\0", space)
            entries[raw[space + 1 : nul]] = (start, nul + 1)
            start = nul + 1 + _OID_BYTES
        return cls(raw, entries)

    def get(self, name: bytes) -> tuple[bytes, str] | None:
        """The mode and hex id of entry ``name``."""
        found = self.entries.get(name)
        if found is None:
            return None
        mode_at, oid_at = found
        mode = self.raw[mode_at : self.raw.index(b" ", mode_at)]
        return mode, self.raw[oid_at : oid_at + _OID_BYTES].hex()

    def replaced(self, name: bytes, mode: bytes, oid: str) -> Tree:
        """This tree with entry ``name`` (which exists) pointing at ``oid`` with ``mode``.

        The entry keeps its place, so the order git requires is kept too.
        """
        mode_at, oid_at = self.entries[name]
        raw = (
            self.raw[:mode_at]
            + mode
            + b" "
            + name
            + b"\0"
            + bytes.fromhex(oid)
            + self.raw[oid_at + _OID_BYTES :]
        )
        if oid_at - mode_at == len(mode) + len(name) + 2:
            return Tree(raw, self.entries)  # same layout: every offset still holds
        return Tree.parse(raw)


class Trees:
    """Commits that replace one file of a parent commit, built without a git process.

    What is built waits in :attr:`pending` until :func:`write_loose` stores it; it must be
    stored before any ref points at it.
    """

    def __init__(self, read: Read, *, author: Ident, committer: Ident) -> None:
        self._read = read
        self._author = author
        self._committer = committer
        self._trees: OrderedDict[str, Tree] = OrderedDict()
        self._tree_bytes = 0
        self._commit_trees: OrderedDict[str, str] = OrderedDict()
        self.pending: dict[str, bytes] = {}
        """Objects built and not yet written: id -> stored bytes."""

    async def entry(self, commit: str, path: str) -> tuple[str, str] | None:
        """The mode and blob id of file ``path`` in ``commit``; None when it is no file there."""
        *folders, name = path.encode().split(b"/")
        tree = await self._tree_of(commit)
        for folder in folders:
            found = (await self._tree(tree)).get(folder)
            if found is None or found[0] != _TREE_MODE:
                return None
            tree = found[1]
        found = (await self._tree(tree)).get(name)
        if found is None or found[0] == _TREE_MODE:
            return None
        return found[0].decode(), found[1]

    async def commit(self, parent: str, path: str, mode: str, blob: str, message: str) -> str:
        """A commit on ``parent`` whose tree differs only in file ``path`` (which exists)."""
        tree = await self._replace(
            await self._tree_of(parent), path.encode().split(b"/"), mode.encode(), blob
        )
        now = int(time.time())
        body = commit_body(
            tree, parent, self._author.at(now), self._committer.at(now), message.encode()
        )
        commit = self._add(b"commit", body)
        self._remember_commit(commit, tree)
        return commit

    async def _replace(self, tree: str, parts: list[bytes], mode: bytes, blob: str) -> str:
        """Write the trees on the way down to ``parts`` anew; the id of the new ``tree``."""
        current = await self._tree(tree)
        name, *rest = parts
        if rest:
            found = current.get(name)
            if found is None or found[0] != _TREE_MODE:
                raise ValueError(f"no folder {name!r} in tree {tree}")
            below = await self._replace(found[1], rest, mode, blob)
            new = current.replaced(name, _TREE_MODE, below)
        else:
            new = current.replaced(name, mode, blob)
        oid = self._add(b"tree", new.raw)
        self._cache(oid, new)
        return oid

    def _add(self, kind: bytes, body: bytes) -> str:
        oid, stored = object_id(kind, body)
        self.pending[oid] = stored
        return oid

    async def _tree_of(self, commit: str) -> str:
        tree = self._commit_trees.get(commit)
        if tree is None:
            body = await self._object(commit, b"commit")
            # A commit object starts with its tree: "tree <id>\n".
            tree = body[5 : body.index(b"\n")].decode()
            self._remember_commit(commit, tree)
        return tree

    async def _tree(self, oid: str) -> Tree:
        tree = self._trees.get(oid)
        if tree is not None:
            self._trees.move_to_end(oid)
            return tree
        tree = Tree.parse(await self._object(oid, b"tree"))
        self._cache(oid, tree)
        return tree

    async def _object(self, oid: str, kind: bytes) -> bytes:
        found = await self._read(oid)
        if found is None or found[0] != kind:
            raise ValueError(f"{oid} is not a {kind.decode()} in this repository")
        return found[1]

    def _cache(self, oid: str, tree: Tree) -> None:
        """Keep recent trees; a tree dropped is only read again if it is needed again."""
        if oid in self._trees:
            return
        self._trees[oid] = tree
        self._tree_bytes += len(tree.raw)
        while self._tree_bytes > _TREE_CACHE_BYTES and len(self._trees) > 1:
            _, dropped = self._trees.popitem(last=False)
            self._tree_bytes -= len(dropped.raw)

    def _remember_commit(self, commit: str, tree: str) -> None:
        self._commit_trees[commit] = tree
        if len(self._commit_trees) > _COMMITS_REMEMBERED:
            self._commit_trees.popitem(last=False)


def write_loose(objects_dir: Path, objects: Mapping[str, bytes], *, fsync: bool = False) -> None:
    """Store ``objects`` (id -> stored bytes) as loose objects, as git itself would.

    Each goes to a temporary file beside its final name, then is renamed into place (git's
    ``core.createObject=rename``; one file operation fewer than linking), so a reader never
    sees half an object. Blocking file I/O: call it from a worker thread.
    """
    for oid, stored in objects.items():
        final = objects_dir / oid[:2] / oid[2:]
        if final.exists():
            continue
        final.parent.mkdir(exist_ok=True)
        temporary = final.parent / f"tmp_obj_{secrets.token_hex(8)}"
        # Mode 0444 as git's own: the umask applies, and objects are never written again.
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        try:
            with os.fdopen(descriptor, "wb") as out:
                out.write(zlib.compress(stored, _LOOSE_LEVEL))
                if fsync:
                    out.flush()
                    os.fsync(out.fileno())
            # Written meanwhile by another process, it is the same bytes by definition.
            os.replace(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)


def write_pack(objects_dir: Path, objects: Mapping[str, bytes]) -> None:
    """Store ``objects`` (id -> stored bytes) as one pack with its index, as git itself would
    (version 2, no deltas): two files however many objects, where loose objects are a file
    each. Blocking file I/O: call it from a worker thread.
    """
    pack = bytearray(b"PACK" + struct.pack(">II", 2, len(objects)))
    placed: dict[bytes, tuple[int, int]] = {}
    for oid, stored in objects.items():
        header, body = stored.split(b"\0", 1)
        kind = header.split(b" ", 1)[0]
        packed = _pack_header(_PACK_TYPES[kind], len(body)) + zlib.compress(body)
        placed[bytes.fromhex(oid)] = (len(pack), zlib.crc32(packed))
        pack += packed
    checksum = hashlib.sha1(pack, usedforsecurity=False).digest()
    pack += checksum
    ids = sorted(placed)
    fanout = [0] * 256
    for binary in ids:
        fanout[binary[0]] += 1
    index = bytearray(b"\xfftOc" + struct.pack(">I", 2))
    total = 0
    for count in fanout:
        total += count
        index += struct.pack(">I", total)
    index += b"".join(ids)
    index += b"".join(struct.pack(">I", placed[binary][1]) for binary in ids)
    index += b"".join(struct.pack(">I", placed[binary][0]) for binary in ids)
    index += checksum
    index += hashlib.sha1(index, usedforsecurity=False).digest()
    name = objects_dir / "pack" / f"pack-{checksum.hex()}"
    # The index last: git finds packs by their index, so it never sees half a pack.
    for suffix, data in ((".pack", pack), (".idx", index)):
        _write_whole(name.with_suffix(suffix), bytes(data))


def _pack_header(kind: int, size: int) -> bytes:
    """An object's type and size as a pack entry starts: 4 bits of size, then 7 a byte."""
    out = bytearray([kind << 4 | size & 0x0F])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def _write_whole(final: Path, data: bytes) -> None:
    """Write ``final`` through a temporary file flushed to disk (git flushes packs by
    default), then move it into place."""
    temporary = final.parent / f"tmp_pack_{secrets.token_hex(8)}"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
    try:
        with os.fdopen(descriptor, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)
