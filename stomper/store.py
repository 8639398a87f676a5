"""The blobs of a run's unit files, read and written without a git process each.

A run reads the base blob of every unit it isolates and writes the blob of every change.
Through ``git cat-file`` and ``git hash-object`` that is two processes a unit; here both go
through libgit2 (:mod:`stomper.objects`) wherever it stores exactly what git would, and
through git elsewhere: ``git cat-file --batch`` where libgit2 cannot open the repository,
``git hash-object --path`` for a path git converts on the way in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from stomper import git
from stomper.objects import Objects, open_objects, verbatim_paths


class Blobs:
    """Reads and writes the blobs of a run's unit files; :meth:`aclose` ends what it keeps
    running.

    Until :meth:`prepare` names the paths whose bytes git stores unchanged, every write goes
    through git.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._objects: Objects | None = None
        self._reader = git.ObjectReader(root)
        self.verbatim: frozenset[str] = frozenset()
        """The unit paths whose blobs are written without git: those git stores as they
        are, once :meth:`prepare` found them (none where libgit2 may not write)."""

    async def prepare(self, paths: Collection[str]) -> None:
        """Open the object store and find which of ``paths`` may be written through
        libgit2 (one git call for them all)."""
        self._objects = await open_objects(self.root)
        if self._objects is not None and self._objects.writable:
            self.verbatim = await verbatim_paths(self.root, paths)

    async def read(self, blob: str) -> bytes:
        """The bytes of ``blob`` as stored (no smudge filter applied)."""
        if self._objects is not None:
            return self._objects.read(blob)
        found = await self._reader.read(blob)
        if found is None or found[0] != b"blob":
            raise ValueError(f"{blob} is not a blob in this repository")
        return found[1]

    async def entries(self, commit: str, paths: Sequence[str]) -> dict[str, git.TreeEntry]:
        """The files of ``commit`` (a commit or a tree) at ``paths``, by path: in-process
        where libgit2 reads the store, else through ``git ls-tree``."""
        if self._objects is None:
            return await git.tree_entries(self.root, commit, paths) if paths else {}
        found = {path: self._objects.entry(commit, path) for path in paths}
        return {path: entry for path, entry in found.items() if entry is not None}

    async def tree_id(self, commit: str) -> str:
        """The id of ``commit``'s tree."""
        if self._objects is None:
            return await git.tree_id(self.root, commit)
        return self._objects.tree_id(commit)

    async def write(self, path: str, content: bytes) -> str:
        """Store ``content`` as the blob of ``path``, as ``git hash-object -w --path`` would;
        its id."""
        objects = self._verbatim(path)
        if objects is None:
            return await git.write_blob(self.root, path, content)
        return objects.write_blob(content)

    async def name(self, path: str, content: bytes) -> tuple[str, bytes | None]:
        """The id ``content`` has as the blob of ``path``, and ``content`` itself when it is
        not stored yet: git keeps the path's bytes as they are, so whoever stores them later
        gets this id. Elsewhere it is stored now (through git's filters), and None given."""
        objects = self._verbatim(path)
        if objects is None:
            return await git.write_blob(self.root, path, content), None
        return objects.hash_blob(content), content

    def _verbatim(self, path: str) -> Objects | None:
        """The object store that takes ``path``'s bytes as they are; None when git must."""
        return self._objects if self._objects is not None and path in self.verbatim else None

    async def aclose(self) -> None:
        await self._reader.aclose()
