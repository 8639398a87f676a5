"""The one door to child processes: argv tuples, a timeout that kills the whole group."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#  Git's own variables leak into hooks and aliases; a child pointed at another
#  repository through them would edit the wrong tree.
_LEAKY_GIT_VARIABLES = ("GIT_DIR", "GIT_INDEX_FILE", "GIT_WORK_TREE", "GIT_PREFIX")
# How long a reaping child may take to end its descendants when asked, and how long the
# pipes are read after the child exited (only a process that escaped its group holds them).
_TERM_GRACE = 5.0
_PIPE_GRACE = 2.0


def split_command(command: str, *, setting: str, example: str) -> tuple[str, ...]:
    """A user's command string (``test_cmd``, ``build_cmd``, ``--agent-cmd``) split as a
    POSIX shell would split it, never run by one; a ValueError that says what is wrong with
    it, naming ``setting`` and what to give instead (``example``)."""
    try:
        argv = tuple(shlex.split(command))
    except ValueError as exc:
        raise ValueError(f"cannot parse {setting} {command!r}: {exc}") from None
    if not argv:
        raise ValueError(f"{setting} is empty: give {example}")
    return argv


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
    reap: bool = False,
) -> Completed:
    """Run ``argv`` and return its output.

    The child gets a process group of its own, so a timeout or a cancellation kills it and
    everything it started: nothing it spawned can go on editing files after we gave up.

    With ``reap``, the group is killed as soon as the child itself exits, so nothing it left
    running in the background writes afterwards, and a timeout first asks the child to end
    (SIGTERM) before the group is killed: a child that reaps its descendants (a sandbox, or
    :data:`stomper.sandbox.REAPER`) then ends those that left the group too.
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
    talk = _communicate_reaped(proc, stdin) if reap else proc.communicate(stdin)
    try:
        stdout, stderr = await asyncio.wait_for(talk, timeout)
    except TimeoutError:
        await _end(proc, reap)
        raise ProcessTimeout(argv, timeout or 0.0) from None
    except BaseException:
        await _end(proc, reap)
        raise
    returncode = proc.returncode if proc.returncode is not None else -1
    if check and returncode not in ok_codes:
        raise CalledProcessError(argv, returncode, stdout + stderr)
    return Completed(returncode, stdout, stderr)


async def _communicate_reaped(
    proc: asyncio.subprocess.Process, stdin: bytes | None
) -> tuple[bytes, bytes]:
    """Talk to the child until it exits, kill its group, then read what is left of the
    pipes (a straggler outside the group that holds them is given up on after a while)."""
    talk = asyncio.ensure_future(proc.communicate(stdin))
    try:
        await _exited(proc)
        _kill_group_of(proc.pid)
        done, _ = await asyncio.wait([talk], timeout=_PIPE_GRACE)
        if not done:
            talk.cancel()
            return b"", b""
        return talk.result()
    finally:
        if not talk.done():
            talk.cancel()
            await asyncio.gather(talk, return_exceptions=True)


async def _exited(proc: asyncio.subprocess.Process) -> None:
    """Until the child itself has exited. ``Process.wait()`` (3.11) waits for its pipes to
    close too, which a process it left behind keeps open: the exit is learnt from a pidfd
    (Linux). Without one, it is learnt when the pipes close."""
    if proc.returncode is not None:
        return
    try:
        fd = os.pidfd_open(proc.pid)
    except ProcessLookupError:
        return  # exited and reaped already (asyncio's watcher may reap it at once)
    except (AttributeError, OSError):
        await proc.wait()
        return
    loop = asyncio.get_running_loop()
    gone: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        if not gone.done():
            gone.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await gone
    finally:
        loop.remove_reader(fd)
        os.close(fd)


async def _end(proc: asyncio.subprocess.Process, reap: bool) -> None:
    """Kill a child and its group; a reaping child is asked first, so it can end the
    descendants that left the group."""
    if reap and proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(proc.wait()), _TERM_GRACE)
    await kill_group(proc)
    _kill_group_of(proc.pid)


def _kill_group_of(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """Kill a child and everything it started, and reap it."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    # Reap the child so no zombie is left; shielded from a second cancellation.
    await asyncio.shield(proc.wait())


async def start(
    argv: Sequence[str], *, cwd: Path | str | None = None, keep_stderr: bool = True
) -> asyncio.subprocess.Process:
    """Start a child to be spoken to through its pipes for a while (a long-lived server).

    It gets a process group of its own: a Ctrl-C meant for stomper must not end it half-way;
    :func:`stop` ends it. Its stderr is read only at the end, so a child that logs as it
    goes must not keep it (``keep_stderr=False``): a full pipe would stall it.
    """
    return await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if keep_stderr else subprocess.DEVNULL,
        start_new_session=True,
    )


async def stop(process: asyncio.subprocess.Process, *, wait: float) -> bytes:
    """End a child from :func:`start` at the end of its input, or kill its group when it
    lingers past ``wait`` seconds; what it wrote to stderr."""
    assert process.stdin is not None
    process.stdin.close()
    try:
        _, err = await asyncio.wait_for(process.communicate(), wait)
    except TimeoutError:
        await kill_group(process)
        _, err = await process.communicate()
    return err or b""


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
