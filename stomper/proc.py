"""The one door to child processes: argv tuples, a timeout that kills the whole group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#  Git's own variables leak into hooks and aliases; a child pointed at another
#  repository through them would edit the wrong tree.
_LEAKY_GIT_VARIABLES = ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_PREFIX")


class CalledProcessError(RuntimeError):
    """A child exited with an unexpected code; ``str()`` shows the command and its output."""

    def __init__(self, argv: Sequence[str], returncode: int, output: bytes) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.output = output
        super().__init__(argv, returncode, output)

    def __str__(self) -> str:
        text = self.output.decode(errors="replace").rstrip()
        shown = "\n".join(f"    {line}" for line in text.splitlines()) or "    (no output)"
        return f"command: {' '.join(self.argv)}\nreturn code: {self.returncode}\noutput:\n{shown}"


class ProcessTimeout(RuntimeError):
    """A child ran past its timeout; it and its whole process group were killed."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        self.argv = tuple(argv)
        self.timeout = timeout
        super().__init__(f"timed out after {timeout:g}s: {' '.join(self.argv)}")


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: bytes
    stderr: bytes


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY_GIT_VARIABLES}
    if extra:
        env.update(extra)
    return env


async def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
    ok_codes: Sequence[int] = (0,),
) -> Completed:
    """Run ``argv`` and return its output.

    The child gets a process group of its own, so a timeout or a cancellation kills it and
    everything it started: nothing it spawned can go on editing files after we gave up.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=child_env(env),
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await asyncio.wait_for(proc.communicate(stdin), timeout)
    except TimeoutError:
        await _kill_group(proc)
        raise ProcessTimeout(argv, timeout or 0.0) from None
    except BaseException:
        await _kill_group(proc)
        raise
    returncode = proc.returncode if proc.returncode is not None else -1
    if check and returncode not in ok_codes:
        raise CalledProcessError(argv, returncode, stdout + stderr)
    return Completed(returncode, stdout, stderr)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Reap the child so no zombie is left; shielded from a second cancellation.
    await asyncio.shield(proc.wait())


def run_sync(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> Completed:
    """The blocking twin of :func:`run`, for code that runs outside the event loop."""
    try:
        done = subprocess.run(
            list(argv),
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            start_new_session=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ProcessTimeout(argv, timeout or 0.0) from None
    if check and done.returncode != 0:
        raise CalledProcessError(argv, done.returncode, done.stdout + done.stderr)
    return Completed(done.returncode, done.stdout, done.stderr)
