"""Isolation: each unit works in a space of its own, at its base commit.

Two kinds, chosen per unit by what its agent and checks need:

- a **scratch** space: a private folder holding the unit's one file at its base content.
  Agents that only edit the file (autofix, the HTTP LLM agent) need no more, and the tools
  verify it through stdin under the file's real path, so they apply the project's settings.
  It costs a blob read and a file write, where a tree costs a checkout of the whole tree.
- a **tree** from a pool of N made once per run and reset to the unit's base before each
  use, for agents that run in a real tree (CLI agents), for mypy, and for ``--test-cmd``.

A pooled tree is a repository of its own, not a worktree of the user's: nothing an agent
does to git there reaches the user's refs, HEAD, index, hooks or config. Each pool slot is

```
w<n>/git     stomper's git directory for the tree: its HEAD, config and index
w<n>/tree    the tree the agent works in; tree/.git is the agent's own repository
```

Both read objects from the user's object directory and write none there. stomper checks
and resets the tree only through ``w<n>/git``, named on every call and never found through
``tree/.git``, which the agent may rewrite at will: it is made again at every reset, so
what the agent committed or branched there is discarded. ``w<n>/git`` is the agent's to
read, not to write: a sandbox keeps it read-only, and without one any change to it is
noticed (its files' inode, size and times against those stomper's own last call left), the
unit fails and the slot is made again. Only the unit's file is read back, once, never
through a symlink.

Every space lives below the run's folder under the git common directory, or, where the
machine has a memory file system with room (``/dev/shm``), in a private folder there that
the run's folder names; never in the working tree. Spaces are made and removed unit after
unit: in memory a file costs microseconds, where on a disk it may cost a millisecond (a
tree of Django's 2,400 files: 0.2 s against 1.8 s to make, 0.03 s against 1.6 s to
remove). Whatever removes the run's folder removes its spaces too, when the run ends
however it ends, or by a later command when it died.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import console, git
from stomper.diagnostics import Collector, Diagnostic
from stomper.guardrails import file_violation, scope_violation
from stomper.journal import remove_tree
from stomper.store import Blobs
from stomper.unit import Unit


class NotRegular(OSError):
    """The unit's file is a symlink, a folder or another kind of file, or lies below one."""


@dataclass(frozen=True)
class Layout:
    """What every private repository of a run takes from the user's."""

    objects: Path
    """The user's object directory."""
    common: Path
    """The user's git common directory."""
    config: bytes
    """The text of each private repository's config but its work tree line."""


class Pooled:
    """One slot of the pool: a tree and the git directory stomper checks it through."""

    def __init__(self, folder: Path, layout: Layout) -> None:
        self.folder = folder
        self.layout = layout
        self.repo = git.PrivateRepo(folder / "git", folder / "tree", layout.objects)
        self._seal: tuple[object, ...] | None = None
        self._given: tuple[object, ...] | None = None

    @property
    def tree(self) -> Path:
        return self.repo.tree

    def cache_dir(self, tool: str) -> Path:
        """Where ``tool`` keeps what it learned of this slot's tree from one unit to the
        next (mypy's incremental cache): beside the tree, never in it."""
        return self.folder / f"{tool}-cache"

    def tampered(self) -> str | None:
        """What changed in the slot since stomper's own last call left it, if anything did:
        its git directory, or the folders it is made of."""
        if self._seal is None:
            return None
        now = _fingerprint(self.folder)
        if now == self._seal:
            return None
        return _describe_change(self._seal, now)

    async def reset(self, commit: str) -> str | None:
        """The tree at ``commit``, as if new; what was found changed in the slot (it is then
        made again from nothing), if anything."""
        found = None
        if self._seal is None or (found := self.tampered()) is not None:
            await asyncio.to_thread(self._make, commit)
        await git.reset_private(self.repo, commit)
        self._seal = await asyncio.to_thread(self._give_repository)
        return found

    def _make(self, commit: str) -> None:
        _remove(self.folder)
        git_dir = self.repo.git_dir
        (git_dir / "refs" / "heads").mkdir(parents=True)
        (git_dir / "refs" / "tags").mkdir()
        self.tree.mkdir()
        (git_dir / "HEAD").write_text(commit + "\n", encoding="ascii")
        (git_dir / "config").write_bytes(self.layout.config + _worktree_line(self.tree))

    def _give_repository(self) -> tuple[object, ...]:
        """The agent's own repository in the tree: stomper's HEAD, config and index, the
        user's objects as alternates, no refs. Made again at each reset. The slot's
        fingerprint, as stomper leaves it.

        Where the last unit left it as it was given, only HEAD and the index are given
        again: the rest is what it would be made of."""
        dot = self.tree / ".git"
        if self._given is None or _entries(dot, dot) != self._given:
            _remove(dot)
            (dot / "refs" / "heads").mkdir(parents=True)
            (dot / "refs" / "tags").mkdir()
            (dot / "objects" / "info").mkdir(parents=True)
            alternates = dot / "objects" / "info" / "alternates"
            alternates.write_bytes(os.fsencode(self.layout.objects))
            shutil.copyfile(self.repo.git_dir / "config", dot / "config")
        for name in ("HEAD", "index"):
            shutil.copyfile(self.repo.git_dir / name, dot / name)
        self._given = _entries(dot, dot)
        return _fingerprint(self.folder)


