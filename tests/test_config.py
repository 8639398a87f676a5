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
