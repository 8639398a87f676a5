"""``stomper doctor``: is everything stomper needs here, and what to do where it is not."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from stomper import checkpoints, console, git, redaction, sandbox, workspace
from stomper.agents import check, close, load_agent
from stomper.config import Settings, load_settings
from stomper.diagnostics import collectors_named
from stomper.errors import StomperError
from stomper.repository import toplevel_or_none

# `git worktree remove` and `worktree list --porcelain -z` need this version.
MIN_GIT = (2, 36)


async def doctor(cwd: Path, flags: Mapping[str, Any] | None = None) -> int:
    table = Table(show_header=True, show_edge=False, title="stomper doctor", title_justify="left")
    for column in ("check", "result", "what to do"):
        table.add_column(column, overflow="fold")
    ok = True

    def row(check: str, good: bool, result: str, todo: str = "") -> None:
        nonlocal ok
        ok = ok and good
        shown = escape(redaction.redact(result))
        table.add_row(
            check,
            f"[green]ok[/] {shown}" if good else f"[red]no[/] {shown}",
            "" if good else escape(redaction.redact(todo)),
        )

    try:
        version = await git.version()
    except OSError:
        version = ()
    shown = ".".join(map(str, version)) or "not found"
    row("git", bool(version), shown, "install git")
    if version:
        row(
            "git worktrees",
            version >= MIN_GIT,
            f"need {'.'.join(map(str, MIN_GIT))}+",
            "upgrade git",
        )
    root = toplevel_or_none(cwd)
    row(
        "repository",
        root is not None,
        str(root or cwd),
        "run inside a git repository, or pass --repo",
    )
    if root is not None:
        row(
            "commit identity",
            await git.committer_identity(root),
            "user.name and user.email",
            "git config --global user.name NAME; git config --global user.email EMAIL",
        )
    try:
        settings = load_settings(root, dict(flags or {}))
    except StomperError as exc:
        row("configuration", False, str(exc), "fix the value it names")
        console.err.print(table)
        return 1
    redaction.use(redaction.Redaction.of(settings))
    row("configuration", True, f"tools {', '.join(settings.tools)}; agent {settings.agent}")
    for collector in collectors_named(("ruff", "mypy")):
        info = await collector.info()
        needed = collector.name in settings.tools
        row(
            collector.name,
            info.found or not needed,
            info.problem or info.version or ("not found" + ("" if needed else " (not configured)")),
            info.hint,
        )
    program = await _check_agent(settings, row)
    good, shown = await sandbox.describe(settings.sandbox)
    row("sandbox", good, shown, "see the message")
    room = workspace.memory_room()
    if room is not None:
        row("workspaces", True, f"in memory, {workspace.MEMORY} ({room / 2**30:.1f} GiB free)")
    else:
        where = f"on disk, under .git/stomper/worktrees (no tmpfs at {workspace.MEMORY} with room)"
        row("workspaces", True, where)
    await _check_checkpointer(settings, row)
    if settings.executor == "ray":
        await _check_nodes(settings, program, row)
    console.err.print(table)
    return 0 if ok else 1


async def _check_agent(settings: Settings, row: Callable[..., None]) -> str | None:
    """Check the agent; the program it runs, if it is one (a CLI agent)."""
    try:
        agent = load_agent(settings.agent, settings)
    except StomperError as exc:
        row(f"agent {settings.agent}", False, str(exc), "fix the agent settings")
        return None
    try:
        checked = await check(agent)
    finally:
        await close(agent)
    if checked is None:
        row(f"agent {settings.agent}", True, "built in")
    else:
        good, message = checked
        row(f"agent {settings.agent}", good, message, "see the message")
    program = getattr(agent, "binary", None)
    return program if isinstance(program, str) else None


async def _check_nodes(settings: Settings, program: str | None, row: Callable[..., None]) -> None:
    """Each node of the Ray cluster has what a unit needs: git, the tools, the agent's
    program, and the stomper of this machine."""
    from stomper.cluster import connected, on_every_node

    try:
        async with connected(settings.ray_address) as ray:
            facts = await on_every_node(ray, settings.tools, program)
    except StomperError as exc:
        row("ray", False, str(exc), "see the message")
        return
    here = importlib.metadata.version("stomper")
    row("ray", bool(facts), f"{len(facts)} nodes alive", "start the cluster's nodes")
    for node, found in facts.items():
        missing = [name for name, value in found.items() if value is None]
        stomper = found.get("stomper")
        shown = ", ".join(f"{name} {value}" for name, value in found.items() if value)
        todo = f"install {', '.join(missing)} there" if missing else ""
        if stomper != here:
            todo = (
                todo + "; " if todo else ""
            ) + f"install stomper {here} there (it has {stomper})"
        row(f"node {node}", not todo, shown, todo)


async def _check_checkpointer(settings: Settings, row: Callable[..., None]) -> None:
    url = settings.checkpointer
    if url is None:
        row("checkpointer", True, "SQLite, in each run's journal")
        return
    try:
        await checkpoints.check(url)
    except StomperError as exc:
        row("checkpointer", False, str(exc), "see the message")
        return
    row("checkpointer", True, redaction.mask_url(url))
