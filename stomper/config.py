"""Settings: ``[tool.stomper]`` in pyproject.toml < ``STOMPER_*`` variables < flags."""

from __future__ import annotations

import os
import tomllib
import urllib.parse
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    PyprojectTomlConfigSettingsSource,
    SettingsConfigDict,
)

from stomper.checkpoints import is_postgres_url
from stomper.diagnostics import TOOL_NAMES
from stomper.errors import ConfigError
from stomper.redaction import endpoint_urls, mask_setting, mask_url

_pyproject: ContextVar[Path | None] = ContextVar("stomper_pyproject", default=None)

CodeList = Annotated[list[str], NoDecode]

FLAGS = {
    "tools": "--tool",
    "select": "--select",
    "ignore": "--ignore",
    "max_parallel_files": "--max-parallel-files",
    "agent": "--agent",
    "unsafe_fixes": "--unsafe-fixes",
    "branch": "--branch",
    "max_attempts": "--max-attempts",
    "model": "--model",
    "base_url": "--base-url",
    "agent_cmd": "--agent-cmd",
    "agent_timeout": "--agent-timeout",
    "test_cmd": "--test-cmd",
    "allow_suppressions": "--allow-suppressions",
    "checkpointer": "--checkpointer",
    "executor": "--executor",
    "ray_address": "--ray-address",
    "review.persona": "--persona",
    "review.max_findings": "--max-findings",
    "review.min_severity": "--min-severity",
    "review.reflect": "--reflect",
}
"""The flag of each setting that has one, as error messages name it."""


class ReviewSettings(BaseModel):
    """``[tool.stomper.review]``: what ``stomper review`` looks at and how much it says."""

    model_config = ConfigDict(extra="forbid")

    persona: str = "general"
    """general, security, performance, or the path of a persona's TOML file."""
    max_findings: int = Field(default=5, ge=1, le=1000)
    """The most findings a file keeps: the most severe and confident."""
    min_severity: Literal["error", "warning", "note"] | None = None
    """The least severe finding kept; unset, the persona's own floor."""
    reflect: bool = False
    """Ask a second, short question of each file's findings: how sure is the model (0-10)."""
    reflect_threshold: int = Field(default=6, ge=0, le=10)
    """With ``reflect``: a finding scored under this is left out."""
    chunk_lines: int = Field(default=400, ge=50, le=100_000)
    """A file of more lines is reviewed in parts of whole definitions, one request each."""
    include: list[str] = Field(default_factory=list)
    """Globs of the paths to review (all, when empty); ``*`` crosses folders."""
    exclude: list[str] = Field(default_factory=list)
    """Globs of paths never reviewed."""
    apply: bool = False
    """Land the model's edits that the build proves (``build_cmd``)."""
    build_cmd: str | None = None
    """The command that builds a directory (``{dir}`` is its path), run where its edits
    are applied; exit 0 is a pass."""
    build_attempts: int = Field(default=1, ge=0, le=10)
    """Rounds in which a failed build's output goes back to the model before bisection."""
    build_timeout: float = Field(default=900.0, gt=0)
    """Seconds one build may take; one that takes longer fails."""
    max_parallel_builds: int = Field(default=1, ge=1, le=64)
    """Builds of different directories run at once."""
    group_by: Literal["dir", "file", "repo"] = "dir"
    """What is built and landed whole: a directory's files, each file, or the repository."""
    commit_per: Literal["file", "dir"] = "file"
    """A landed group is one commit per file, or one for the whole group."""


