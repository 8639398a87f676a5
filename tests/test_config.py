"""Settings: where each comes from, and how a secret in one is kept out of sight."""

from __future__ import annotations

from pathlib import Path

import pytest

from stomper.config import Settings, load_settings
from stomper.errors import ConfigError

URL = "postgresql://me:hunter2@db:5432/stomper"
REDACTED = "postgresql://me:***@db:5432/stomper"


def with_config(root: Path, table: str) -> Path:
    root.mkdir(exist_ok=True)
    (root / "pyproject.toml").write_text(f"[tool.stomper]\n{table}\n")
    return root


def test_checkpoints_stay_in_the_journal_by_default(tmp_path) -> None:
    assert load_settings(tmp_path, {}).checkpointer is None


def test_checkpointer_from_config_environment_and_flag(tmp_path, monkeypatch) -> None:
    root = with_config(tmp_path / "repo", f'checkpointer = "{URL}"')
    assert load_settings(root, {}).checkpointer == URL
    monkeypatch.setenv("STOMPER_CHECKPOINTER", "postgres://me@env/stomper")
    assert load_settings(root, {}).checkpointer == "postgres://me@env/stomper"
    flag = "postgresql://me@flag/stomper"
    assert load_settings(root, {"checkpointer": flag}).checkpointer == flag
    monkeypatch.setenv("STOMPER_CHECKPOINTER", "")
    assert load_settings(tmp_path, {}).checkpointer is None


@pytest.mark.parametrize(
    "value", ["mysql://me:hunter2@db/x", "sqlite:///x", "host=db password=hunter2"]
)
def test_only_postgres_urls_are_accepted(tmp_path, value) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, {"checkpointer": value})
    message = str(refused.value)
    assert "checkpointer" in message and "postgresql://" in message
    assert "hunter2" not in message
    assert "\n" not in message


def test_a_dump_of_the_settings_holds_the_url_redacted() -> None:
    settings = Settings(checkpointer=URL)
    assert settings.checkpointer == URL
    assert settings.model_dump()["checkpointer"] == REDACTED
    assert "hunter2" not in repr(settings)
    # What a journal records reads back, still redacted.
    assert Settings.model_validate(settings.model_dump()).checkpointer == REDACTED


@pytest.mark.parametrize(
    ("text", "name"), [("[tool]\nstomper = 5\n", "tool.stomper"), ("tool = 5\n", "tool")]
)
def test_a_stomper_table_that_is_no_table_is_refused(tmp_path, text, name) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, {})
    message = str(refused.value)
    assert f"{name} in {tmp_path / 'pyproject.toml'} is 5, not a table" in message
    assert "[tool.stomper]" in message and "\n" not in message


def test_prices_come_from_the_project_table_or_the_variable(tmp_path, monkeypatch) -> None:
    root = with_config(tmp_path / "repo", "")
    (root / "pyproject.toml").write_text(
        '[tool.stomper.prices]\n"gpt-4o" = { input = 2.5, output = 10.0 }\n'
    )
    price = load_settings(root, {}).prices["gpt-4o"]
    assert price.cost(1_000_000, 100_000) == pytest.approx(3.5)
    monkeypatch.setenv("STOMPER_PRICES", '{"m": {"input": -1, "output": 2}}')
    with pytest.raises(ConfigError) as refused:
        load_settings(root, {})
    assert str(refused.value).endswith("(got -1, set by STOMPER_PRICES)")


def test_an_invalid_value_names_where_it_was_set(tmp_path, monkeypatch) -> None:
    root = with_config(tmp_path / "repo", "max_attempts = 0")

    def refused(flags: dict[str, object]) -> str:
        with pytest.raises(ConfigError) as error:
            load_settings(root, flags)
        return str(error.value)

    assert refused({}).endswith("set by [tool.stomper] max_attempts in pyproject.toml)")
    monkeypatch.setenv("STOMPER_MAX_ATTEMPTS", "-1")
    assert refused({}).endswith("(got '-1', set by STOMPER_MAX_ATTEMPTS)")
    assert refused({"max_attempts": 99}).endswith("(got 99, set by --max-attempts)")
    # The flag as it is spelled (--tool, not the setting's name), and none that does not exist.
    assert refused({"tools": ["pylint"]}).endswith("set by --tool)")
    monkeypatch.delenv("STOMPER_MAX_ATTEMPTS")
    monkeypatch.setenv("STOMPER_REQUEST_TIMEOUT", "abc")
    message = refused({"max_attempts": 3})
    assert "request_timeout" in message and message.endswith("set by STOMPER_REQUEST_TIMEOUT)")
    assert "--request-timeout" not in message


@pytest.mark.parametrize(
    "url",
    [
        "not-a-url",
        "localhost:11434/v1",
        "ftp://example.com/v1",
        "http://",
        "http:///v1",
        "http://host:port/v1",
        "http://two words/v1",
        "http://[::1/v1",
    ],
)
def test_a_malformed_base_url_is_refused(tmp_path, url) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, {"base_url": url})
    message = str(refused.value)
    assert "base_url: give an http:// or https:// URL" in message
    assert message.endswith("set by --base-url)")


@pytest.mark.parametrize(
    "url", ["http://localhost:11434/v1", "https://api.openai.com/v1", "http://[::1]:8080/v1"]
)
def test_a_well_formed_base_url_is_kept(tmp_path, url) -> None:
    assert load_settings(tmp_path, {"base_url": url}).base_url == url


def test_a_malformed_base_url_shows_no_password(tmp_path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(tmp_path, {"base_url": "http://me:hunter2@:80/v1"})
    assert "hunter2" not in str(refused.value)
    assert "http://me:***@:80/v1" in str(refused.value)


def test_answers_are_bounded_by_default(tmp_path) -> None:
    assert load_settings(tmp_path, {}).max_answer_bytes == 1_000_000
    root = with_config(tmp_path / "repo", "max_answer_bytes = 10")
    with pytest.raises(ConfigError, match="max_answer_bytes"):
        load_settings(root, {})
