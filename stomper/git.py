"""Every git call stomper makes, each a small named function."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import proc
from stomper.errors import ToolError
from stomper.unit import quote_path, unquote_path

GIT = "git"
# Output that is parsed must not depend on the user's colour, pager or diff drivers.
_BASE = (
    GIT,
    "-c",
    "core.quotepath=off",
    "-c",
    "color.ui=false",
    "--no-pager",
    "--literal-pathspecs",
)


async def git(
    root: Path,
    *args: str,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> proc.Completed:
    try:
        return await proc.run((*_BASE, *args), cwd=root, stdin=stdin, env=env, check=check)
    except FileNotFoundError as exc:
        raise _missing(exc, root) from None


def git_sync(root: Path, *args: str, check: bool = True) -> proc.Completed:
    try:
        return proc.run_sync((*_BASE, *args), cwd=root, check=check)
    except FileNotFoundError as exc:
        raise _missing(exc, root) from None


def _missing(exc: FileNotFoundError, root: Path) -> Exception:
    """git itself missing is for the user to fix; a working directory gone is not."""
    if exc.filename == GIT:
        return ToolError("git is not installed: install git 2.36 or newer")
    return exc


def _text(done: proc.Completed) -> str:
    return done.stdout.decode().strip()


def _split_z(output: bytes) -> list[str]:
    return [part.decode() for part in output.split(b"\0") if part]


def _status_paths(output: bytes) -> list[str]:
    """The paths of ``git status --porcelain=v1 -z`` output, both sides of a rename."""
    records = output.split(b"\0")
    paths: list[str] = []
    index = 0
    while index < len(records):
        record = records[index].decode()
        index += 1
        if len(record) < 4:
            continue
        paths.append(record[3:])
        if record[0] in "RC":  # a rename or copy names its source in the next record
            paths.append(records[index].decode())
            index += 1
    return paths


# Repository facts -------------------------------------------------------------------------


async def version() -> tuple[int, ...]:
    done = await proc.run((GIT, "--version"))
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", done.stdout.decode())
    return tuple(int(part) for part in match.groups() if part) if match else ()


async def toplevel(cwd: Path) -> Path | None:
    done = await git(cwd, "rev-parse", "--show-toplevel", check=False)
    return Path(_text(done)).resolve() if done.returncode == 0 else None


def toplevel_sync(cwd: Path) -> Path | None:
    done = git_sync(cwd, "rev-parse", "--show-toplevel", check=False)
    return Path(_text(done)).resolve() if done.returncode == 0 else None


async def outside_work_tree(cwd: Path) -> str | None:
    """Where ``cwd`` is when it has no working tree: ``bare`` (a bare repository) or
    ``git-dir`` (inside a repository's git directory); None when neither."""
    done = await git(cwd, "rev-parse", "--is-bare-repository", "--is-inside-git-dir", check=False)
    if done.returncode != 0:
        return None
    bare, inside = (done.stdout.decode().split() + ["", ""])[:2]
    return "bare" if bare == "true" else "git-dir" if inside == "true" else None


async def index_problem(root: Path) -> str | None:
    """What git says when it cannot read the index (a corrupt or truncated file); None when
    it can. The pathspec matches no tracked file, so the index is read and nothing listed."""
    done = await git(root, "ls-files", "-z", "--", ".git", check=False)
    if done.returncode == 0:
        return None
    said = done.stderr.decode(errors="replace").strip().removeprefix("fatal: ")
    return " ".join(said.split()) or f"git ls-files exited {done.returncode}"


async def git_dirs(root: Path) -> tuple[Path, Path]:
    """The repository's own git directory and the common one its worktrees share."""
    done = await git(root, "rev-parse", "--absolute-git-dir", "--git-common-dir")
    own, common = done.stdout.decode().splitlines()
    return Path(own), (root / common).resolve()


async def resolve_commit(root: Path, rev: str) -> str | None:
    done = await git(
        root,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{rev}^{{commit}}",
        check=False,
    )
    return _text(done) if done.returncode == 0 else None


async def tree_id(root: Path, commit: str) -> str:
    """The id of ``commit``'s tree."""
    return _text(await git(root, "rev-parse", "--verify", "--end-of-options", f"{commit}^{{tree}}"))


async def ref_target(root: Path, ref: str) -> str | None:
    return await resolve_commit(root, ref)


async def current_branch(root: Path) -> str | None:
    """The full name of the checked-out branch, or None on a detached HEAD."""
    done = await git(root, "symbolic-ref", "--quiet", "HEAD", check=False)
    return _text(done) if done.returncode == 0 else None


async def check_ref_format(root: Path, name: str) -> bool:
    done = await git(root, "check-ref-format", "--branch", name, check=False)
    return done.returncode == 0


async def committer_identity(root: Path) -> bool:
    done = await git(root, "var", "GIT_COMMITTER_IDENT", check=False)
    return done.returncode == 0


async def tracked_modes(root: Path, paths: Sequence[str] = ()) -> dict[str, str]:
    """The tracked files below ``paths`` and the mode the index gives each: ``100644`` and
    ``100755`` for regular files, ``120000`` for symlinks, ``160000`` for submodules."""
    done = await git(root, "ls-files", "-s", "-z", "--full-name", "--", *paths)
    modes = {}
    for record in _split_z(done.stdout):
        meta, path = record.split("\t", 1)
        modes[path] = meta.split()[0]
    return modes


async def tracked_tags(root: Path, paths: Sequence[str]) -> dict[str, str]:
    """The tracked files below ``paths`` and the tag ``git ls-files -t`` gives each: ``H``
    for a file in the working tree, ``S`` for one outside a sparse checkout (skip-worktree),
    and so on."""
    done = await git(root, "ls-files", "-t", "-z", "--full-name", "--", *paths)
    return {
        path: tag for tag, _, path in (record.partition(" ") for record in _split_z(done.stdout))
    }


@dataclass(frozen=True)
class TreeEntry:
    mode: str
    blob: str


async def tree_entries(root: Path, commit: str, paths: Sequence[str] = ()) -> dict[str, TreeEntry]:
    """The blobs of ``commit`` below ``paths`` (all of them when none are named)."""
    done = await git(root, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths)
    entries = {}
    for record in _split_z(done.stdout):
        meta, path = record.split("\t", 1)
        mode, kind, blob = meta.split()
        if kind == "blob":
            entries[path] = TreeEntry(mode, blob)
    return entries


async def path_free(root: Path, commit: str, path: str) -> bool:
    """Whether a file can be created at ``path`` in ``commit``'s tree: nothing is there,
    and no folder it would be in is a file."""
    parts = path.split("/")
    for count in range(1, len(parts) + 1):
        # One path at a time: given several, ls-tree lists what is inside the folders too.
        prefix = "/".join(parts[:count])
        done = await git(root, "ls-tree", "-z", "--full-tree", commit, "--", prefix)
        found = [record.split("\t", 1) for record in _split_z(done.stdout)]
        kinds = [meta.split()[1] for meta, name in found if name == prefix]
        if not kinds:
            return True
        if count == len(parts) or kinds != ["tree"]:
            return False
    return True


async def attributed(root: Path, paths: Sequence[str], names: Sequence[str]) -> set[str]:
    """Those of ``paths`` that any of the attributes ``names`` is set on (``set`` or
    ``true``), as the checkout's ``.gitattributes`` say."""
    found = await _attribute_values(root, paths, names)
    return {path for path, value in found if value in (b"set", b"true")}


async def _attribute_values(
    root: Path, paths: Collection[str], names: Sequence[str]
) -> list[tuple[str, bytes]]:
    """Each of ``paths`` with the value (``set``, ``unset``, ``unspecified`` or a text) of
    each attribute of ``names``, as ``git check-attr`` reads the checkout's attributes."""
    if not paths:
        return []
    query = b"".join(path.encode() + b"\0" for path in paths)
    done = await git(root, "check-attr", "-z", "--stdin", *names, stdin=query)
    fields = done.stdout.split(b"\0")
    return [(fields[at].decode(), fields[at + 2]) for at in range(0, len(fields) - 2, 3)]


async def merge_base(root: Path, one: str, other: str) -> str | None:
    """The best common ancestor of two commits; None when they share no history."""
    done = await git(root, "merge-base", one, other, check=False)
    if done.returncode != 0:
        return None
    return _text(done) or None


_HUNK = re.compile(rb"^@@ -[0-9]+(?:,[0-9]+)? \+([0-9]+)(?:,([0-9]+))? @@")


async def changed_lines(root: Path, since: str, commit: str) -> dict[str, list[tuple[int, int]]]:
    """The lines of each file of ``commit`` that differ from ``since`` (added or changed,
    as first and last line numbers in ``commit``); a file deleted since has none, a new
    file all of its lines. Renames are not followed: a renamed file is new."""
    done = await git(
        root,
        "diff",
        "--no-color",
        "--no-ext-diff",
        "--no-renames",
        "--no-prefix",
        "-U0",
        "--diff-filter=AM",
        since,
        commit,
        "--",
    )
    found: dict[str, list[tuple[int, int]]] = {}
    path: str | None = None
    header = False
    for line in done.stdout.split(b"\n"):
        # An added line of text "++ x" reads "+++ x": names are read in a file's header only.
        if line.startswith(b"diff --git "):
            header = True
        elif header and line.startswith(b"+++ "):
            # git ends a name that holds a space with a tab; a name ending in a tab is quoted.
            name = line[4:].decode(errors="surrogateescape").removesuffix("\t")
            path = None if name == "/dev/null" else unquote_path(name)
            if path is not None:
                found.setdefault(path, [])
            continue
        hunk = _HUNK.match(line)
        if hunk is not None:
            header = False
        if hunk is not None and path is not None:
            first, count = int(hunk[1]), int(hunk[2] if hunk[2] is not None else 1)
            if count:
                found[path].append((first, first + count - 1))
    return found


async def dirty_files(root: Path) -> set[str]:
    """Tracked files whose index or working-tree state differs from HEAD."""
    # --no-optional-locks: a status must never take the user's index lock to refresh it.
    done = await git(
        root, "--no-optional-locks", "status", "--porcelain=v1", "-z", "--untracked-files=no"
    )
    return set(_status_paths(done.stdout))


async def changed_files(root: Path, against: str) -> list[str]:
    """Tracked files whose working-tree state differs from ``against``."""
    done = await git(
        root, "diff", "--name-only", "-z", "--no-renames", "--no-ext-diff", against, "--"
    )
    return _split_z(done.stdout)


# Worktrees --------------------------------------------------------------------------------


def prune_worktrees_sync(root: Path) -> None:
    git_sync(root, "worktree", "prune", check=False)


def release_worktrees_sync(root: Path, folder: Path) -> None:
    """Unregister every worktree below ``folder``, also those whose directory is gone and
    those left locked by a ``worktree add`` that was killed half-way (prune skips those)."""
    done = git_sync(root, "worktree", "list", "--porcelain", "-z", check=False)
    for record in _split_z(done.stdout):
        if record.startswith("worktree "):
            path = Path(record[len("worktree ") :])
            if path.is_relative_to(folder):
                git_sync(root, "worktree", "remove", "--force", "--force", str(path), check=False)


@dataclass(frozen=True)
class WorktreeState:
    head: str | None
    """The commit HEAD is at (None before the first commit)."""
    branch: str | None
    """The checked-out branch's short name; None on a detached HEAD."""
    changed: list[str]
    """Every path the tree differs from HEAD in (index or files), untracked files included,
    both sides of a rename."""


# One status of a tree: where HEAD is, and every path that differs from it.
_STATE = (
    "--no-optional-locks",
    "status",
    "--porcelain=v2",
    "--branch",
    "-z",
    "--untracked-files=all",
    "--ignored=no",
)


async def worktree_state(worktree: Path) -> WorktreeState:
    """Where a worktree's HEAD is and what differs from it: one ``git status``."""
    done = await git(worktree, *_STATE)
    return _worktree_state(done.stdout)


# Fields before the path in a porcelain v2 record, by its first letter: ordinary changes,
# renames and copies (whose source follows in the next record), unmerged paths.
_V2_FIELDS = {"1": 8, "2": 9, "u": 10}


def _worktree_state(output: bytes) -> WorktreeState:
    head: str | None = None
    branch: str | None = None
    changed: list[str] = []
    records = output.split(b"\0")
    index = 0
    while index < len(records):
        record = records[index].decode()
        index += 1
        kind = record[:1]
        if record.startswith("# branch.oid "):
            oid = record.removeprefix("# branch.oid ")
            head = None if oid == "(initial)" else oid
        elif record.startswith("# branch.head "):
            name = record.removeprefix("# branch.head ")
            branch = None if name == "(detached)" else name
        elif kind in ("?", "!"):
            changed.append(record[2:])
        elif kind in _V2_FIELDS:
            changed.append(record.split(" ", _V2_FIELDS[kind])[-1])
            if kind == "2":
                changed.append(records[index].decode())
                index += 1
    return WorktreeState(head, branch, changed)


# Pooled private repositories -------------------------------------------------------------
# A unit's tree is checked and reset through a git directory stomper keeps beside it, named
# explicitly on every call: never one found through the tree's `.git`, which is the agent's.
# Objects are read from the user's object directory. These overrides keep every setting
# that would run a program (a hook, a filesystem monitor) or read another file than the
# tree and the index from taking effect, whoever configured it.
_PRIVATE = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.splitIndex=false",
    "-c",
    "core.untrackedCache=false",
    "-c",
    "core.sparseCheckout=false",
    "-c",
    "submodule.recurse=false",
    "-c",
    "protocol.allow=never",
)