@dataclass(frozen=True)
class Space:
    """Where one unit works: the folder an agent sees, and how to check and reset it."""

    root: Path
    """The folder the agent works in; the unit's file is ``root / unit.path``."""
    repo: Path
    blobs: Blobs
    pooled: Pooled | None = None
    """The pool slot of a tree; None for a scratch folder holding the one file."""

    @property
    def real_tree(self) -> bool:
        """A full tree at the base (True), or a scratch folder with the one file."""
        return self.pooled is not None

    def file(self, unit: Unit) -> Path:
        return self.root / unit.path

    def config_path(self, unit: Unit) -> Path:
        """Where the file stands for the tools' configuration (per-file ignores, nested
        settings): its real place in a tree, its place in the checkout for scratch."""
        return (self.root if self.real_tree else self.repo) / unit.path

    def tampered(self) -> str | None:
        """Why the agent's call is refused whatever its edit: it changed stomper's own
        repository of the tree (a scratch folder has none)."""
        if self.pooled is None:
            return None
        found = self.pooled.tampered()
        if found is None:
            return None
        return f"the agent changed stomper's own repository of its workspace ({found})"

    async def violation(self, unit: Unit) -> str | None:
        if self.pooled is not None:
            return await scope_violation(self.pooled.repo, unit.path, unit.mode)
        return _scratch_violation(self.root, unit)

    async def read(self, unit: Unit) -> bytes:
        """The unit file's bytes, read once; never through a symlink."""
        return await asyncio.to_thread(read_regular, self.root, unit.path)

    async def place(self, unit: Unit, content: bytes) -> None:
        """Make the unit's file hold ``content`` (replacing whatever is at its place)."""
        await asyncio.to_thread(write_regular, self.root, unit.path, content, unit.mode)

    async def restore(self, unit: Unit, content: bytes) -> None:
        """Undo everything the agent did, then give the unit's file ``content``."""
        if self.pooled is not None:
            await self.pooled.reset(unit.base)
        else:
            _clear_scratch(self.root)
        await self.place(unit, content)

    async def collect(
        self, collectors: Sequence[Collector], unit: Unit, source: bytes
    ) -> list[Diagnostic]:
        """The findings of the unit's file holding ``source``.

        Tools whose findings depend on the file alone check those bytes as if at its place
        in the checkout, in a tree as in a scratch folder (ruff then answers through its
        long-lived server); for the others the file is made to hold exactly those bytes
        first, and they check the tree.
        """
        found: list[Diagnostic] = []
        tree_tools = [collector for collector in collectors if not collector.per_file]
        if tree_tools:
            await self.place(unit, source)
        for collector in collectors:
            if collector.per_file:
                found += await collector.collect_source(self.repo, unit.path, source)
            else:
                found += await self.collect_tree(collector, [unit.path])
        return found

    async def collect_tree(self, collector: Collector, paths: Sequence[str]) -> list[Diagnostic]:
        """The findings of a tool that checks a tree in ``paths`` of this one, as it is."""
        cache = self.pooled.cache_dir(collector.name) if self.pooled is not None else None
        return await collector.collect(self.root, paths, cache_dir=cache)

    async def blob(self, unit: Unit, content: bytes) -> tuple[str, bytes | None]:
        """The id of ``content`` as the unit file's blob, and ``content`` when it is left
        for the landing to store (:meth:`stomper.store.Blobs.name`)."""
        return await self.blobs.name(unit.path, content)