class Price(BaseModel):
    """What a model's tokens cost, in US dollars per million: ``[tool.stomper.prices]``
    maps a model's name to ``{ input = 2.5, output = 10.0 }``."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return (tokens_in * self.input + tokens_out * self.output) / 1_000_000


class Settings(BaseSettings):
    """Every setting, with the name it has in ``[tool.stomper]``."""

    model_config = SettingsConfigDict(
        env_prefix="STOMPER_",
        extra="forbid",
        pyproject_toml_table_header=("tool", "stomper"),
        validate_default=True,
    )

    tools: CodeList = Field(default_factory=lambda: ["ruff"])
    select: CodeList = Field(default_factory=list)
    ignore: CodeList = Field(default_factory=list)
    max_parallel_files: int | Literal["auto"] = 4
    """Agents at work at once; ``auto``: as many as the model server takes, found by
    :mod:`stomper.agents.adaptive`, up to ``max_parallel_limit``."""
    max_parallel_limit: int = Field(default=64, ge=1, le=1024)
    agent: str = "autofix"
    unsafe_fixes: bool = False
    branch: str | None = None

    # AI agents
    max_attempts: int = Field(default=3, ge=1, le=20)
    model: str | None = None
    base_url: str | None = Field(default=None, repr=False)
    """An OpenAI-compatible endpoint. It may hold a password: a dump of the settings holds it
    masked."""
    api_key_env: str = "OPENAI_API_KEY"
    """The name of the environment variable that holds the API key (never the key itself)."""
    request_timeout: float = Field(default=120.0, gt=0)
    max_answer_bytes: int = Field(default=1_000_000, ge=1_000)
    """The most a model's answer may hold; a longer one is refused unread, as a failed attempt."""
    agent_timeout: float = Field(default=600.0, gt=0)
    """Seconds one unit's agent may take, all attempts, waits and checks of them included."""
    agent_cmd: str | None = None
    """An argv template for ``--agent command``, with ``{prompt_file}`` and ``{file}``."""
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    """Where CLI agents run: under bubblewrap (``bwrap``), without a sandbox (``off``), or
    under bubblewrap when the machine has a working one (``auto``)."""
    allow_suppressions: bool = False
    test_cmd: str | None = None
    """Run in each unit's worktree after verification; a unit that makes it fail does not land."""
    test_timeout: float = Field(default=900.0, gt=0)

    prices: dict[str, Price] = Field(default_factory=dict)
    """Each model's price, for the cost of a run and its ``max_cost``."""

    review: ReviewSettings = Field(default_factory=ReviewSettings)

    # Where units run
    executor: Literal["local", "ray"] = "local"
    """``ray``: each unit's produce step runs as a Ray task (:mod:`stomper.cluster`);
    landing stays on this machine."""
    ray_address: str | None = None
    """The Ray cluster (``ray://host:10001``, ``host:6379``); unset, ``$RAY_ADDRESS``,
    else a local Ray started for the run."""

    # Durability
    checkpointer: str | None = Field(default=None, repr=False)
    """A ``postgresql://`` URL to keep LangGraph's checkpoints in; unset, the run's journal.
    It may hold a password: a dump of the settings holds it redacted."""

    @field_validator("max_parallel_files", mode="before")
    @classmethod
    def _parallel(cls, value: Any) -> Any:
        if value == "auto":
            return value
        number = value
        if isinstance(value, str) and value.strip().isdigit():
            number = int(value)
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 1024:
            raise ValueError("give a number from 1 to 1024, or auto")
        return number

    @property
    def adaptive(self) -> bool:
        """Whether ``-j auto`` leaves the number of requests at once to the server."""
        return self.max_parallel_files == "auto"

    @property
    def price(self) -> Price | None:
        """The price of ``model``, from ``prices``; None: it has none."""
        return self.prices.get(self.model or "")

    @property
    def parallel(self) -> int:
        """Agents at work at once, at most: ``-j N``, or ``max_parallel_limit`` with auto."""
        if self.max_parallel_files == "auto":
            return self.max_parallel_limit
        return self.max_parallel_files

    @field_validator("tools", "select", "ignore", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("name at least one tool")
        for name in value:
            if name not in TOOL_NAMES:
                raise ValueError(f"unknown tool {name!r}: choose from {', '.join(TOOL_NAMES)}")
        return list(dict.fromkeys(value))

    @field_validator("base_url")
    @classmethod
    def _http_urls(cls, value: str | None) -> str | None:
        if not value:
            return None
        urls = endpoint_urls(value)
        if not urls or not all(_is_http_url(url) for url in urls):
            raise ValueError(
                "give an http:// or https:// URL, such as http://localhost:11434/v1, or "
                "several separated by commas"
            )
        return ",".join(urls)

    @field_validator("checkpointer")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not is_postgres_url(value):
            raise ValueError(
                "give a postgresql:// or postgres:// URL, or leave it unset to keep the "
                "checkpoints in the run's journal"
            )
        return value

    @field_serializer("base_url")
    def _masked_urls(self, value: str | None) -> str | None:
        return None if value is None else mask_setting("base_url", value)

    @field_serializer("checkpointer")
    def _masked(self, value: str | None) -> str | None:
        return None if value is None else mask_url(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Outside a repository there is no project file: a path that does not exist reads empty.
        pyproject = _pyproject.get() or Path("/nonexistent/pyproject.toml")
        return (
            init_settings,
            env_settings,
            PyprojectTomlConfigSettingsSource(settings_cls, pyproject),
        )


def _is_http_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        return (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and not any(char.isspace() for char in url)
            and (parts.port is None or parts.port > 0)
        )
    except ValueError:  # a port that is no number, a bracket left open
        return False


def load_settings(root: Path | None, flags: Mapping[str, Any]) -> Settings:
    """Settings for the repository at ``root``; ``flags`` holds only the flags given."""
    pyproject = root / "pyproject.toml" if root is not None else None
    if pyproject is not None and pyproject.is_file():
        _check_table(pyproject)
    given = {key: value for key, value in flags.items() if value is not None}
    token = _pyproject.set(pyproject)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, given)) from None
    finally:
        _pyproject.reset(token)