@dataclass(frozen=True)
class PrivateRepo:
    """A unit's tree and the git directory stomper checks it through."""

    git_dir: Path
    tree: Path
    objects: Path
    """The user's object directory, read (never written) by these calls."""


async def _private(repo: PrivateRepo, *args: str) -> proc.Completed:
    return await git(
        repo.tree,
        "--git-dir",
        str(repo.git_dir),
        "--work-tree",
        str(repo.tree),
        *_PRIVATE,
        *args,
        env={"GIT_OBJECT_DIRECTORY": str(repo.objects)},
    )


async def reset_private(repo: PrivateRepo, commit: str) -> None:
    """The tree at ``commit`` with nothing else: untracked and ignored files (nested
    repositories too) removed first, so that none of them (a ``.gitattributes``) has a say
    in the checkout; then tracked files and the index as the commit has them. git never
    looks at a path named ``.git``: the agent's own repository in the tree is left alone."""
    await _private(repo, "clean", "-ffdxq")
    await _private(repo, "checkout", "--detach", "--force", "--quiet", commit, "--")


async def private_state(repo: PrivateRepo) -> WorktreeState:
    """What differs in the tree from stomper's HEAD and index for it: one ``git status``."""
    done = await _private(repo, *_STATE)
    return _worktree_state(done.stdout)


