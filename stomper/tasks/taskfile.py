"""The task file: what ``stomper run`` is asked to do, read and checked.

``tasks.toml`` (or ``.json``, ``.yaml``/``.yml``) holds an optional ``defaults`` table, whose
keys every task takes unless it says otherwise, and a list of tasks (``[[task]]``; ``task``
or ``tasks`` in JSON and YAML). A task has an ``id`` (unique, ``[A-Za-z0-9._-]+``), a
``prompt`` or a ``prompt_file`` (from the task file's folder), the ``files`` it may change,
create or delete (:mod:`stomper.tasks.paths`), the ``reads`` it shares with others, the
``depends_on`` ids that must land first, and its ``agent``, ``verify`` command,
``max_attempts``, ``timeout`` (seconds for the whole task) and budget (``max_calls``,
``max_tokens``, ``max_cost``).

What is wrong with the file as a file (it cannot be read, a key is unknown, a value of the
wrong type) is a :class:`~stomper.errors.ConfigError`, one line; what is wrong with the
tasks together (a cycle, an unknown id) is the plan's to find (:mod:`stomper.tasks.plan`).
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stomper import proc
from stomper.budget import Limits
from stomper.errors import ConfigError
from stomper.tasks.paths import BadPattern, Pattern, patterns

_ID = r"^[A-Za-z0-9._-]+$"
SUFFIXES = (".toml", ".json", ".yaml", ".yml")


@dataclass(frozen=True)
class Task:
    """One declared task, with the defaults it takes filled in."""

    id: str
    prompt: str
    files: tuple[Pattern, ...]
    reads: tuple[Pattern, ...] = ()
    depends_on: tuple[str, ...] = ()
    agent: str | None = None
    verify: str | None = None
    max_attempts: int = 3
    timeout: float | None = None
    max_calls: int | None = None
    """Agent calls the task may make in all (:mod:`stomper.budget`); None: any."""
    max_tokens: int | None = None
    max_cost: float | None = None
    """Tokens its model's questions and answers may hold in all, and what they may cost
    (dollars); None: any."""

    @property
    def limits(self) -> Limits:
        return Limits(self.max_calls, self.max_tokens, self.max_cost)

    @property
    def title(self) -> str:
        """The prompt's first line: what the task's commit says it did."""
        return next((line.strip() for line in self.prompt.splitlines() if line.strip()), self.id)


class _Keys(BaseModel):
    """The keys a task, or the defaults, may have."""

    model_config = ConfigDict(extra="forbid", strict=True)

    prompt: str | None = None
    prompt_file: str | None = None
    files: list[str] | None = None
    reads: list[str] | None = None
    depends_on: list[str] | None = None
    agent: str | None = None
    verify: str | None = None
    max_attempts: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)
    max_calls: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)

    @field_validator("timeout", "max_cost", mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value


class _Task(_Keys):
    id: str = Field(pattern=_ID)


def load(path: Path) -> list[Task]:
    """The tasks of the file at ``path``, in its order."""
    data = _read(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: the task file must hold a table of tasks, not {_kind(data)}")
    unknown = sorted(set(data) - {"defaults", "task", "tasks"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key {unknown[0]!r} (a task file holds `defaults` and `task`)"
        )
    if "task" in data and "tasks" in data:
        raise ConfigError(f"{path}: give the tasks as `task` or as `tasks`, not both")
    listed = data.get("task", data.get("tasks", []))
    if not isinstance(listed, list) or not listed:
        raise ConfigError(f"{path}: no tasks: add one with [[task]], an id and a prompt")
    defaults = _checked(_Keys, data.get("defaults", {}), path, "defaults")
    folder = path.parent
    return [
        _task(_checked(_Task, entry, path, f"task {number}"), defaults, folder, path, number)
        for number, entry in enumerate(listed, 1)
    ]


def _read(path: Path) -> Any:
    if path.suffix not in SUFFIXES:
        raise ConfigError(
            f"{path}: a task file is .toml, .json or .yaml, not {path.suffix or 'without a suffix'}"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no task file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the task file {path}: {exc}") from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, yaml.YAMLError) as exc:
        said = " ".join(str(exc).split())
        raise ConfigError(f"{path} does not parse: {said}") from None


def _checked(model: type[_Keys], value: Any, path: Path, where: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: {where} must be a table, not {_kind(value)}")
    try:
        return model.model_validate(dict(value))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        named = f" ({value['id']})" if isinstance(value.get("id"), str) else ""
        if error["type"] == "extra_forbidden":
            raise ConfigError(f"{path}: {where}{named}: unknown key {key!r}") from None
        if error["type"] == "missing":
            raise ConfigError(f"{path}: {where}{named}: {key} is missing") from None
        if error["type"] == "string_pattern_mismatch" and key == "id":
            raise ConfigError(
                f"{path}: {where}{named}: an id is letters, digits, '.', '_' and '-' only"
            ) from None
        message = error["msg"].removeprefix("Value error, ")
        got = error.get("input")
        raise ConfigError(f"{path}: {where}{named}: {key}: {message} (got {got!r})") from None


def _task(entry: _Task, defaults: _Keys, folder: Path, path: Path, number: int) -> Task:
    where = f"{path}: task {number} ({entry.id})"

    def given(key: str) -> Any:
        value = getattr(entry, key)
        return value if value is not None else getattr(defaults, key)

    prompt, prompt_file = entry.prompt, entry.prompt_file
    if prompt is not None and prompt_file is not None:
        raise ConfigError(f"{where}: give a prompt or a prompt_file, not both")
    if prompt is None and prompt_file is None:
        prompt, prompt_file = defaults.prompt, defaults.prompt_file
    if prompt_file is not None:
        prompt = _prompt_from(folder / prompt_file, where)
    if not prompt or not prompt.strip():
        raise ConfigError(f"{where}: the prompt is empty: say what the task is to do")
    files = given("files")
    if not files:
        raise ConfigError(f"{where}: files is missing: name the files the task may change")
    verify = given("verify")
    if verify is not None:
        try:
            proc.split_command(verify, setting="verify", example="the command, e.g. 'pytest -q'")
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    try:
        return Task(
            id=entry.id,
            prompt=prompt,
            files=patterns(files),
            reads=patterns(given("reads") or []),
            depends_on=tuple(given("depends_on") or ()),
            agent=given("agent"),
            verify=verify,
            max_attempts=given("max_attempts") or 3,
            timeout=given("timeout"),
            max_calls=given("max_calls"),
            max_tokens=given("max_tokens"),
            max_cost=given("max_cost"),
        )
    except BadPattern as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _prompt_from(path: Path, where: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no prompt_file at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read the prompt_file {path}: {exc}") from None


def _kind(value: Any) -> str:
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "a list"
    return f"{type(value).__name__} {value!r}"[:60]
