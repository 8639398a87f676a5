"""A fake CLI coding agent, for tests and benchmarks of stomper's CLI agents.

Run it as ``python -m stomper.testing.fake_cli_agent [--mode MODE] [--prompt-file P]
[--delay SECONDS] FILE`` in the tree that holds FILE; it reads the prompt from ``P``, or
from stdin when no ``--prompt-file`` is given. Modes:

- ``fix``: apply ruff's safe fixes to FILE under the tree's own ruff configuration;
- ``noop``: change nothing;
- ``hang``: start a grandchild that rewrites FILE after ``--rewrite-after`` seconds, then
  sleep forever: only killing the whole process group keeps FILE as it was;
- ``other-file``: fix FILE and also edit another tracked file;
- ``new-file``: fix FILE and also create a file (:data:`NEW_FILE`);
- ``suppress``: append ``# noqa`` to every line ruff flags in FILE;
- ``fail``: print a message and exit with code 3;
- ``task``: do what the prompt's ``fake-agent:`` lines say (:func:`follow`), as an agent of
  ``stomper run`` would do what its task asks.

When the environment names a file in ``STOMPER_FAKE_AGENT_LOG``, every call appends one
line to it, FILE first, then tab-separated ``key=value`` fields: the size of the prompt it
received, the size of its own argv, the mode, its pid, (for ``hang``) the grandchild's pid
and the prompt file it read. :func:`read_log` parses that file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

LOG_ENV = "STOMPER_FAKE_AGENT_LOG"
MODES = ("fix", "noop", "hang", "other-file", "new-file", "suppress", "fail", "task")
TASK_MARK = "fake-agent:"
NEW_FILE = "fake_agent_notes.txt"
REWRITTEN = "# rewritten by the fake agent's grandchild after stomper gave up\n"
FAIL_CODE = 3


@dataclass(frozen=True)
class LogEntry:
    """One call of the fake agent, as its log recorded it."""

    file: str
    prompt_bytes: int
    argv_bytes: int
    mode: str
    pid: int
    child_pid: int | None
    prompt_file: str | None
    """Where the prompt was read from; None for stdin."""
    task: str | None = None
    """``task`` mode: the task the prompt is of."""
    started: float | None = None
    """``task`` mode: when it began and ended its work (``time.time()``)."""
    ended: float | None = None


def read_log(path: Path) -> list[LogEntry]:
    """The calls recorded in the log at ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        file, *pairs = line.split("\t")
        fields = dict(pair.split("=", 1) for pair in pairs)
        child = fields.get("child", "-")
        entries.append(
            LogEntry(
                file=file,
                prompt_bytes=int(fields["prompt_bytes"]),
                argv_bytes=int(fields["argv_bytes"]),
                mode=fields["mode"],
                pid=int(fields["pid"]),
                child_pid=None if child == "-" else int(child),
                prompt_file=fields.get("prompt_file") or None,
                task=fields.get("task") or None,
                started=float(fields["started"]) if fields.get("started") else None,
                ended=float(fields["ended"]) if fields.get("ended") else None,
            )
        )
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    file = Path(args.file)
    prompt = Path(args.prompt_file).read_bytes() if args.prompt_file else sys.stdin.buffer.read()
    if args.mode == "task":
        started = time.time()
        code = follow(prompt.decode("utf-8"), delay=args.delay)
        task = _task_of(prompt.decode("utf-8"))
        _log(args.file, len(prompt), args.mode, None, args.prompt_file, task, started)
        return code
    child = _spawn_rewriter(file, args.rewrite_after) if args.mode == "hang" else None
    _log(args.file, len(prompt), args.mode, child, args.prompt_file)
    if args.delay:
        time.sleep(args.delay)
    if args.mode == "hang":
        while True:
            time.sleep(3600)
    if args.mode == "fail":
        print(f"fake agent: failing on purpose on {args.file}", file=sys.stderr)
        return FAIL_CODE
    if args.mode in ("fix", "other-file", "new-file"):
        _ruff_fix(file)
    if args.mode == "other-file":
        other = _another_tracked_file(file)
        with other.open("a", encoding="utf-8") as handle:
            handle.write("# edited by the fake agent, outside its unit\n")
    elif args.mode == "new-file":
        Path(NEW_FILE).write_text("a file the fake agent made\n", encoding="utf-8")
    elif args.mode == "suppress":
        _suppress(file)
    print(f"fake agent: {args.mode} on {args.file} ({len(prompt)} prompt bytes)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stomper.testing.fake_cli_agent",
        description="A fake CLI coding agent for stomper's tests and benchmarks.",
    )
    parser.add_argument("--mode", choices=MODES, default="fix")
    parser.add_argument("--prompt-file", help="read the prompt here instead of from stdin")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait first")
    parser.add_argument(
        "--rewrite-after",
        type=float,
        default=3.0,
        help="hang: seconds after which the grandchild rewrites FILE",
    )
    parser.add_argument("file", metavar="FILE")
    return parser


class Files(Protocol):
    """The files a task script works on: a tree on disk, or the files a prompt shows."""

    def read(self, path: str) -> str:
        """The text of ``path``; FileNotFoundError when there is none."""
        ...

    def write(self, path: str, text: str) -> None: ...

    def delete(self, path: str) -> None: ...


class Disk:
    """The files of the tree the agent runs in (its current directory)."""

    def read(self, path: str) -> str:
        return Path(path).read_text(encoding="utf-8")

    def write(self, path: str, text: str) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def delete(self, path: str) -> None:
        Path(path).unlink()