async def write_blob(root: Path, path: str, content: bytes) -> str:
    """Store ``content`` as the blob of ``path`` (through that path's filters); its id."""
    done = await git(root, "hash-object", "-w", "--stdin", f"--path={path}", stdin=content)
    return _text(done)


# Attributes under which git stores a file's bytes other than as they are in the tree.
_CONVERSIONS = ("filter", "text", "eol", "crlf", "ident", "working-tree-encoding")


async def converted_paths(root: Path, paths: Collection[str]) -> set[str]:
    """Those of ``paths`` whose content git may convert on the way into the object store:
    a clean filter, end-of-line conversion, ``ident`` or a working-tree encoding."""
    found = await _attribute_values(root, paths, _CONVERSIONS)
    # "-text" (unset) means binary: stored as it is, like an attribute never given.
    return {path for path, value in found if value not in (b"unspecified", b"unset")}


async def hash_path(worktree: Path, path: str) -> str | None:
    """The blob id the worktree's ``path`` would get (through its filters), written nowhere;
    None when there is no such file."""
    done = await git(worktree, "hash-object", "--", path, check=False)
    return _text(done) if done.returncode == 0 else None


async def diff_blobs(root: Path, old: str, new: str, path: str) -> str:
    done = await git(
        root,
        "diff",
        "--no-ext-diff",
        "--no-color",
        f"--src-prefix=a/{path}//",
        f"--dst-prefix=b/{path}//",
        old,
        new,
        check=False,
    )
    text = done.stdout.decode(errors="replace")
    return text.replace(f"a/{path}//{old}", f"a/{path}").replace(f"b/{path}//{new}", f"b/{path}")


