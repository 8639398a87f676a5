"""The object store as a run uses it: blobs read and written without a git process each.

A run reads the base blob of every unit it isolates and writes the blob of every fix. Through
``git cat-file`` and ``git hash-object`` that is two processes a unit; here reads go through
one long-lived ``git cat-file --batch`` and writes are made in-process wherever that stores
exactly what git would: a SHA-1 repository with plain object settings, and a path git keeps
as it is (no clean filter, end-of-line or encoding conversion). Other writes still go
through ``git hash-object --path``, which applies them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from stomper import git, objects

# Settings the in-process object writer does not reproduce; with any of them set, objects
# are written by git's own plumbing instead.
_OBJECT_SETTINGS = (
    r"^(core\.(sharedrepository|fsync|fsyncobjectfiles)"
    r"|i18n\.commitencoding|extensions\.compatobjectformat)$"
)
TRUE = ("true", "yes", "on", "1")
FALSE = ("false", "no", "off", "0", "")
"""How git spells a boolean setting."""


@dataclass(frozen=True)
class Loose:
    """Where in-process objects go, and whether git would flush each one to disk."""

    objects_dir: Path
    fsync: bool


async def in_process_store(root: Path) -> Loose | None:
    """Where objects may be written in-process so that they are exactly git's; None when
    git's plumbing must write them (SHA-256, shared permissions, a legacy commit encoding)."""
    object_format, objects_dir = await git.object_store(root)
    settings = await git.config_matching(root, _OBJECT_SETTINGS)
    if object_format != "sha1" or not _plain_objects(settings):
        return None
    return Loose(objects_dir, _fsync_loose(settings))


def _plain_objects(settings: Mapping[str, str]) -> bool:
    shared = settings.get("core.sharedrepository", "false").lower()
    encoding = settings.get("i18n.commitencoding", "utf-8").lower()
    return (
        shared in ("false", "umask", "0", "no", "off", "")
        and encoding in ("utf-8", "utf8")
        and "extensions.compatobjectformat" not in settings
    )


def _fsync_loose(settings: Mapping[str, str]) -> bool:
    """Whether git would flush a loose object to disk (by default it does not)."""
    if settings.get("core.fsyncobjectfiles", "false").lower() in TRUE:
        return True
    words = {word.strip() for word in settings.get("core.fsync", "").split(",")}
    return bool(words & {"loose-object", "objects", "added", "committed", "all"})


async def verbatim_paths(root: Path, paths: Collection[str]) -> frozenset[str]:
    """Those of ``paths`` whose bytes git stores as they are in the working tree: no
    ``core.autocrlf``, and no clean filter, end-of-line, ``ident`` or encoding attribute."""
    if not paths:
        return frozenset()
    settings = await git.config_matching(root, r"^core\.autocrlf$")
    if settings.get("core.autocrlf", "false").lower() in (*TRUE, "input"):
        return frozenset()  # every text file is converted on the way in
    return frozenset(paths) - await git.converted_paths(root, paths)


class Blobs:
    """Reads and writes the blobs of a run's unit files; :meth:`aclose` ends its git process.

    Until :meth:`prepare` names the paths whose bytes git stores unchanged, every write goes
    through git.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._reader = git.ObjectReader(root)
        self._loose: Loose | None = None
        self.verbatim: frozenset[str] = frozenset()
        """The unit paths whose blobs are written in-process: those git stores as they are,
        once :meth:`prepare` found them (none when objects must go through git)."""

    async def prepare(self, paths: Collection[str]) -> None:
        """Find which of ``paths`` may be written in-process (one git call for them all)."""
        self._loose = await in_process_store(self.root)
        if self._loose is not None:
            self.verbatim = await verbatim_paths(self.root, paths)

    async def read(self, blob: str) -> bytes:
        """The bytes of ``blob`` as stored (no smudge filter applied)."""
        found = await self._reader.read(blob)
        if found is None or found[0] != b"blob":
            raise ValueError(f"{blob} is not a blob in this repository")
        return found[1]

    async def write(self, path: str, content: bytes) -> str:
        """Store ``content`` as the blob of ``path``, as ``git hash-object -w --path`` would;
        its id."""
        if self._loose is None or path not in self.verbatim:
            return await git.write_blob(self.root, path, content)
        oid, stored = objects.object_id(b"blob", content)
        await asyncio.to_thread(
            objects.write_loose, self._loose.objects_dir, {oid: stored}, fsync=self._loose.fsync
        )
        return oid

    async def aclose(self) -> None:
        await self._reader.aclose()
