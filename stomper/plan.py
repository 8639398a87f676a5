"""Collect the diagnostics in scope and plan one unit per file."""

from __future__ import annotations

import stat
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stomper import git
from stomper.diagnostics import Collector, Diagnostic, select, unreadable
from stomper.errors import ToolError
from stomper.repository import Repository
from stomper.unit import Status, Unit, UnitResult

PYTHON_SUFFIXES = (".py", ".pyi")


@dataclass(frozen=True)
class Scope:
    paths: tuple[str, ...] = ()
    """Repository-relative files or directories; empty means the whole repository."""
    changed_against: str | None = None
    """Only files whose working tree differs from this commit."""
    max_files: int | None = None


REGULAR = ("100644", "100755")
_KINDS = {"120000": "a symlink", "160000": "a submodule"}


@dataclass(frozen=True)
class Plan:
    units: tuple[Unit, ...]
    skipped: tuple[UnitResult, ...]
    codes: frozenset[str] = frozenset()
    """Every code the tools reported in scope, targeted or not."""
    left_out: tuple[Diagnostic, ...] = ()
    """Selected diagnostics of tools the agent cannot fix: no unit is made for them."""


@dataclass(frozen=True)
class Files:
    """The tracked Python files in scope: those that may be units, and those that may not,
    with why."""

    regular: list[str]
    other: dict[str, str]


async def scope_files(repo: Repository, scope: Scope) -> Files:
    """The tracked Python files in scope; only regular files in the index and in the working
    tree may be units (a symlink's target is another file, a submodule another repository,
    and nothing is written through either)."""
    pathspecs = [path for path in scope.paths if path != "."]
    modes = await git.tracked_modes(repo.root, pathspecs)
    if scope.changed_against is not None:
        changed = set(await git.changed_files(repo.root, scope.changed_against))
        modes = {path: mode for path, mode in modes.items() if path in changed}
    regular: list[str] = []
    other: dict[str, str] = {}
    for path, mode in sorted(modes.items()):
        if not path.endswith(PYTHON_SUFFIXES):
            continue
        why = _not_regular(repo.root / path, mode)
        if why is None:
            regular.append(path)
        elif why:
            other[path] = why
    return Files(regular, other)


def _not_regular(file: Path, mode: str) -> str | None:
    """Why the tracked ``file`` may not be a unit ("" when it is gone from the working
    tree: nothing to check), or None when it may."""
    if mode not in REGULAR:
        kind = _KINDS.get(mode, f"of mode {mode}")
        return f"is {kind} in the repository: stomper edits regular files only"
    try:
        info = file.lstat()
    except FileNotFoundError:
        return ""
    except PermissionError:
        return None  # in a folder that cannot be read: the tools say they cannot read it
    except OSError as exc:
        return f"cannot be read: {exc.strerror}"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file in your checkout: stomper edits regular files only"
    return None


async def ensure_tools(collectors: Sequence[Collector]) -> None:
    for collector in collectors:
        info = await collector.info()
        if not info.found:
            raise ToolError(info.problem or f"{collector.name} is not installed: {info.hint}")


@dataclass(frozen=True)
class Findings:
    """What the tools found in the files in scope."""

    scoped: Files
    found: list[Diagnostic]


async def collect_findings(
    repo: Repository, collectors: Sequence[Collector], scope: Scope
) -> Findings:
    """Every finding of ``collectors`` in the files in scope."""
    scoped = await scope_files(repo, scope)
    found: list[Diagnostic] = []
    for collector in collectors:
        found += await collector.collect(
            repo.root, scoped.regular, cache_dir=repo.state.cache_dir(collector.name)
        )
    return Findings(scoped, found)


async def make_plan(
    repo: Repository,
    collectors: Sequence[Collector],
    scope: Scope,
    *,
    codes: tuple[Sequence[str], Sequence[str]] = ((), ()),
    tools: frozenset[str] | None = None,
    findings: Findings | None = None,
) -> Plan:
    """Units for the files in scope that have targeted diagnostics: selected ones of the
    ``tools`` the agent can fix (None: of any tool); the others are left out. The findings
    are collected here unless given (:func:`collect_findings`).

    A file with uncommitted changes is never a unit: it becomes a skipped result, so the
    user's own work is not touched.
    """
    if findings is None:
        findings = await collect_findings(repo, collectors, scope)
    scoped, found = findings.scoped, findings.found
    files = scoped.regular
    by_file: defaultdict[str, list[Diagnostic]] = defaultdict(list)
    wanted = set(files)
    for diag in found:
        if diag.path not in wanted:
            raise ToolError(f"{diag.tool} reported a file outside the scope: {diag.path}")
        by_file[diag.path].append(diag)
    chosen, ignored = codes
    dirty = await git.dirty_files(repo.root)
    entries = await git.tree_entries(repo.root, repo.head, sorted(by_file)) if by_file else {}
    units: list[Unit] = []
    left_out: list[Diagnostic] = []
    skipped = [
        UnitResult(path, Status.SKIPPED, (), reason=f"{path} {why}")
        for path, why in scoped.other.items()
    ]
    for path in sorted(by_file):
        baseline = tuple(by_file[path])
        selected = select(baseline, select=chosen, ignore=ignored)
        targeted = tuple(d for d in selected if tools is None or d.tool in tools)
        cannot = next((why for diag in baseline if (why := unreadable(diag)) is not None), None)
        if cannot is not None:
            skipped.append(
                UnitResult(path, Status.SKIPPED, targeted, remaining=targeted, reason=cannot)
            )
            continue
        left_out += [d for d in selected if tools is not None and d.tool not in tools]
        if not targeted:
            continue
        if path in dirty or path not in entries:
            skipped.append(
                UnitResult(
                    path,
                    Status.SKIPPED,
                    targeted,
                    remaining=targeted,
                    reason="the file has uncommitted changes: commit or stash them to include it",
                )
            )
            continue
        if scope.max_files is not None and len(units) >= scope.max_files:
            break
        entry = entries[path]
        units.append(Unit(len(units), path, repo.head, targeted, baseline, entry.blob, entry.mode))
    codes_found = frozenset(diag.code for diag in found)
    return Plan(tuple(units), tuple(skipped), codes_found, tuple(left_out))