# Commits and refs -------------------------------------------------------------------------


async def read_tree(root: Path, commit: str, *, index_file: Path) -> None:
    await git(root, "read-tree", commit, env={"GIT_INDEX_FILE": str(index_file)})


async def index_entry(root: Path, path: str, *, index_file: Path | None = None) -> TreeEntry | None:
    env = {"GIT_INDEX_FILE": str(index_file)} if index_file else None
    done = await git(root, "ls-files", "-s", "-z", "--full-name", "--", path, env=env)
    for record in _split_z(done.stdout):
        meta, name = record.split("\t", 1)
        if name == path:
            mode, blob, _stage = meta.split()
            return TreeEntry(mode, blob)
    return None


async def set_index_entry(
    root: Path, path: str, entry: TreeEntry, *, index_file: Path | None = None
) -> None:
    """Put ``entry`` at ``path`` in the index, whether a file was there or not."""
    env = {"GIT_INDEX_FILE": str(index_file)} if index_file else None
    info = f"{entry.mode},{entry.blob},{path}"
    await git(root, "update-index", "--add", "--cacheinfo", info, env=env)


async def remove_index_entry(root: Path, path: str, *, index_file: Path | None = None) -> None:
    """Take ``path`` out of the index (the working tree is left as it is)."""
    env = {"GIT_INDEX_FILE": str(index_file)} if index_file else None
    await git(
        root,
        "update-index",
        "--force-remove",
        "-z",
        "--stdin",
        env=env,
        stdin=path.encode() + b"\0",
    )


async def write_tree(root: Path, *, index_file: Path) -> str:
    return _text(await git(root, "write-tree", env={"GIT_INDEX_FILE": str(index_file)}))


async def commit_tree(root: Path, tree: str, parent: str, message: str) -> str:
    return _text(
        await git(root, "commit-tree", tree, "-p", parent, "-F", "-", stdin=message.encode())
    )


async def read_tree_merge(root: Path, old: str, new: str, *, index_file: Path) -> None:
    """Bring ``index_file`` and the working tree from ``old``'s tree to ``new``'s, as a
    checkout does (``read-tree -m -u``): only files that differ between the two are written,
    and git refuses, writing nothing, when one of those was changed in the checkout."""
    # In C, for the caller reads what git says: a stale entry is told from other refusals.
    env = {"GIT_INDEX_FILE": str(index_file), "LC_ALL": "C", "LANGUAGE": "C"}
    await git(root, "read-tree", "-m", "-u", old, new, env=env)


