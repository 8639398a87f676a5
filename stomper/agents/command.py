"""CLI coding agents run as child processes: Claude Code, Codex, Aider, Cursor, or any command.

One call of :meth:`CommandAgent.fix` is one attempt: the agent's command runs once in the
unit's tree and edits the file there, inside the sandbox of :mod:`stomper.sandbox` where the
machine has one. When it exits, everything it started is killed with it. The prompt never
travels as an argument, since
Linux caps a single argument at 128 KiB (``MAX_ARG_STRLEN``) and a prompt for a big file
passes that. It goes to the child's stdin, or, when the command names ``{prompt_file}``,
into a file in a private temporary folder outside the worktree: any new file inside the
worktree would be a change outside the unit.

The command is an argv template; these placeholders are replaced inside each argument, in
one pass (a file name that holds a placeholder is not expanded again):

- ``{file}``: the unit's file, relative to the worktree (the child's working directory);
- ``{prompt_file}``: a file holding the prompt (the prompt then does not go to stdin);
- ``{scratch_dir}``: a private temporary folder outside the worktree, removed afterwards,
  for whatever the agent would otherwise leave in the worktree (history files, logs).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from stomper import proc
from stomper.agents import AgentOutcome, AgentTask, AttemptFailed
from stomper.agents.prompt import task_prompt
from stomper.errors import AgentError
from stomper.sandbox import Sandbox, resolve, state_paths

if TYPE_CHECKING:
    from stomper.config import Settings

FILE = "{file}"
PROMPT_FILE = "{prompt_file}"
SCRATCH_DIR = "{scratch_dir}"
_PLACEHOLDER = re.compile("|".join(re.escape(name) for name in (FILE, PROMPT_FILE, SCRATCH_DIR)))

# What of a failed agent's output goes back into feedback and reasons.
_TAIL_LINES = 30
_TAIL_CHARS = 3000
_VERSION_TIMEOUT = 30.0


@dataclass(frozen=True)
class Preset:
    """How one known CLI agent is run without a terminal, editing files without asking."""

    head: tuple[str, ...]
    """The binary and its subcommand; ``--model`` goes right after these."""
    tail: tuple[str, ...]
    """The rest of the argv template."""
    install: str
    """What to run when the binary is missing."""
    state: tuple[str, ...] = ()
    """Its own files and folders under the home folder, which it may write in a sandbox
    (a trailing ``*`` matches by prefix)."""


PRESETS: Mapping[str, Preset] = {
    # Print mode reads the prompt from stdin when no prompt argument is given. acceptEdits
    # lets it edit files unasked; anything else that needs permission (Bash) is refused in
    # print mode, and git through Bash is denied outright even where settings allow Bash.
    "claude": Preset(
        ("claude",),
        (
            "-p",
            "--permission-mode",
            "acceptEdits",
            "--output-format",
            "text",
            "--disallowedTools",
            "Bash(git:*)",
        ),
        install="npm install -g @anthropic-ai/claude-code",
        state=(".claude", ".claude.json", ".claude.json.backup", ".config/claude"),
    ),
    # `exec` is read-only unless told otherwise; workspace-write lets it edit the worktree
    # and keeps git metadata read-only. `-` reads the instructions from stdin.
    "codex": Preset(
        ("codex", "exec"),
        ("--sandbox", "workspace-write", "--skip-git-repo-check", "--color", "never", "-"),
        install="npm install -g @openai/codex",
        state=(".codex",),
    ),
    # Aider commits every edit (and any dirty file first) and adds .aider* to .gitignore
    # unless told not to; its history files would land in the worktree's root. --no-git
    # keeps it away from git entirely and the history goes to the scratch folder.
    "aider": Preset(
        ("aider",),
        (
            "--message-file",
            PROMPT_FILE,
            "--yes-always",
            "--no-git",
            "--no-auto-commits",
            "--no-dirty-commits",
            "--chat-history-file",
            f"{SCRATCH_DIR}/aider.chat.history.md",
            "--input-history-file",
            f"{SCRATCH_DIR}/aider.input.history",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--no-pretty",
            "--no-stream",
            FILE,
        ),
        install="python -m pip install aider-install && aider-install",
        state=(".aider*",),
    ),
    # Print mode only proposes edits unless --force lets its tools run; the prompt is
    # read from stdin when no prompt argument is given.
    "cursor": Preset(
        ("cursor-agent",),
        ("-p", "--force", "--output-format", "text"),
        install="curl https://cursor.com/install -fsS | bash",
        state=(".cursor", ".config/cursor"),
    ),
}


def render(
    template: Sequence[str], *, file: str, prompt_file: Path | str, scratch_dir: Path | str
) -> tuple[str, ...]:
    """The argv of one run: the placeholders of ``template`` replaced inside each argument.

    Arguments are replaced one by one, never joined and split again, so a file name with
    spaces or quotes stays one argument. A name starting with ``-`` is passed as ``./-name``
    so that no agent mistakes it for an option.
    """
    if file.startswith("-"):
        file = f"./{file}"
    values = {FILE: file, PROMPT_FILE: str(prompt_file), SCRATCH_DIR: str(scratch_dir)}
    return tuple(
        _PLACEHOLDER.sub(lambda found: values[found.group()], argument) for argument in template
    )


def split_template(command: str) -> tuple[str, ...]:
    """Split a user's command template the way a POSIX shell would, without running one."""
    try:
        return proc.split_command(
            command, setting="--agent-cmd", example="the agent's command, e.g. 'my-agent {file}'"
        )
    except ValueError as exc:
        raise AgentError(str(exc)) from None


