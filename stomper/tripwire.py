"""The user's repository, watched around each call of an agent that runs without a sandbox.

Without a sandbox a CLI agent can write wherever the user can: into the checkout by its
absolute path, into ``.git/hooks`` and ``.git/config``, onto the refs. Around each such
call the tripwire takes what it can compare cheaply:

- the small files git runs or reads settings from: the repository's config, hooks and
  ``info/`` files, its alternates, the user's global git config;
- ``HEAD``, and every ref (re-listed only when the ref files changed);
- ``git status`` of the checkout: every path that differs from HEAD or the index, with
  its file's inode, size and times, untracked files one by one.

Anything that differs after the call, but for the commits stomper itself landed meanwhile,
fails the unit (and every unit whose agent was running at that time: which of them did it
cannot be told). What stomper can put back without losing anything is put back, and what
it replaced is kept in the run's ``quarantine`` folder: a file or hook the agent wrote, a
ref it made or moved (named with its commit in ``refs.txt``), a file of the checkout that
was committed or whose state git knows (staged). What it cannot (a change to a file with
unstaged edits, a commit of the target branch that stomper's landings already built on)
is reported, loudly, and left as it is.

It does not see files git ignores, anything outside the repository, or an index whose
cached file data the agent forged; a sandbox is the real containment.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import stat
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stomper import console, git

_ZERO_MODE = "000000"


class Breach(Exception):
    """The agent changed the user's repository outside its workspace; ``reason`` says what
    and what became of it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


FileState = tuple[int, bytes] | None
"""A watched file's mode and bytes (a symlink's target for a symlink); None when absent."""


@dataclass(frozen=True)
class Snapshot:
    files: Mapping[Path, FileState]
    head: bytes | None
    refs: Mapping[str, str]
    status: Mapping[str, tuple[str, tuple[int, ...] | None]]
    """Each path git status names: its record, and its file's type, inode, size and times."""
    index: tuple[int, ...] | None
    landings: int
    """How many landings had finished when it was taken."""


@dataclass(eq=False)
class Watch:
    """One agent call being watched."""

    before: Snapshot
    tainted: str | None = None
    """Set when another call's check found the repository changed while this one ran."""


@dataclass
class _Repair:
    """What one check found and did."""

    done: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    kept: bool = False
    """Whether anything was moved into the quarantine folder."""


