"""The repository's objects, read and written in-process through libgit2 (``pygit2``).

A run reads the base blob of every unit it isolates, writes the blob of every change, and
lands each change as a commit whose tree differs from its parent's along the changed paths.
Through git's plumbing that is several processes a unit; through libgit2 it is a fraction of
a millisecond, and the objects are written by libgit2, in git's own formats.

That holds only where libgit2 stores exactly what git would: a repository it can open (no
SHA-256, no extension it does not know; else :func:`open_objects` gives None), no shared
permissions, no legacy commit encoding and no flushing of each object to disk (else the
objects are only read here, :attr:`Objects.writable`); git's own plumbing writes them there.
Blobs are written as they are given, so only the bytes of paths git keeps verbatim
(:func:`verbatim_paths`) may be written here; git must convert the others.

An :class:`Objects` is not for use from two threads at once: each user keeps its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import pygit2

from stomper import git

# Settings under which libgit2 would not store what git stores: objects are then written by
# git's own plumbing.
_OBJECT_SETTINGS = (
    r"^(core\.(sharedrepository|fsync|fsyncobjectfiles)"
    r"|i18n\.commitencoding|extensions\.compatobjectformat)$"
)
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0", "")
"""How git spells a boolean setting."""
_TREE = pygit2.enums.FileMode.TREE


@dataclass(frozen=True)
class Ident:
    """Who a commit is by, as ``git var GIT_AUTHOR_IDENT`` gives it, and when."""

    name: str
    email: str
    fixed: tuple[int, int] | None
    """The date every commit gets (seconds, offset in minutes) when git's environment fixes
    one (``GIT_AUTHOR_DATE``); else each commit is dated at the moment it is made."""

    @classmethod
    def parse(cls, line: bytes, *, fixed_date: bool) -> Ident:
        """``Name <email> 1700000000 +0100``; raises ValueError for what is not UTF-8."""
        person, _, date = line.decode().rpartition("> ")
        name, _, email = person.partition(" <")
        seconds, zone = date.split()
        sign = -1 if zone.startswith("-") else 1
        offset = sign * (int(zone[1:3]) * 60 + int(zone[3:5]))
        return cls(name, email, (int(seconds), offset) if fixed_date else None)

    def signature(self) -> pygit2.Signature:
        return pygit2.Signature(self.name, self.email, *self._when())

    def line(self) -> bytes:
        """As git writes it in a commit: ``Name <email> 1700000000 +0100``, dated now."""
        seconds, offset = self._when()
        sign = "-" if offset < 0 else "+"
        hours, minutes = divmod(abs(offset), 60)
        return f"{self.name} <{self.email}> {seconds} {sign}{hours:02d}{minutes:02d}".encode()

    def _when(self) -> tuple[int, int]:
        if self.fixed is not None:
            return self.fixed
        seconds = int(time.time())
        return seconds, (time.localtime(seconds).tm_gmtoff or 0) // 60


class Objects:
    """Blobs, trees and commits of one repository, through libgit2."""

    def __init__(self, repository: pygit2.Repository, *, writable: bool) -> None:
        self._repo = repository
        self.writable = writable
        """Whether libgit2 writes here exactly what git would (see the module's docstring);
        when not, only reads go through it."""

    def read(self, oid: str) -> bytes:
        """The bytes of blob ``oid`` as stored; ValueError when it is no blob here."""
        try:
            found = self._repo[oid]
        except (KeyError, ValueError):
            raise ValueError(f"{oid} is not a blob in this repository") from None
        if not isinstance(found, pygit2.Blob):
            raise ValueError(f"{oid} is not a blob in this repository")
        return found.data

    def write_blob(self, content: bytes) -> str:
        """Store ``content`` as it is (no filter): for paths git keeps verbatim."""
        return str(self._repo.create_blob(content))

    def hash_blob(self, content: bytes) -> str:
        """The id :meth:`write_blob` would give ``content``, storing nothing."""
        return str(pygit2.hash(content))

    def entry(self, commit: str, path: str) -> git.TreeEntry | None:
        """What ``commit`` holds at ``path``: a file's mode and blob, or None."""
        try:
            found = self._repo[commit].peel(pygit2.Tree)[path]
        except KeyError:
            return None
        if found.type_str != "blob":
            return None
        return git.TreeEntry(f"{found.filemode:06o}", str(found.id))

    def tree_id(self, commit: str) -> str:
        """The id of ``commit``'s tree."""
        return str(self._repo[commit].peel(pygit2.Tree).id)

    def free(self, commit: str, path: str) -> bool:
        """Whether a file can be created at ``path`` in ``commit``'s tree: nothing is
        there, and no folder it would be in is a file."""
        tree = self._repo[commit].peel(pygit2.Tree)
        parts = path.split("/")
        for count in range(1, len(parts) + 1):
            try:
                found = tree["/".join(parts[:count])]
            except KeyError:
                return True
            if count == len(parts) or found.type_str != "tree":
                return False
        return True

    def commit(
        self,
        parent: str,
        changes: Mapping[str, git.TreeEntry | None],
        message: str,
        *,
        author: Ident,
        committer: Ident,
    ) -> str:
        """A commit on ``parent`` whose tree differs from the parent's in ``changes`` alone
        (a path to its new entry, or None to delete it); its id."""
        tree = self._repo[parent].peel(pygit2.Tree)
        edits = {tuple(path.split("/")): entry for path, entry in changes.items()}
        new_tree = self._edited(tree, edits)
        if new_tree is None:
            new_tree = self._repo.TreeBuilder().write()  # every file deleted: the empty tree
        oid = self._repo.create_commit(
            None,
            author.signature(),
            committer.signature(),
            message,
            new_tree,
            [pygit2.Oid(hex=parent)],
        )
        return str(oid)

    def changed_in_checkout(self, paths: Collection[str]) -> set[str] | None:
        """Those of ``paths`` whose index entry or working-tree file differs from HEAD, for
        paths git keeps verbatim; None when libgit2 cannot tell (git must be asked)."""
        changed = set()
        try:
            for path in paths:
                if self._repo.status_file(path):
                    changed.add(path)
        except (KeyError, ValueError, pygit2.GitError):
            return None
        return changed

    def _edited(
        self, tree: pygit2.Tree | None, edits: Mapping[tuple[str, ...], git.TreeEntry | None]
    ) -> pygit2.Oid | None:
        """``tree`` (None: an empty one) with ``edits`` made below it; None when nothing
        is left in it, as git keeps no empty trees."""
        builder = self._repo.TreeBuilder(tree) if tree is not None else self._repo.TreeBuilder()
        below: dict[str, dict[tuple[str, ...], git.TreeEntry | None]] = {}
        for parts, entry in edits.items():
            if len(parts) > 1:
                below.setdefault(parts[0], {})[parts[1:]] = entry
            elif entry is None:
                if builder.get(parts[0]) is not None:
                    builder.remove(parts[0])
            else:
                builder.insert(parts[0], pygit2.Oid(hex=entry.blob), int(entry.mode, 8))
        for name, inner in below.items():
            current = builder.get(name)
            subtree = self._repo[current.id] if current is not None else None
            if current is not None and not isinstance(subtree, pygit2.Tree):
                raise ValueError(f"{name} is a file, not a folder: nothing can be put in it")
            edited = self._edited(subtree, inner)
            if edited is None:
                if builder.get(name) is not None:
                    builder.remove(name)
            else:
                builder.insert(name, edited, _TREE)
        if len(builder) == 0:
            return None
        return builder.write()


async def open_objects(root: Path) -> Objects | None:
    """The objects of the repository at ``root`` through libgit2; None when libgit2 cannot
    open it (SHA-256, an extension it does not know): git's plumbing must do everything."""
    settings = await git.config_matching(root, _OBJECT_SETTINGS)
    try:
        repository = pygit2.Repository(str(root))
    except pygit2.GitError:
        return None
    return Objects(repository, writable=_plain_objects(settings))


async def idents(root: Path) -> tuple[Ident, Ident] | None:
    """Who commits in the repository at ``root`` (author, committer), as git would commit;
    None for a name or address libgit2 cannot take (not UTF-8)."""
    try:
        return (
            Ident.parse(
                await git.ident(root, "GIT_AUTHOR_IDENT"),
                fixed_date="GIT_AUTHOR_DATE" in os.environ,
            ),
            Ident.parse(
                await git.ident(root, "GIT_COMMITTER_IDENT"),
                fixed_date="GIT_COMMITTER_DATE" in os.environ,
            ),
        )
    except ValueError:
        return None


def _plain_objects(settings: Mapping[str, str]) -> bool:
    shared = settings.get("core.sharedrepository", "false").lower()
    encoding = settings.get("i18n.commitencoding", "utf-8").lower()
    fsync = {word.strip() for word in settings.get("core.fsync", "").split(",")}
    return (
        shared in (*FALSE, "umask")
        and encoding in ("utf-8", "utf8")
        and "extensions.compatobjectformat" not in settings
        and settings.get("core.fsyncobjectfiles", "false").lower() not in TRUE
        and not fsync & {"loose-object", "objects", "added", "committed", "all"}
    )


async def verbatim_paths(root: Path, paths: Collection[str]) -> frozenset[str]:
    """Those of ``paths`` whose bytes git stores as they are in the working tree: no
    ``core.autocrlf``, and no clean filter, end-of-line, ``ident`` or encoding attribute."""
    if not paths:
        return frozenset()
    settings = await git.config_matching(root, r"^core\.autocrlf$")
    if settings.get("core.autocrlf", "false").lower() in (*TRUE, "input"):
        return frozenset()  # every text file is converted on the way in
    return frozenset(paths) - await git.converted_paths(root, paths)