class CommandAgent:
    """A coding agent that is a program: run once per attempt, in the unit's tree.

    ``template`` is the argv with the placeholders of :func:`render`. The prompt goes to
    the child's stdin unless an argument names ``{prompt_file}``. ``sandbox`` is the mode of
    :func:`stomper.sandbox.resolve`, found out by :meth:`ready` (or the first call).
    Everything the agent started is killed when it exits, and a run that takes longer than
    ``timeout`` seconds is killed with it, so nothing it started edits files after stomper
    read them.
    """

    sees_tree = True
    """As an agent of tasks, it reads the files in its tree itself."""
    reports_tokens = False
    answer_format: str | None = None

    def __init__(
        self,
        template: Sequence[str],
        *,
        name: str = "command",
        timeout: float = 600.0,
        install: str | None = None,
        env: Mapping[str, str] | None = None,
        sandbox: str = "off",
        state: Sequence[str] = (),
    ) -> None:
        if not template:
            raise AgentError("the agent's command is empty")
        if timeout <= 0:
            raise AgentError(f"the agent's timeout must be positive, got {timeout:g}")
        self.template = tuple(template)
        self.name = name
        self.timeout = timeout
        self.install = install
        self.env = dict(env or {})
        self.sandbox_mode = sandbox
        self.state = tuple(state)
        self._sandbox: Sandbox | None = None

    @classmethod
    def from_settings(cls, preset: str, settings: Settings) -> CommandAgent:
        """The agent named ``preset`` (``claude``, ``codex``, ``aider``, ``cursor``, or
        ``command`` for ``settings.agent_cmd``), configured from the run's settings."""
        if preset == "command":
            if not settings.agent_cmd:
                raise AgentError(
                    "--agent command needs the agent's command: pass --agent-cmd "
                    "'my-agent --prompt {prompt_file} {file}' (or set STOMPER_AGENT_CMD, "
                    "or agent_cmd in [tool.stomper])"
                )
            template = split_template(settings.agent_cmd)
            return cls(
                template, name="command", timeout=settings.agent_timeout, sandbox=settings.sandbox
            )
        known = PRESETS.get(preset)
        if known is None:
            raise AgentError(
                f"unknown CLI agent {preset!r}: choose from {', '.join([*PRESETS, 'command'])}"
            )
        model = ("--model", settings.model) if settings.model else ()
        return cls(
            (*known.head, *model, *known.tail),
            name=preset,
            timeout=settings.agent_timeout,
            install=known.install,
            sandbox=settings.sandbox,
            state=known.state,
        )

    @property
    def binary(self) -> str:
        return self.template[0]

    @property
    def uncontained(self) -> bool:
        """Whether it runs without a sandbox (known after :meth:`ready`)."""
        return self._sandbox is not None and not self._sandbox.contained

    @property
    def prompt_on_stdin(self) -> bool:
        return not any(PROMPT_FILE in argument for argument in self.template)

    def argv(
        self, file: str, *, prompt_file: Path | str, scratch_dir: Path | str
    ) -> tuple[str, ...]:
        """The command that works on ``file`` (relative to the worktree)."""
        return render(self.template, file=file, prompt_file=prompt_file, scratch_dir=scratch_dir)

    async def fix(self, task: AgentTask) -> AgentOutcome:
        """One attempt: run the command once; a timeout or a failure raises AttemptFailed."""
        prompt = task_prompt(task.unit.path, task.unit.diagnostics, feedback=task.feedback)
        return await self.work(task.workspace, prompt, file=task.unit.path)

    async def work(self, workspace: Path, prompt: str, *, file: str) -> AgentOutcome:
        """One attempt at what ``prompt`` asks, in the tree at ``workspace`` (``{file}`` is
        ``file``): the command runs once; a timeout or a failure raises AttemptFailed."""
        executable = self._require_binary()
        contained = await self._contained()
        with _scratch(prompt) as (scratch_dir, prompt_file):
            argv = self.argv(file, prompt_file=prompt_file, scratch_dir=scratch_dir)
            wrapped = contained.wrap(
                (executable, *argv[1:]),
                workspace=workspace,
                scratch=scratch_dir,
                state=state_paths(os.environ.get("HOME"), self.state),
            )
            try:
                done = await proc.run(
                    wrapped,
                    cwd=workspace,
                    stdin=prompt.encode() if self.prompt_on_stdin else None,
                    env=self.env,
                    timeout=self.timeout,
                    check=False,
                    reap=True,
                )
            except proc.ProcessTimeout:
                raise AttemptFailed(
                    f"the {self.name} agent did not finish within {self.timeout:g}s and was "
                    "stopped, with everything it started; make a smaller, more direct change"
                ) from None
            except OSError as exc:
                raise AgentError(
                    f"cannot run the {self.name} agent ({self.binary}): {exc}"
                ) from exc
        if done.returncode != 0:
            raise AttemptFailed(
                f"the {self.name} agent exited with code {done.returncode}; "
                f"the end of its output:\n{tail(done.stdout + done.stderr)}"
            )
        return AgentOutcome(note=_last_line(done.stdout))

    async def ready(self) -> None:
        """Before a run: the agent's program must be there, or no unit can work; the
        sandbox is found out (``bwrap`` without one is refused)."""
        self._require_binary()
        await self._contained()

    async def _contained(self) -> Sandbox:
        if self._sandbox is None:
            self._sandbox = await resolve(self.sandbox_mode, agent=self.name)
        return self._sandbox

    async def check(self) -> tuple[bool, str]:
        """For ``stomper doctor``: whether the binary is on PATH, and its version."""
        found = _which(self.binary)
        if found is None:
            return False, self._missing()
        if self.install is None:
            # A user's own command is not run just to ask its version.
            return True, f"{self.binary} found at {found}"
        try:
            done = await proc.run((found, "--version"), timeout=_VERSION_TIMEOUT, check=False)
        except (OSError, proc.ProcessTimeout) as exc:
            return False, f"{self.binary} at {found} does not answer --version: {exc}"
        output = (done.stdout or done.stderr).decode(errors="replace").strip()
        version = output.splitlines()[0] if output else "no version printed"
        if done.returncode != 0:
            return False, f"{self.binary} --version failed ({done.returncode}): {version}"
        return True, version

    def _require_binary(self) -> str:
        found = _which(self.binary)
        if found is None:
            raise AgentError(self._missing())
        return found

    def _missing(self) -> str:
        how = f"install it with `{self.install}`" if self.install else "check --agent-cmd"
        return f"the {self.name} agent's program {self.binary!r} is not on PATH: {how}"


def tail(output: bytes, *, lines: int = _TAIL_LINES, chars: int = _TAIL_CHARS) -> str:
    """The last lines of a child's output, for a reason or the next attempt's feedback."""
    text = output.decode(errors="replace").rstrip()
    if not text:
        return "(no output)"
    shown = "\n".join(text.splitlines()[-lines:])
    return shown[-chars:]


def _last_line(output: bytes) -> str | None:
    lines = [line.strip() for line in output.decode(errors="replace").splitlines()]
    last = next((line for line in reversed(lines) if line), None)
    return last[:300] if last else None


def _which(binary: str) -> str | None:
    if os.sep in binary:
        # The child runs in the worktree: a relative path must not be resolved there.
        path = os.path.abspath(binary)
        return path if os.access(path, os.X_OK) and not os.path.isdir(path) else None
    return shutil.which(binary)


@contextlib.contextmanager
def _scratch(prompt: str) -> Iterator[tuple[Path, Path]]:
    """A private folder outside every worktree holding the prompt; removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="stomper-agent-") as folder:
        scratch_dir = Path(folder)
        prompt_file = scratch_dir / "prompt.md"
        prompt_file.write_text(prompt, encoding="utf-8")
        yield scratch_dir, prompt_file