async def refresh_index(root: Path, *, index_file: Path) -> None:
    """Bring ``index_file``'s stat data up to date with the working tree, as ``git status``
    does (``update-index --refresh``); entries whose files really changed stay as they are."""
    env = {"GIT_INDEX_FILE": str(index_file)}
    await git(root, "update-index", "-q", "--refresh", "--unmerged", env=env, check=False)


async def checkout_paths(root: Path, paths: Sequence[str], *, index_file: Path) -> None:
    """Write ``paths`` from ``index_file`` into the working tree (and refresh their stat)."""
    names = b"".join(path.encode() + b"\0" for path in paths)
    await git(
        root,
        "checkout-index",
        "--force",
        "-z",
        "--stdin",
        stdin=names,
        env={"GIT_INDEX_FILE": str(index_file)},
    )


async def create_ref(root: Path, ref: str, commit: str, *, reason: str) -> bool:
    """Create ``ref`` at ``commit``; False when it exists already."""
    done = await git(root, "update-ref", "-m", reason, ref, commit, "", check=False)
    return done.returncode == 0


async def checkout_index(root: Path, path: str) -> None:
    """Write the index's ``path`` into the working tree (and refresh its stat data)."""
    await git(root, "checkout-index", "--force", "--", path)


async def worktree_differs(root: Path, path: str) -> bool:
    """Whether the working tree's ``path`` differs from the index."""
    done = await git(root, "diff", "--quiet", "--no-ext-diff", "--", path, check=False)
    return done.returncode != 0


@dataclass(frozen=True)
class LoggedCommit:
    sha: str
    run: str
    unit: str
    files: tuple[str, ...]


async def stomper_commits(root: Path, tip: str, since: str) -> list[LoggedCommit]:
    """The commits in ``since..tip`` that carry stomper's trailers, oldest first."""
    trailer = "%(trailers:key=Stomper-{},valueonly,separator=%x20)"
    fmt = "%x1e%H%x1f" + trailer.format("Run") + "%x1f" + trailer.format("Unit") + "%x1f"
    done = await git(
        root,
        "log",
        "--reverse",
        "-z",
        "--no-renames",
        "--name-only",
        f"--format={fmt}",
        f"{since}..{tip}",
    )
    commits = []
    for block in done.stdout.decode().split("\x1e"):
        if not block.strip("\0\n"):
            continue
        sha, run, unit, rest = block.split("\x1f", 3)
        files = tuple(name.strip("\n") for name in rest.split("\0") if name.strip("\n"))
        if run.strip():
            commits.append(LoggedCommit(sha, run.strip(), unquote_path(unit.strip()), files))
    return commits


# Long-lived processes and batched checkout updates, for landing ---------------------------
# A landing must cost milliseconds, not a git process per step: objects are read and refs
# moved through one process each for a whole run, and the checkout follows a whole chain of
# landed commits with one git call.

_CLOSE_WAIT = 5.0
_COMMITTED = [b"start: ok\n", b"prepare: ok\n", b"commit: ok\n"]


async def object_store(root: Path) -> tuple[str, Path]:
    """The repository's object format (``sha1``, ``sha256``) and its object directory."""
    done = await git(root, "rev-parse", "--show-object-format", "--git-path", "objects")
    object_format, objects = done.stdout.decode().splitlines()
    return object_format, root / objects


async def ident(root: Path, variable: str) -> bytes:
    """``GIT_AUTHOR_IDENT`` or ``GIT_COMMITTER_IDENT``, exactly as git would commit it."""
    return (await git(root, "var", variable)).stdout.rstrip(b"\n")


async def config_matching(root: Path, pattern: str) -> dict[str, str]:
    """The configured values whose (lower-case) names match ``pattern``; the last one wins."""
    done = await git(root, "config", "-z", "--get-regexp", pattern, check=False)
    values = {}
    for record in _split_z(done.stdout):
        name, newline, value = record.partition("\n")
        values[name] = value if newline else "true"  # a bare name is a boolean set to true
    return values


async def changed_paths(root: Path, paths: Sequence[str]) -> set[str]:
    """Those of ``paths`` whose index or working-tree state differs from HEAD."""
    if not paths:
        return set()
    done = await git(
        root,
        "--no-optional-locks",
        "status",
        "--porcelain=v1",
        "-z",
        "--untracked-files=no",
        "--",
        *paths,
    )
    return set(_status_paths(done.stdout))


@dataclass(frozen=True)
class NewFile:
    """A file as a commit to write has it."""

    path: str
    mode: str
    blob: str | None
    """None: the commit deletes the file."""
    content: bytes | None = None
    """The blob's bytes, when it is to be stored with the commit."""


@dataclass(frozen=True)
class NewCommit:
    """A commit to write that changes some files of the one before it."""

    files: tuple[NewFile, ...]
    message: str