class ScriptFailed(Exception):
    """A task script stopped: a ``fail`` line (``code`` :data:`FAIL_CODE`) or one it cannot
    read (2)."""

    def __init__(self, message: str, code: int = FAIL_CODE) -> None:
        super().__init__(message)
        self.code = code


def follow(prompt: str, *, delay: float = 0.0) -> int:
    """Do what the prompt's ``fake-agent:`` lines say (:func:`run_script`) in the tree of
    the current directory; the exit code."""
    if delay:
        time.sleep(delay)
    try:
        run_script(prompt, Disk())
    except ScriptFailed as failed:
        print(f"fake agent: {failed}", file=sys.stderr)
        return failed.code
    print(f"fake agent: did what the task said ({len(prompt)} prompt bytes)")
    return 0


def run_script(prompt: str, files: Files) -> None:
    """Do what the prompt's ``fake-agent:`` lines say to ``files``, in their order.

    ``write PATH: TEXT`` (``\\n`` is a line break; the folders are made), ``append PATH:
    TEXT``, ``replace PATH: OLD => NEW``, ``delete PATH``, ``sleep SECONDS``, ``fail
    MESSAGE`` (:class:`ScriptFailed`), ``signal PATH`` (an empty file, anywhere: a test
    waits for it). A line that begins ``once`` is done on a first attempt only, one that
    begins ``retry`` only when the prompt says what went wrong the last time.
    """
    from stomper.tasks.prompt import FEEDBACK_HEADING

    retried = FEEDBACK_HEADING in prompt
    for line in prompt.splitlines():
        line = line.strip()
        if not line.startswith(TASK_MARK):
            continue
        action = line[len(TASK_MARK) :].strip()
        when, _, rest = action.partition(" ")
        if when in ("once", "retry"):
            if (when == "retry") != retried:
                continue
            action = rest
        verb, _, rest = action.partition(" ")
        if verb == "sleep":
            time.sleep(float(rest))
        elif verb == "fail":
            raise ScriptFailed(rest)
        elif verb == "delete":
            files.delete(rest)
        elif verb == "signal":
            Path(rest).touch()  # for a test waiting outside (and a sandbox that lets it)
        else:
            path, _, text = rest.partition(": ")
            text = text.replace("\\n", "\n")
            if verb == "write":
                files.write(path, text + "\n")
            elif verb == "append":
                try:
                    before = files.read(path)
                except FileNotFoundError:
                    before = ""
                files.write(path, before + text + "\n")
            elif verb == "replace":
                old, _, new = text.partition(" => ")
                files.write(path, files.read(path).replace(old, new))
            else:
                raise ScriptFailed(f"no such action {verb!r}", 2)


def _task_of(prompt: str) -> str:
    first = prompt.splitlines()[0] if prompt else ""
    return first.removeprefix("# Task ").strip() if first.startswith("# Task ") else ""


def _log(
    file: str,
    prompt_bytes: int,
    mode: str,
    child: int | None,
    prompt_file: str | None,
    task: str = "",
    started: float | None = None,
) -> None:
    log = os.environ.get(LOG_ENV)
    if not log:
        return
    argv_bytes = sum(len(os.fsencode(argument)) + 1 for argument in sys.orig_argv)
    fields = {
        "prompt_bytes": prompt_bytes,
        "argv_bytes": argv_bytes,
        "mode": mode,
        "pid": os.getpid(),
        "child": "-" if child is None else child,
        "prompt_file": prompt_file or "",
    }
    if started is not None:
        fields |= {"task": task, "started": started, "ended": time.time()}
    line = "\t".join([file, *(f"{key}={value}" for key, value in fields.items())])
    # One write of one line in append mode: concurrent calls do not interleave their lines.
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


def _spawn_rewriter(file: Path, after: float) -> int:
    """A grandchild in the agent's process group that rewrites ``file`` later, as a tool
    the agent started might; a fork, so it stays in the group and needs no exec."""
    pid = os.fork()
    if pid:
        return pid
    try:
        time.sleep(after)
        file.write_text(REWRITTEN, encoding="utf-8")
    finally:
        os._exit(0)


def _ruff_fix(file: Path) -> None:
    from stomper import proc

    argv = (_ruff(), "check", "--fix-only", "--exit-zero", "--no-cache", "--quiet")
    proc.run_sync((*argv, "--", str(file)))


def _suppress(file: Path) -> None:
    from stomper import proc

    argv = (_ruff(), "check", "--output-format", "json", "--exit-zero", "--no-fix", "--no-cache")
    done = proc.run_sync((*argv, "--", str(file)))
    flagged = {int(item["location"]["row"]) for item in json.loads(done.stdout or b"[]")}
    lines = file.read_text(encoding="utf-8").splitlines(keepends=True)
    for number in flagged:
        if 0 < number <= len(lines):
            text = lines[number - 1]
            ending = text[len(text.rstrip("\r\n")) :] or "\n"
            lines[number - 1] = text.rstrip("\r\n") + "  # noqa" + ending
    file.write_text("".join(lines), encoding="utf-8")


def _ruff() -> str:
    from stomper.diagnostics.ruff import ruff_binary

    binary = ruff_binary()
    if binary is None:
        print("fake agent: ruff is not installed", file=sys.stderr)
        raise SystemExit(2)
    return binary


def _another_tracked_file(file: Path) -> Path:
    from stomper import git

    done = git.git_sync(Path.cwd(), "ls-files", "-z")
    mine = file.resolve()
    for name in done.stdout.decode().split("\0"):
        if name and (Path.cwd() / name).resolve() != mine:
            return Path(name)
    print("fake agent: no other tracked file to edit", file=sys.stderr)
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())