class Tripwire:
    """Watches the repository at ``root`` while uncontained agents run; landings onto
    ``target_ref`` go through :meth:`landing` and are told of through :meth:`landed`."""

    def __init__(
        self, root: Path, git_dir: Path, common_dir: Path, target_ref: str, quarantine: Path
    ) -> None:
        self.root = root
        self.git_dir = git_dir
        self.common_dir = common_dir
        self.target_ref = target_ref
        self.quarantine = quarantine
        self._ours: set[str] = set()
        self._active: set[Watch] = set()
        self._hooks: list[Path] = [common_dir / "hooks"]
        self._checking = False
        self._landing = 0
        self._landings = 0
        self._turns = asyncio.Condition()
        self._refs_seen: tuple[tuple[object, ...], dict[str, str]] | None = None
        self._settled: Snapshot | None = None
        self._cases = itertools.count(1)

    async def start(self) -> None:
        """Learn where the hooks are and take the first snapshot."""
        configured = await git.hooks_path(self.root)
        if configured is not None:
            self._hooks.append(configured)
        async with self._quiet():
            self._settled = await self._snapshot()

    async def arm(self) -> Watch:
        """Before an agent call: the repository as it is."""
        async with self._quiet():
            watch = Watch(await self._snapshot())
        self._active.add(watch)
        return watch

    def disarm(self, watch: Watch) -> None:
        """Forget a call that ended without a check (cancelled)."""
        self._active.discard(watch)

    async def check(self, watch: Watch) -> None:
        """After the call: raise :class:`Breach` if the repository changed while it ran
        (also by another call running at the same time), having repaired what it can."""
        self._active.discard(watch)
        async with self._quiet():
            found = await self._settle(watch.before)
            if found is not None:
                console.warning(f"the agent of a unit {found}")
                watch.tainted = watch.tainted or f"the agent {found}"
                assert self._settled is not None
                for other in self._active:
                    # Which agent did it cannot be told; what they do from here on is
                    # compared with the repository as it was put back.
                    other.before = self._settled
                    other.tainted = other.tainted or f"an agent running at the same time {found}"
        if watch.tainted is not None:
            raise Breach(watch.tainted)

    async def final(self) -> None:
        """At the end of the run: what changed since the last check (a process that
        outlived its agent) is repaired and reported, with no unit left to fail."""
        if self._settled is None:
            return
        async with self._quiet():
            found = await self._settle(self._settled)
        if found is not None:
            console.warning(f"after the last agent call, something {found}")

    @contextlib.asynccontextmanager
    async def landing(self) -> AsyncIterator[None]:
        """Hold checks off while a landing moves the target and the checkout: a half-done
        landing would read as a change."""
        async with self._turns:
            await self._turns.wait_for(lambda: not self._checking)
            self._landing += 1
        try:
            yield
        finally:
            async with self._turns:
                self._landing -= 1
                self._landings += 1
                self._turns.notify_all()

    def landed(self, commit: str) -> None:
        """A commit stomper landed on the target: not the agent's."""
        self._ours.add(commit)

    @contextlib.asynccontextmanager
    async def _quiet(self) -> AsyncIterator[None]:
        async with self._turns:
            await self._turns.wait_for(lambda: not self._checking and not self._landing)
            self._checking = True
        try:
            yield
        finally:
            async with self._turns:
                self._checking = False
                self._turns.notify_all()

    async def _settle(self, before: Snapshot) -> str | None:
        """Compare the repository with ``before`` and repair what can be; what was found
        ("changed your repository ..."), or None when nothing changed."""
        files = self._read_files()
        repair = _Repair()
        case = self.quarantine / str(next(self._cases))
        if files != before.files:
            # First, so that no setting or hook the agent planted has a say in what follows.
            await asyncio.to_thread(self._restore_files, before.files, files, case, repair)
        now = await self._snapshot()
        if not repair.done and await self._same(before, now):
            self._settled = now
            return None
        if now.head != before.head and before.head is not None:
            await git.set_head(self.root, before.head)
            repair.done.append(f"pointed HEAD at {_show(now.head)}")
        await self._restore_refs(before, now, case, repair)
        status = await git.status_records(self.root)
        await self._restore_status(before, status, case, repair)
        self._settled = await self._snapshot()
        if not repair.done and not repair.left:
            return None
        return _report(repair, case)

    async def _same(self, before: Snapshot, now: Snapshot) -> bool:
        if (
            now.files != before.files
            or now.head != before.head
            or now.status != before.status
            or _without(now.refs, self.target_ref) != _without(before.refs, self.target_ref)
        ):
            return False
        old, new = before.refs.get(self.target_ref), now.refs.get(self.target_ref)
        if old == new:
            return True
        if old is None or new is None or now.landings == before.landings:
            return False
        return not await self._foreign(old, new)

    async def _foreign(self, old: str, new: str) -> list[str]:
        """The commits the target gained from ``old`` to ``new`` that stomper did not land."""
        if await git.is_ancestor(self.root, old, new):
            gained = await git.commits_between(self.root, old, new)
        else:
            gained = [new]
        return [commit for commit in gained if commit not in self._ours]

    # Snapshots --------------------------------------------------------------------------

    async def _snapshot(self) -> Snapshot:
        files = self._read_files()
        head = _read(self.git_dir / "HEAD")
        refs = await self._refs()
        records = await git.status_records(self.root)
        status = {path: (record, _stat(self.root / path)) for path, record in records.items()}
        index = _stat(self.git_dir / "index")
        return Snapshot(files, head, refs, status, index, self._landings)

    def _watched_files(self) -> list[Path]:
        common, own = self.common_dir, self.git_dir
        home = Path(os.environ.get("HOME") or Path.home())
        xdg = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "git"
        listed = [
            common / "config",
            own / "config.worktree",
            common / "config.worktree",
            common / "info" / "attributes",
            common / "info" / "exclude",
            common / "info" / "sparse-checkout",
            common / "objects" / "info" / "alternates",
            Path(os.environ.get("GIT_CONFIG_GLOBAL") or home / ".gitconfig"),
            xdg / "config",
            xdg / "attributes",
            xdg / "ignore",
        ]
        for folder in self._hooks:
            listed += _files_below(folder)
        return list(dict.fromkeys(listed))

    def _read_files(self) -> dict[Path, FileState]:
        return {path: _file_state(path) for path in self._watched_files()}

    async def _refs(self) -> dict[str, str]:
        """Every ref; listed again only when the files that hold them changed."""
        common = self.common_dir
        seen = (
            _stat(common / "packed-refs"),
            *_tree_stats(common / "refs"),
            *_tree_stats(common / "reftable"),
        )
        if self._refs_seen is not None and self._refs_seen[0] == seen:
            return self._refs_seen[1]
        refs = await git.all_refs(self.root)
        self._refs_seen = (seen, refs)
        return refs

    # Repairs ----------------------------------------------------------------------------

    def _restore_files(
        self,
        before: Mapping[Path, FileState],
        now: Mapping[Path, FileState],
        case: Path,
        repair: _Repair,
    ) -> None:
        for path in sorted(before.keys() | now.keys()):
            old, new = before.get(path), now.get(path)
            if old == new:
                continue
            name = self._named(path)
            if new is not None:
                _keep(path, case / "files" / name.removeprefix("~/"), move=old is None)
                repair.kept = True
            if old is None:
                repair.done.append(f"added {name}")
            else:
                _put(path, old)
                repair.done.append(f"{'deleted' if new is None else 'changed'} {name}")

    def _named(self, path: Path) -> str:
        for base, shown in ((self.common_dir, ".git"), (Path.home(), "~")):
            if path.is_relative_to(base):
                return f"{shown}/{path.relative_to(base).as_posix()}"
        return str(path)

    async def _restore_refs(
        self, before: Snapshot, now: Snapshot, case: Path, repair: _Repair
    ) -> None:
        lines = []
        for ref in sorted(before.refs.keys() | now.refs.keys()):
            old, new = before.refs.get(ref), now.refs.get(ref)
            if old == new:
                continue
            if ref == self.target_ref:
                lines += await self._restore_target(before, now, repair)
                continue
            what = "made" if old is None else "deleted" if new is None else "moved"
            if await git.put_ref(self.root, ref, new=old, old=new):
                repair.done.append(f"{what} {ref}" + (f" (at {new})" if new else ""))
                lines.append(f"{ref} {old or '-'} {new or '-'}")
            else:
                repair.left.append(f"{what} {ref} ({old or '-'} -> {new or '-'})")
        if lines:
            case.mkdir(parents=True, exist_ok=True)
            with (case / "refs.txt").open("a", encoding="utf-8") as out:
                out.write("".join(f"{line}\n" for line in lines))
            repair.kept = True

    async def _restore_target(self, before: Snapshot, now: Snapshot, repair: _Repair) -> list[str]:
        """The target branch moved, not only by stomper's landings. It is moved back only
        when no landing took part (so no commit of stomper's builds on the agent's) and the
        index stayed as it was (so no ``git commit`` of the user's moved it)."""
        ref = self.target_ref
        old, new = before.refs.get(ref), now.refs.get(ref)
        if old is None or new is None:
            repair.left.append(f"{'deleted' if new is None else 'made'} {ref}")
            return []
        foreign = await self._foreign(old, new)
        if not foreign:
            return []
        untouched = now.landings == before.landings and now.index == before.index
        if untouched and await git.put_ref(self.root, ref, new=old, old=new):
            repair.done.append(f"moved {ref} to {new[:12]}, a commit stomper did not make")
            return [f"{ref} {old} {new}"]
        listed = ", ".join(commit[:12] for commit in foreign[:5])
        repair.left.append(f"{ref} holds commits stomper did not make: {listed}")
        return []

    async def _restore_status(
        self, before: Snapshot, status: Mapping[str, str], case: Path, repair: _Repair
    ) -> None:
        """Put back the checkout's paths whose state git knows: untracked files that were
        not there (moved into the quarantine), paths that were committed, paths whose
        working tree was their index entry (from the blob), an index entry alone."""
        from_head, entries, rewrite, removed = [], [], [], []
        for path in sorted(before.status.keys() | status.keys()):
            old = before.status.get(path)
            record = status.get(path)
            now_stat = _stat(self.root / path)
            if old is not None and old[0] == record and old[1] == now_stat:
                continue
            file = self.root / path
            if old is None and record == "?":
                _keep(file, case / "checkout" / path, move=True)
                repair.kept = True
                removed.append(path)
                continue
            if old is None:
                _keep(file, case / "checkout" / path)
                repair.kept = repair.kept or file.exists()
                from_head.append(path)
                continue
            kind, *fields = old[0].split(" ")
            if kind == "1" and fields[0][1] == ".":
                mode, blob = fields[3], fields[6]
                _keep(file, case / "checkout" / path)
                repair.kept = repair.kept or file.exists()
                entries.append((mode, blob, path))
                if mode != _ZERO_MODE:
                    rewrite.append(path)
                else:
                    _remove(file)
                continue
            if old[1] == now_stat and kind in ("1", "?"):
                # Only the index changed: its entry is put back, the file is left alone.
                mode, blob = (fields[3], fields[6]) if kind == "1" else (_ZERO_MODE, "0" * 40)
                entries.append((mode, blob, path))
                continue
            repair.left.append(f"{path} (it had changes git does not hold, and changed again)")
        if removed:
            repair.done.append(f"made {_listed(removed)} in your checkout")
        if from_head:
            await git.restore_from_head(self.root, from_head)
            repair.done.append(f"changed {_listed(from_head)} in your checkout")
        if entries:
            await git.set_index_entries(self.root, _zero_ids(entries))
            if rewrite:
                await git.write_from_index(self.root, rewrite)
            repair.done.append(f"changed {_listed([path for *_, path in entries])} in your index")