async def import_commits(
    root: Path,
    tip: str,
    commits: Sequence[NewCommit],
    *,
    author: bytes,
    committer: bytes,
    scratch_ref: str,
) -> list[str]:
    """Write ``commits``, each on the one before and the first on ``tip``, through one
    ``git fast-import``: their ids. Their blobs are stored already, or stored with them
    (a :class:`ToolError` if git names one otherwise).

    git builds the trees and writes everything as one pack (a handful of objects it leaves
    loose: ``fastimport.unpackLimit``). No ref is written: the commits are made on
    ``scratch_ref``, which is removed before the end, so git never creates it.
    """
    stream = bytearray(b"feature done\n")
    marks = len(commits)
    stored: list[tuple[int, str]] = []
    for mark, commit in enumerate(commits, 1):
        blobs: list[bytes | None] = []
        for file in commit.files:
            blob = file.blob.encode() if file.blob is not None else None
            if file.blob is not None and file.content is not None:
                marks += 1
                stored.append((marks, file.blob))
                stream += b"blob\nmark :%d\ndata %d\n%s\n" % (
                    marks,
                    len(file.content),
                    file.content,
                )
                blob = b":%d" % marks
            blobs.append(blob)
        message = commit.message.encode()
        stream += b"commit %s\nmark :%d\nauthor %s\ncommitter %s\ndata %d\n%s\n" % (
            scratch_ref.encode(),
            mark,
            author,
            committer,
            len(message),
            message,
        )
        if mark == 1:
            stream += b"from %s\n" % tip.encode()
        for file, blob in zip(commit.files, blobs, strict=True):
            path = quote_path(file.path).encode("utf-8", "surrogateescape")
            if blob is None:
                stream += b"D %s\n" % path
            else:
                stream += b"M %s %s %s\n" % (file.mode.encode(), blob, path)
        stream += b"\n"
    asked = [*range(1, len(commits) + 1), *(mark for mark, _ in stored)]
    for mark in asked:
        stream += b"get-mark :%d\n" % mark
    stream += b"reset %s\nfrom %s\n\ndone\n" % (scratch_ref.encode(), b"0" * len(tip))
    argv = ("fast-import", "--quiet", "--done", "--cat-blob-fd=1")
    done = await git(root, *argv, stdin=bytes(stream))
    ids = done.stdout.decode().split()
    if len(ids) != len(asked):
        raise ToolError(f"git fast-import named {len(ids)} of the {len(asked)} objects asked")
    for (_, expected), found in zip(stored, ids[len(commits) :], strict=True):
        if found != expected:
            raise ToolError(f"git fast-import stored {found} where {expected} was verified")
    return ids[: len(commits)]


@dataclass(frozen=True)
class Merged:
    """What a three-way merge of two commits made: its tree, and the paths in conflict
    (none: a clean merge)."""

    tree: str
    conflicts: tuple[str, ...]


async def merge_commits(root: Path, ours: str, theirs: str) -> Merged | None:
    """The merge of ``theirs`` into ``ours`` on their merge base, written as a tree and no
    more (``git merge-tree --write-tree``: no ref, index or file changes); None where this
    git cannot merge that way (before 2.38)."""
    argv = ("merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", ours, theirs)
    done = await git(root, *argv, check=False)
    if done.returncode not in (0, 1):
        return None
    tree, *conflicts = [name for name in done.stdout.decode().split("\0") if name]
    return Merged(tree, tuple(dict.fromkeys(conflicts)) if done.returncode == 1 else ())


async def tree_of(
    root: Path, base: str, entries: Mapping[str, TreeEntry | None], *, index_file: Path
) -> str:
    """The tree of ``base`` with ``entries`` put in (None: removed), built in the private
    index ``index_file``: its id."""
    env = {"GIT_INDEX_FILE": str(index_file)}
    await git(root, "read-tree", base, env=env)
    for path, entry in entries.items():
        if entry is None:
            await remove_index_entry(root, path, index_file=index_file)
        else:
            await set_index_entry(root, path, entry, index_file=index_file)
    return await write_tree(root, index_file=index_file)


async def differing_from(root: Path, commit: str, pathspecs: Sequence[str]) -> list[str]:
    """The files of the checkout at ``root`` matching ``pathspecs`` that are not as
    ``commit`` has them: changed (staged or not) or deleted since, or not tracked at all
    (ignored ones too)."""
    magic = "--no-literal-pathspecs"  # pathspecs here may be magic: ":(glob)**/name"
    changed = await git(root, magic, "diff", "--name-only", "-z", commit, "--", *pathspecs)
    others = await git(root, magic, "ls-files", "-z", "--others", "--", *pathspecs)
    return sorted({name.decode() for name in (changed.stdout + others.stdout).split(b"\0") if name})


