"""A task's change: what its agent left in its workspace, as patches, or why none may land.

The workspace is a pooled tree at the task's base (:mod:`stomper.workspace`); what differs
there from stomper's own index of it is the change, whatever the agent did to the git
repository it was given. Every file changed, created or deleted must be one the task's
``files`` name, a regular file (no symlink) of the mode it had, and hold no new suppression
of a tool; else the change is **blocked**: taken as it is, it would never pass, so it is
not tried again unchanged. The bytes are read once: they are what verification runs and
what lands.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from stomper import git
from stomper.guardrails import suppression_violation
from stomper.store import Blobs
from stomper.tasks.taskfile import Task
from stomper.unit import Patch
from stomper.workflow.build import Edited
from stomper.workspace import NotRegular, Space, read_regular


class Blocked(Exception):
    """The change breaks a rule of the task's; ``str()`` says which."""


@dataclass(frozen=True)
class Change:
    """A task's change on ``base``: one patch a file, with the bytes it lands."""

    base: str
    patches: tuple[Patch, ...]
    contents: tuple[bytes | None, ...]
    """Each patch's bytes (None: the file is deleted)."""

    @property
    def paths(self) -> list[str]:
        return [patch.path for patch in self.patches]

    def edits(self) -> list[Edited]:
        """The change as files written into (or removed from) a tree, to verify it."""
        return [
            Edited(patch.path, patch.mode, patch.old_blob, content)
            for patch, content in zip(self.patches, self.contents, strict=True)
        ]


async def collect(space: Space, base: str, task: Task, blobs: Blobs) -> Change:
    """The change ``task``'s agent made in ``space`` (a pooled tree at ``base``); raises
    :class:`Blocked`."""
    tampered = space.tampered()
    if tampered is not None:
        raise Blocked(tampered)
    assert space.pooled is not None, "a task works in a tree"
    state = await git.private_state(space.pooled.repo)
    paths = sorted(set(state.changed))
    outside = [path for path in paths if not any(p.covers(path) for p in task.files)]
    if outside:
        raise Blocked(f"the change touches files outside the task's: {', '.join(outside)}")
    before = await blobs.entries(base, paths)
    patches: list[Patch] = []
    contents: list[bytes | None] = []
    for path in paths:
        entry = before.get(path)
        content, mode = await asyncio.to_thread(_read, space, path)
        if content is None:
            if entry is not None:
                patches.append(Patch(path, entry.mode, entry.blob, None))
                contents.append(None)
            continue
        if entry is not None and mode != entry.mode:
            raise Blocked(f"the change alters the mode of {path}")
        blob, unstored = await blobs.name(path, content)
        if entry is not None and blob == entry.blob:
            continue  # written again as it was
        old = await blobs.read(entry.blob) if entry is not None else b""
        _check_suppressions(path, old, content)
        patches.append(Patch(path, mode, entry.blob if entry else None, blob, unstored))
        contents.append(content)
    return Change(base, tuple(patches), tuple(contents))


def _read(space: Space, path: str) -> tuple[bytes | None, str]:
    """The bytes and mode of ``path`` in the tree; None when it is not there."""
    if not os.path.lexists(space.root / path):
        return None, ""
    try:
        content = read_regular(space.root, path)
    except NotRegular:
        raise Blocked(f"the change makes {path} something other than a regular file") from None
    executable = os.lstat(space.root / path).st_mode & stat.S_IXUSR
    return content, "100755" if executable else "100644"


def _check_suppressions(path: str, old: bytes, new: bytes) -> None:
    try:
        before, after = old.decode("utf-8"), new.decode("utf-8")
    except UnicodeDecodeError:
        return  # no text: nothing a tool reads as a suppression
    why = suppression_violation(before, after, ())
    if why is not None:
        raise Blocked(f"{path}: {why}")


def describe(patches: Sequence[Patch]) -> str:
    """``2 changed, 1 created, 1 deleted``: what a change does, in a few words."""
    created = sum(1 for patch in patches if patch.creates)
    deleted = sum(1 for patch in patches if patch.deletes)
    changed = len(patches) - created - deleted
    parts = [
        f"{count} {word}"
        for count, word in ((changed, "changed"), (created, "created"), (deleted, "deleted"))
        if count
    ]
    return ", ".join(parts) or "nothing"