class Workspaces:
    """The spaces of one run: scratch folders and a pool of trees, in one folder.

    :meth:`aclose` ends the git process it reads blobs through; :meth:`close` removes the
    spaces.
    """

    def __init__(self, root: Path, folder: Path, *, pool_size: int = 4) -> None:
        self.root = root
        self.folder = folder
        self.pool_size = pool_size
        self.blobs = Blobs(root)
        self._free: asyncio.Queue[Pooled] = asyncio.Queue()
        self._made = 0
        self._layout: Layout | None = None
        self._paths: dict[str, list[str]] = {}
        self._baselines: dict[tuple[str, str], dict[str, list[Diagnostic]]] = {}
        self._baselining = asyncio.Lock()
        self._spaces: Path | None = None

    def _place(self) -> Path:
        """The folder the spaces are made in (see the module's docstring)."""
        if self._spaces is None:
            self._spaces = _spaces_folder(self.folder)
        return self._spaces

    @contextlib.asynccontextmanager
    async def scratch(self, unit: Unit) -> AsyncIterator[Space]:
        """A private folder holding only the unit's file, at its base content."""
        path = self._place() / f"s{unit.index}"
        content = await self.blobs.read(unit.base_blob)
        # Folders made and removed for every unit: off the event loop, which has other
        # units to serve meanwhile.
        await asyncio.to_thread(_make_scratch, path, unit, content)
        try:
            yield Space(path, self.root, self.blobs)
        finally:
            await asyncio.to_thread(remove_tree, path)

    @contextlib.asynccontextmanager
    async def tree(self, commit: str) -> AsyncIterator[Space]:
        """A tree of the pool, reset to ``commit`` with nothing left of earlier units."""
        pooled = await self._take()
        try:
            found = await pooled.reset(commit)
            if found is not None:
                # Checked when the slot was given back: a process outlived its unit.
                console.warning(
                    f"something changed the pooled workspace {pooled.folder.name} after its "
                    f"unit ended ({found}); it was made again"
                )
            yield Space(pooled.tree, self.root, self.blobs, pooled)
        finally:
            self._free.put_nowait(pooled)

    @contextlib.asynccontextmanager
    async def tree_root(self, commit: str) -> AsyncIterator[Path]:
        """The folder of a pooled tree at ``commit``."""
        async with self.tree(commit) as space:
            yield space.root

    async def _take(self) -> Pooled:
        if self._free.empty() and self._made < self.pool_size:
            self._made += 1
            folder = self._place() / f"w{self._made}"
            try:
                return Pooled(folder, await self._private_layout())
            except BaseException:
                self._made -= 1
                raise
        return await self._free.get()

    async def _private_layout(self) -> Layout:
        if self._layout is None:
            object_format, objects = await git.object_store(self.root)
            _own, common = await git.git_dirs(self.root)
            self._layout = Layout(objects.resolve(), common, _config(common, object_format))
        return self._layout

    async def prepare(self, units: Sequence[Unit]) -> None:
        """Learn the run's units: which files' blobs can be written without a git process
        each, and which files a tree tool checks at each base."""
        await self.blobs.prepare([unit.path for unit in units])
        for unit in units:
            self._paths.setdefault(unit.base, []).append(unit.path)

    async def baseline(self, collector: Collector, unit: Unit, space: Space) -> list[Diagnostic]:
        """The findings of a tool that checks a tree in ``unit``'s file at its base, with
        ``space`` a tree still at that base.

        The first unit to ask checks the files of every unit of the run at that base, in
        one call of the tool in its own tree; the others wait for that, and take their part.
        """
        paths = self._paths.get(unit.base, [])
        if unit.path not in paths:  # a unit the run was not told of: checked alone
            return await space.collect_tree(collector, [unit.path])
        key = (collector.name, unit.base)
        async with self._baselining:
            if key not in self._baselines:
                by_path: dict[str, list[Diagnostic]] = {}
                for diag in await space.collect_tree(collector, paths):
                    by_path.setdefault(diag.path, []).append(diag)
                self._baselines[key] = by_path
        return list(self._baselines[key].get(unit.path, ()))

    async def aclose(self) -> None:
        await self.blobs.aclose()

    def close(self) -> None:
        """Remove the run's spaces; safe to call from any state, also after a cancel."""
        release_folder(self.root, self.folder)


def release_folder(root: Path, folder: Path) -> None:
    """Delete a folder of spaces (blocking; for exits and clean). Runs of older versions
    kept linked worktrees there: git is told to forget those."""
    git.release_worktrees_sync(root, folder)
    memory = _memory_folder_of(folder)
    if memory is not None:
        remove_tree(memory)
    if folder.exists():
        remove_tree(folder)
    git.prune_worktrees_sync(root)