class _LongLived:
    """One git process kept running and spoken to through its pipes; started when first
    needed, and ended by :meth:`aclose` (safe when it never started)."""

    def __init__(self, root: Path, *args: str) -> None:
        self._root = root
        self._argv = (*_BASE, *args)
        self._process: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self.error = ""
        """What git last said on its way out, when it ended on an error."""

    async def _started(self) -> asyncio.subprocess.Process:
        if self._process is None:
            try:
                self._process = await proc.start(self._argv, cwd=self._root)
            except FileNotFoundError as exc:
                raise _missing(exc, self._root) from None
        return self._process

    async def aclose(self) -> None:
        """End the process at the end of its input and reap it (killed if it lingers)."""
        process, self._process = self._process, None
        if process is None:
            return
        err = await proc.stop(process, wait=_CLOSE_WAIT)
        if process.returncode:
            self.error = err.decode(errors="replace").strip()

    async def _ask(self, process: asyncio.subprocess.Process, line: bytes) -> list[bytes]:
        """Send ``line``; the words of the line git answers (a process that does not answer
        is ended, and raised as broken). The caller holds the lock."""
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(line + b"\n")
            await process.stdin.drain()
            said = (await process.stdout.readline()).split()
        except OSError as exc:
            raise await self._broken(process) from exc
        if not said:
            raise await self._broken(process)
        return said

    async def _broken(self, process: asyncio.subprocess.Process) -> proc.CalledProcessError:
        """The process stopped answering: end it; the error to raise."""
        await proc.kill_group(process)
        await self.aclose()
        return proc.CalledProcessError(self._argv, process.returncode or -1, self.error.encode())