def _report(repair: _Repair, case: Path) -> str:
    parts = []
    if repair.done:
        kept = f" (what it left is kept in {case})" if repair.kept else ""
        parts.append(f"put back: {'; '.join(repair.done)}{kept}")
    if repair.left:
        parts.append(f"NOT put back, see for yourself: {'; '.join(repair.left)}")
    return f"changed your repository outside its workspace: {' | '.join(parts)}"


def _without(refs: Mapping[str, str], ref: str) -> dict[str, str]:
    return {name: oid for name, oid in refs.items() if name != ref}


def _zero_ids(entries: Iterable[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    """Removals as update-index takes them: mode 0 and an id of zeros of any length."""
    return [(mode, "0" * len(blob) if mode == _ZERO_MODE else blob, p) for mode, blob, p in entries]


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:5])
    return shown + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _show(head: bytes | None) -> str:
    if head is None:
        return "deleted"
    return head.decode(errors="replace").strip().removeprefix("ref: ")


def _stat(path: Path) -> tuple[int, ...] | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return (info.st_mode, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _tree_stats(folder: Path) -> list[object]:
    found: list[object] = []
    for directory, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            found.append((directory, name, _stat(Path(directory) / name)))
    return found


def _files_below(folder: Path) -> list[Path]:
    found = []
    for directory, dirs, files in os.walk(folder):
        dirs.sort()
        found += [Path(directory) / name for name in sorted(files)]
    return found


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _file_state(path: Path) -> FileState:
    try:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            return info.st_mode, os.fsencode(os.readlink(path))
        if not stat.S_ISREG(info.st_mode):
            return info.st_mode, b""
        return info.st_mode, path.read_bytes()
    except OSError:
        return None


def _put(path: Path, state: tuple[int, bytes]) -> None:
    """Give ``path`` back its mode and bytes: written beside it and renamed over it, so
    nothing is written through a symlink the agent left there."""
    mode, content = state
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.stomper")
    _remove(partial)
    if stat.S_ISLNK(mode):
        os.symlink(os.fsdecode(content), partial)
    else:
        partial.write_bytes(content)
        partial.chmod(stat.S_IMODE(mode))
    _remove_folder(path)
    os.replace(partial, path)


def _keep(path: Path, into: Path, *, move: bool = False) -> None:
    """Keep what is at ``path`` in the quarantine (moved, or copied; a symlink as one)."""
    if not os.path.lexists(path):
        return
    into.parent.mkdir(parents=True, exist_ok=True)
    if move:
        shutil.move(path, into)
    elif path.is_symlink():
        os.symlink(os.readlink(path), into)
    elif path.is_dir():
        shutil.copytree(path, into, symlinks=True)
    else:
        shutil.copy2(path, into, follow_symlinks=False)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _remove_folder(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