MEMORY = Path("/dev/shm")
_MEMORY_FREE_AT_LEAST = 2 << 30
_POINTER = "spaces"
"""The file in a run's folder that names the folder of its spaces in memory."""
_OWNER = "run"
"""The file in a folder of spaces in memory that names the run's folder it belongs to."""


def _spaces_folder(folder: Path) -> Path:
    """Where the spaces of the run whose folder is ``folder`` are made: a private folder on
    the memory file system, named in ``folder`` first, when there is one with room; else
    ``folder`` itself."""
    folder.mkdir(parents=True, exist_ok=True)
    if memory_room() is None:
        return folder
    try:
        made = Path(tempfile.mkdtemp(prefix=f"stomper-{folder.name}-", dir=MEMORY))
        (made / _OWNER).write_text(str(folder.resolve()), encoding="utf-8")
        (folder / _POINTER).write_text(str(made), encoding="utf-8")
    except OSError:
        return folder
    return made


def memory_room() -> int | None:
    """The bytes free on the memory file system the spaces are made in; None where there
    is none, or less than they may take (they are then made on the disk)."""
    if not _in_memory(MEMORY):
        return None
    try:
        info = os.statvfs(MEMORY)
    except OSError:
        return None
    free = info.f_bavail * info.f_frsize
    return free if free >= _MEMORY_FREE_AT_LEAST else None