def _check_table(pyproject: Path) -> None:
    """Refuse a project file that does not parse, or whose ``[tool.stomper]`` is no table."""
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {pyproject}: {exc}") from None
    tool = data.get("tool", {})
    table = tool.get("stomper", {}) if isinstance(tool, dict) else {}
    if not isinstance(tool, dict) or not isinstance(table, dict):
        name, value = ("tool", tool) if not isinstance(tool, dict) else ("tool.stomper", table)
        raise ConfigError(
            f"invalid configuration: {name} in {pyproject} is {value!r}, not a table: "
            "write stomper's settings under a [tool.stomper] header"
        )


def _describe(exc: ValidationError, flags: Mapping[str, Any]) -> str:
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"]) if error["loc"] else "settings"
    if error["type"] == "extra_forbidden":
        table, _, name = key.rpartition(".")
        where = f"[tool.stomper.{table}]" if table else "[tool.stomper]"
        return f"invalid configuration: unknown key {name!r} in {where}"
    message = error["msg"].removeprefix("Value error, ")
    given = error.get("input")
    # A malformed base URL is shown as given, unless it holds a user part.
    if isinstance(given, str) and (key == "checkpointer" or key == "base_url" and "@" in given):
        given = mask_url(given)
    return f"invalid configuration: {key}: {message} (got {given!r}, set by {_source(key, flags)})"


def _source(key: str, flags: Mapping[str, Any]) -> str:
    """Where the value of ``key`` came from: the flag, the variable, or the project file."""
    table, _, name = key.partition(".")
    if key in flags or (name and isinstance(flags.get(table), Mapping) and name in flags[table]):
        return FLAGS.get(key, key)
    variable = f"STOMPER_{table.upper()}"
    if any(given.upper() == variable for given in os.environ):
        return variable
    if name:
        return f"[tool.stomper.{table}] {name} in pyproject.toml"
    return f"[tool.stomper] {key} in pyproject.toml"