class ObjectReader(_LongLived):
    """``git cat-file --batch``: objects read by id, one process for a whole run.

    It finds objects written after it started (loose ones are looked up on each read).
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root, "cat-file", "--batch")

    async def read(self, oid: str) -> tuple[bytes, bytes] | None:
        """The kind and body of object ``oid``, or None when the repository lacks it."""
        async with self._lock:
            process = await self._started()
            header = await self._ask(process, oid.encode())
            if header[1:] == [b"missing"]:
                return None
            assert process.stdout is not None
            try:
                _, kind, size = header
                body = await process.stdout.readexactly(int(size) + 1)
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                raise await self._broken(process) from exc
            return kind, body[:-1]


class RefReader(_LongLived):
    """``git cat-file --batch-check``: the commit a ref is at, read afresh each time (git
    looks at the ref's file and the packed refs on each read), one process for a whole run."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "cat-file", "--batch-check=%(objectname) %(objecttype)")

    async def commit_of(self, ref: str) -> str | None:
        """The commit ``ref`` points at; None when there is no such ref (or no commit)."""
        async with self._lock:
            said = await self._ask(await self._started(), ref.encode())
            return said[0].decode() if said[1:] == [b"commit"] else None


class RefTransactions(_LongLived):
    """``git update-ref --stdin``: compare-and-swap ref moves, one process for a whole run.

    Each move is one whole transaction (start, update, prepare, commit) written at once, so
    the ref's lock is only ever held inside git for the moment of the move, never between
    moves. git ends the process when a transaction fails; the next move starts another.
    """

    def __init__(self, root: Path, *, reason: str) -> None:
        super().__init__(root, "update-ref", "-m", reason, "--stdin")

    async def move(self, ref: str, new: str, old: str) -> bool:
        """Move ``ref`` from ``old`` to ``new``; False when it was not at ``old`` (or is
        locked by another process): :attr:`error` then says what git said."""
        transaction = f"start\nupdate {ref} {new} {old}\nprepare\ncommit\n".encode()
        async with self._lock:
            process = await self._started()
            assert process.stdin is not None and process.stdout is not None
            try:
                process.stdin.write(transaction)
                await process.stdin.drain()
                replies = [await process.stdout.readline() for _ in _COMMITTED]
            except OSError:
                replies = []
            if replies == _COMMITTED:
                return True
            await self._broken(process)
            return False


class PendingMove:
    """``git update-ref --stdin`` started ahead of a move, and told one compare-and-swap,
    which git makes when its input ends (it takes no lock before).

    :meth:`commit` ends the input, and the ref moves; :meth:`cancel` kills git first, and
    nothing moves. Should stomper die once git was told, its end of the pipe closes, and git
    moves the ref all the same: what was done in the checkout for the move is not left
    without it. Started before it is needed, git has read its settings by then, and a move
    costs what one of :class:`RefTransactions` does.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self.error = ""
        """What git said when the move failed."""

    @classmethod
    async def start(cls, root: Path, *, reason: str) -> PendingMove:
        try:
            process = await proc.start((*_BASE, "update-ref", "-m", reason, "--stdin"), cwd=root)
        except FileNotFoundError as exc:
            raise _missing(exc, root) from None
        return cls(process)

    @property
    def alive(self) -> bool:
        return self._process.returncode is None

    async def tell(self, ref: str, new: str, old: str) -> None:
        """The move to make: ``ref`` from ``old`` to ``new``."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"update {ref} {new} {old}\n".encode())
        await self._process.stdin.drain()

    async def commit(self) -> bool:
        """End git's input and wait for git; whether it moved the ref (nothing to move, when
        it was told none)."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        _, err = await self._process.communicate()
        self.error = err.decode(errors="replace").strip()
        return self._process.returncode == 0

    async def cancel(self) -> None:
        """Kill git before its input ends: the ref stays where it is."""
        await proc.kill_group(self._process)


# The user's repository as the tripwire sees it -------------------------------------------
# Read and repaired around the calls of an agent that runs without a sandbox: these calls
# must not run what the agent may have planted (a hook, a monitor) nor trust a cache of the
# index it may have forged.
_WATCHFUL = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "core.untrackedCache=false",
)


async def _watchful(
    root: Path, *args: str, stdin: bytes | None = None, check: bool = True
) -> proc.Completed:
    return await git(root, *_WATCHFUL, *args, stdin=stdin, check=check)


async def all_refs(root: Path) -> dict[str, str]:
    """Every ref of the repository and the object it names."""
    done = await _watchful(root, "for-each-ref", "--format=%(objectname) %(refname)")
    refs = {}
    for line in done.stdout.decode(errors="surrogateescape").splitlines():
        oid, _, name = line.partition(" ")
        refs[name] = oid
    return refs


async def status_records(root: Path) -> dict[str, str]:
    """``git status --porcelain=v2`` of the checkout, untracked files listed one by one,
    renames not paired: each path with its record (without the path)."""
    done = await _watchful(
        root,
        "--no-optional-locks",
        "status",
        "--porcelain=v2",
        "-z",
        "--untracked-files=all",
        "--ignored=no",
        "--no-renames",
    )
    records = {}
    for record in done.stdout.decode(errors="surrogateescape").split("\0"):
        kind = record[:1]
        if kind == "?":
            records[record[2:]] = "?"
        elif kind in _V2_FIELDS:
            *fields, path = record.split(" ", _V2_FIELDS[kind])
            records[path] = " ".join(fields)
    return records


async def hooks_path(root: Path) -> Path | None:
    """The folder ``core.hooksPath`` names, if it is set."""
    done = await git(root, "config", "--path", "--get", "core.hooksPath", check=False)
    value = _text(done)
    if done.returncode != 0 or not value:
        return None
    return (root / value).resolve()


async def is_ancestor(root: Path, ancestor: str, commit: str) -> bool:
    done = await _watchful(root, "merge-base", "--is-ancestor", ancestor, commit, check=False)
    return done.returncode == 0


async def commits_between(root: Path, since: str, tip: str) -> list[str]:
    """The commits reachable from ``tip`` but not from ``since``."""
    done = await _watchful(root, "rev-list", f"{since}..{tip}", "--")
    return done.stdout.decode().split()


async def set_head(root: Path, value: bytes) -> None:
    """Point HEAD again at what its file held (a branch, or a commit)."""
    text = value.decode(errors="surrogateescape").strip()
    if text.startswith("ref: "):
        await _watchful(root, "symbolic-ref", "HEAD", text.removeprefix("ref: "))
    else:
        await _watchful(root, "update-ref", "--no-deref", "HEAD", text)


async def put_ref(root: Path, ref: str, new: str | None, old: str | None) -> bool:
    """Compare-and-swap ``ref`` from ``old`` (None: it must not exist) to ``new`` (None:
    delete it); False when it was not at ``old``."""
    if new is None:
        done = await _watchful(root, "update-ref", "-d", ref, old or "", check=False)
    else:
        done = await _watchful(root, "update-ref", ref, new, old or "", check=False)
    return done.returncode == 0


async def set_index_entries(root: Path, entries: Sequence[tuple[str, str, str]]) -> None:
    """Set (or, with mode ``000000``, remove) index entries: ``(mode, blob, path)`` each."""
    lines = b"".join(
        f"{mode} {blob}\t".encode() + path.encode(errors="surrogateescape") + b"\0"
        for mode, blob, path in entries
    )
    await _watchful(root, "update-index", "-z", "--index-info", stdin=lines)


async def write_from_index(root: Path, paths: Sequence[str]) -> None:
    """Write ``paths`` from the index into the working tree."""
    names = b"".join(path.encode(errors="surrogateescape") + b"\0" for path in paths)
    await _watchful(root, "checkout-index", "--force", "-z", "--stdin", stdin=names)


async def restore_from_head(root: Path, paths: Sequence[str]) -> None:
    """Set ``paths`` in the index and working tree to what HEAD has (removed where HEAD
    has none of them)."""
    names = b"".join(path.encode(errors="surrogateescape") + b"\0" for path in paths)
    await _watchful(
        root,
        "restore",
        "--source=HEAD",
        "--staged",
        "--worktree",
        "--pathspec-from-file=-",
        "--pathspec-file-nul",
        stdin=names,
    )