def release_orphans() -> list[Path]:
    """Remove the folders of spaces in memory, of this user's, whose run's folder is gone
    (a run that died, its repository deleted since): those removed. Nothing else ever
    would, but a reboot."""
    removed = []
    for folder in MEMORY.glob("stomper-*"):
        try:
            info = folder.lstat()
            owner = Path((folder / _OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # not one of ours, or still being made
        if _ours(info) and not owner.exists():
            remove_tree(folder)
            removed.append(folder)
    return removed


def _ours(info: os.stat_result) -> bool:
    """Whether a folder of spaces in memory is a folder (not a symlink), and this user's."""
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid()


def _in_memory(path: Path) -> bool:
    """Whether ``path`` is where a tmpfs is mounted."""
    try:
        mounts = Path("/proc/self/mounts").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return any(
        len(fields) > 2 and fields[1] == str(path) and fields[2] == "tmpfs"
        for fields in (line.split() for line in mounts.splitlines())
    )


def _memory_folder_of(folder: Path) -> Path | None:
    """The folder of spaces in memory that the run's ``folder`` names, when it names one
    this process may remove: a folder of this user's, made as :func:`_spaces_folder`
    makes them."""
    try:
        named = Path((folder / _POINTER).read_text(encoding="utf-8"))
        info = named.lstat()
    except (OSError, ValueError):
        return None
    if named.parent != MEMORY or not named.name.startswith(f"stomper-{folder.name}-"):
        return None
    return named if _ours(info) else None


def _config(common: Path, object_format: str) -> bytes:
    """A private repository's config: the user's repository config (what git stores and
    checks out files by: end-of-line and filter settings), then what makes it a repository
    of its own. The repository format is read without includes: it is written out."""
    lines = [
        "[include]",
        f"\tpath = {_quoted(common / 'config')}",
        "[core]",
        f"\trepositoryformatversion = {0 if object_format == 'sha1' else 1}",
        "\tbare = false",
        "\tlogallrefupdates = false",
    ]
    if object_format != "sha1":
        lines += ["[extensions]", f"\tobjectformat = {object_format}"]
    return ("\n".join(lines) + "\n").encode()


def _worktree_line(tree: Path) -> bytes:
    # A core.worktree the user configured would point the agent's git at their checkout.
    return f"[core]\n\tworktree = {_quoted(tree)}\n".encode()


def _quoted(path: Path) -> str:
    text = str(path).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _fingerprint(folder: Path) -> tuple[object, ...]:
    """The slot's folders and every entry of its git directory: type, inode, size and
    times (a change of content or of metadata changes the ctime, which no one can set)."""
    parts: list[object] = []
    for path in (folder, folder / "git", folder / "tree"):
        try:
            info = path.lstat()
        except OSError:
            parts.append((path.name, None))
            continue
        parts.append((path.name, info.st_mode, info.st_ino))
    return (*parts, *_entries(folder / "git", folder))


def _entries(top: Path, base: Path) -> tuple[object, ...]:
    """Every entry below ``top`` (named relative to ``base``) with its type, inode, size
    and times."""
    parts: list[object] = []
    for directory, dirs, files in os.walk(top):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            path = Path(directory) / name
            try:
                info = path.lstat()
            except OSError:
                continue
            relative = path.relative_to(base).as_posix()
            times = (info.st_mtime_ns, info.st_ctime_ns)
            parts.append((relative, info.st_mode, info.st_ino, info.st_size, *times))
    return tuple(parts)


def _describe_change(before: tuple[object, ...], after: tuple[object, ...]) -> str:
    def named(parts: tuple[object, ...]) -> dict[object, object]:
        return {part[0]: part for part in parts if isinstance(part, tuple)}

    old, new = named(before), named(after)
    names = old.keys() | new.keys()
    changed = sorted(str(name) for name in names if old.get(name) != new.get(name))
    return ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")


def _remove(path: Path) -> None:
    """Remove whatever is at ``path`` (a folder's contents are never followed into)."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(info.st_mode):
        shutil.rmtree(path)
    else:
        path.unlink()


def _make_scratch(path: Path, unit: Unit, content: bytes) -> None:
    _remove(path)
    path.mkdir(parents=True)
    write_regular(path, unit.path, content, unit.mode)


def _clear_scratch(folder: Path) -> None:
    for entry in folder.iterdir():
        _remove(entry)


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _parent_fd(root: Path, relative: str, *, create: bool) -> tuple[int, str]:
    """An open folder of ``relative`` below ``root``, reached without following a symlink,
    and the file's name in it; with ``create``, missing folders are made."""
    *folders, name = relative.split("/")
    fd = os.open(root, _DIRECTORY)
    try:
        for part in folders:
            try:
                inner = os.open(part, _DIRECTORY, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    raise
                os.mkdir(part, dir_fd=fd)
                inner = os.open(part, _DIRECTORY, dir_fd=fd)
            except OSError as exc:  # a symlink (ELOOP) or a file (ENOTDIR) on the way
                raise NotRegular(f"{relative}: {part} is not a folder") from exc
            os.close(fd)
            fd = inner
    except BaseException:
        os.close(fd)
        raise
    return fd, name


def read_regular(root: Path, relative: str) -> bytes:
    """The bytes of the regular file ``relative`` below ``root``; :class:`NotRegular` when
    it, or a folder on its way, is a symlink or no regular file."""
    parent, name = _parent_fd(root, relative, create=False)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise NotRegular(f"{relative} is not a regular file") from exc
    finally:
        os.close(parent)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise NotRegular(f"{relative} is not a regular file")
        return handle.read()


def write_regular(root: Path, relative: str, content: bytes, mode: str) -> None:
    """Make ``relative`` below ``root`` a regular file holding ``content``: written under a
    new name and renamed over whatever was there, never written through a symlink."""
    parent, name = _parent_fd(root, relative, create=True)
    try:
        partial = f".{name}.{secrets.token_hex(4)}.stomper"
        permissions = 0o777 if mode == "100755" else 0o666
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        fd = os.open(partial, flags, permissions, dir_fd=parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
        try:
            os.rename(partial, name, src_dir_fd=parent, dst_dir_fd=parent)
        except IsADirectoryError:
            shutil.rmtree(name, dir_fd=parent)
            os.rename(partial, name, src_dir_fd=parent, dst_dir_fd=parent)
    finally:
        os.close(parent)


def remove_regular(root: Path, relative: str) -> None:
    """Remove the file ``relative`` below ``root``, never through a symlink on its way;
    nothing when it is not there."""
    try:
        parent, name = _parent_fd(root, relative, create=False)
    except FileNotFoundError:
        return
    try:
        os.unlink(name, dir_fd=parent)
    except FileNotFoundError:
        pass
    finally:
        os.close(parent)


def _scratch_violation(folder: Path, unit: Unit) -> str | None:
    """Why a scratch folder holds more or other than the unit's one regular file."""
    others = []
    for directory, _dirs, files in os.walk(folder):
        for name in files:
            relative = (Path(directory) / name).relative_to(folder).as_posix()
            if relative != unit.path:
                others.append(relative)
    if others:
        return f"the change touches files outside the unit: {', '.join(sorted(others))}"
    return file_violation(folder / unit.path, unit.path, unit.mode)
