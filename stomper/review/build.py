"""A directory's build as the gate of its edits, and the bisection of a build they break.

The build is the project's own command (``build_cmd``; ``{dir}`` is the directory), run by
:class:`~stomper.workflow.build.Builder` in a tree of its own at the target's tip.

When the edits of a directory break its build, the edits that break it are found as a merge
queue finds the changes of a failed batch that break it: halving, on what is proven to build
so far, down to the first edit whose addition fails, then the rest in one build on top. A
build known to fail is never run twice. One culprit among k edits costs ceil(log2(k)) builds
and one more for the rest, and the edits kept are the largest set so found that builds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from stomper import proc
from stomper.errors import ConfigError
from stomper.workflow.build import Built, Edited


def split_build(command: str) -> tuple[str, ...]:
    """``build_cmd`` as an argv template; a malformed one is the user's to mend."""
    try:
        return proc.split_command(
            command, setting="build_cmd", example="the command that builds a directory"
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass
class Bisected:
    """What bisection kept, and why it left the rest out."""

    kept: list[Edited] = field(default_factory=list)
    """The largest set of edits found to build together (in the order given)."""
    culprits: dict[str, Built] = field(default_factory=dict)
    """Each edit left out, by path, with the build that failed with it."""
    builds: int = 0


async def bisect(
    build: Callable[[Sequence[Edited]], Awaitable[Built]],
    edits: Sequence[Edited],
    failed: Built,
) -> Bisected:
    """Find the edits that break the build: ``failed`` is the build of all of ``edits``,
    ``build`` builds a set of them.

    The first culprit is found by halving the edits' prefixes: what is kept builds, the
    whole does not, so some edit is the first whose prefix fails. Those before it are kept
    (their prefix built), and the edits after it are tried in one build on top: when they
    build, that culprit was the only one."""
    found = Bisected()
    rest, failing = list(edits), failed
    while rest:
        if len(rest) == 1:
            found.culprits[rest[0].path] = failing
            break
        # The prefix of `passing` edits builds (none: what is kept); that of `failed_at` fails.
        passing, failed_at = 0, len(rest)
        while failed_at - passing > 1:
            middle = (passing + failed_at) // 2
            outcome = await build([*found.kept, *rest[:middle]])
            found.builds += 1
            if outcome.passed:
                passing = middle
            else:
                failed_at, failing = middle, outcome
        found.culprits[rest[failed_at - 1].path] = failing
        found.kept += rest[: failed_at - 1]
        rest = rest[failed_at:]
        if not rest:
            break
        outcome = await build([*found.kept, *rest])
        found.builds += 1
        if outcome.passed:
            found.kept += rest
            break
        failing = outcome
    return found
