"""Secrets stay secret: the API key and the passwords of URLs, against hostile servers.

Each run below is a real one (``stomper.cli.main`` with ``--agent openai`` at the fake server
over loopback, the key in the environment), and everything it leaves is searched for each
secret: stdout, stderr, every file under ``.git/stomper``, the commits (``git log -p``) and
the object store.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from stomper import git, redaction
from stomper.agents import AgentOutcome, AgentTask
from stomper.agents.prompt import task_prompt
from stomper.cli import main
from stomper.config import Settings
from stomper.errors import ConfigError
from stomper.redaction import MASK, Redaction, mask_url, resume_url, secret, url_secrets
from stomper.testing.fake_openai import FakeOpenAI, Fault, FaultPolicy
from stomper.testing.repos import module
from tests.conftest import sh
from tests.test_durability import wait_for

KEY = "sk-stomper-secret-4b9d2e7a1c6f8e0d"
PASSWORD = "hunter2-s3cret-pw"
BASIC = base64.b64encode(f"user:{PASSWORD}".encode()).decode()
SECRETS = (KEY, PASSWORD, BASIC)


@pytest.fixture(autouse=True)
def key_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ("OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    # Rich folds what does not fit the width: a secret cut in two would pass unseen.
    monkeypatch.setenv("COLUMNS", "1000")
    yield
    redaction.use(Redaction())  # what a run made its own ends with it


def with_password(url: str) -> str:
    return url.replace("http://", f"http://user:{PASSWORD}@")


def run(*args: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def fix(
    repo: Path, base_url: str, *args: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, dict[str, Any], str]:
    """``stomper fix --agent openai --json`` at ``base_url``: exit code, document, stderr."""
    code, out, err = run(
        "fix",
        "--repo",
        str(repo),
        "--json",
        "--no-progress",
        "--agent",
        "openai",
        "--model",
        "fake",
        "--base-url",
        base_url,
        *args,
        capsys=capsys,
    )
    return code, json.loads(out), err


def everything_left(repo: Path, *outputs: str) -> dict[str, bytes]:
    """What a run left, by where: its outputs, stomper's files, the commits, the objects."""
    found = {f"output {n}": text.encode() for n, text in enumerate(outputs)}
    state = repo / ".git" / "stomper"
    if state.exists():
        found |= {str(path): path.read_bytes() for path in state.rglob("*") if path.is_file()}
    found["git log -p"] = git.git_sync(repo, "log", "-p", "--all").stdout
    found["objects"] = git.git_sync(repo, "cat-file", "--batch-all-objects", "--batch").stdout
    return found


def assert_kept(repo: Path, *outputs: str) -> None:
    for where, data in everything_left(repo, *outputs).items():
        for hidden in SECRETS:
            assert hidden.encode() not in data, f"{hidden} in {where}"


# What a hostile server or model sends back.


def test_a_key_echoed_in_usage_is_no_count_and_goes_nowhere(make, capsys) -> None:
    repo = make({"a.py": module(["F401", "E713"]), "b.py": module(["F541"])})
    with FakeOpenAI(api_key=KEY, faults=FaultPolicy(rates={Fault.ECHO_USAGE: 1.0})) as server:
        code, doc, err = fix(repo, server.base_url, capsys=capsys)
        stats = server.stats()
    assert stats.faults == {"echo_usage": 2}
    units = {unit["path"]: unit for unit in doc["units"]}
    assert {unit["status"] for unit in units.values()} == {"fixed"}, units
    # The count of tokens in was the key: it counts 0; the count out was a number.
    assert units["a.py"]["tokens"]["input"] == 0 < units["a.py"]["tokens"]["output"]
    assert code == 0
    assert_kept(repo, json.dumps(doc), err)


def test_doctor_shows_no_model_id_holding_the_key(make, capsys, monkeypatch) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(api_key=KEY, faults=FaultPolicy(models=Fault.ECHO_MODELS)) as server:
        monkeypatch.setenv("STOMPER_AGENT", "openai")
        monkeypatch.setenv("STOMPER_MODEL", "absent")
        monkeypatch.setenv("STOMPER_BASE_URL", server.base_url)
        code, out, err = run("doctor", "--repo", str(repo), capsys=capsys)
    assert code == 1
    assert "does not list model 'absent'" in err and f"Bearer {MASK}" in err
    assert_kept(repo, out, err)


def test_a_model_that_writes_the_key_into_its_edit_lands_nothing(make, capsys) -> None:
    repo = make({"a.py": module(["F401", "E713"])})
    head = sh(repo, "rev-parse", "HEAD")
    before = (repo / "a.py").read_bytes()
    with FakeOpenAI(api_key=KEY, faults=FaultPolicy(rates={Fault.ECHO_EDIT: 1.0})) as server:
        code, doc, err = fix(repo, server.base_url, capsys=capsys)
        stats = server.stats()
    assert stats.faults == {"echo_edit": 1}
    (unit,) = doc["units"]
    assert (unit["status"], unit["commit"]) == ("failed", None)
    assert "the change writes the API key ($OPENAI_API_KEY) into the file" in unit["reason"]
    assert sh(repo, "rev-parse", "HEAD") == head and (repo / "a.py").read_bytes() == before
    assert sh(repo, "status", "--porcelain") == ""
    assert code == 1
    # Refused before a tool read the file or its bytes were written as an object.
    assert_kept(repo, json.dumps(doc), err)


def test_a_password_in_the_base_url_is_recorded_and_shown_masked(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI(basic_auth=f"user:{PASSWORD}") as server:
        code, doc, err = fix(repo, with_password(server.base_url), capsys=capsys)
        masked = server.base_url.replace("http://", f"http://user:{MASK}@")
    # The requests went with the password: the server takes nothing else.
    assert [unit["status"] for unit in doc["units"]] == ["fixed"]
    assert code == 0
    (meta,) = (repo / ".git" / "stomper" / "runs").glob("*/run.json")
    assert json.loads(meta.read_text())["settings"]["base_url"] == masked
    assert_kept(repo, json.dumps(doc), err)


def test_an_endpoint_that_cannot_be_reached_is_named_with_its_password_masked(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    with FakeOpenAI() as server:
        url = server.base_url  # a port that nothing listens on once the server is gone
    code, out, err = run(
        "fix", "--repo", str(repo), "--agent", "openai", "--model", "fake",
        "--base-url", with_password(url), capsys=capsys,
    )  # fmt: skip
    assert code == 2
    assert f"cannot reach {url.replace('http://', f'http://user:{MASK}@')}" in err
    assert_kept(repo, out, err)


def test_resume_reads_the_password_of_the_base_url_from_the_settings_again(
    make, capsys, monkeypatch
) -> None:
    repo = make({"a.py": module(["F401"])})
    schedule = FaultPolicy(schedule=[Fault.HANG])
    with FakeOpenAI(basic_auth=f"user:{PASSWORD}", faults=schedule, hang_seconds=60) as server:
        url = with_password(server.base_url)
        env = {
            **os.environ,
            "STOMPER_AGENT": "openai",
            "STOMPER_MODEL": "fake",
            "STOMPER_BASE_URL": url,
        }
        child = subprocess.Popen(
            [sys.executable, "-m", "stomper", "fix", "--repo", str(repo), "--no-progress"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        wait_for(lambda: server.stats().completions >= 1, "the run's first request")
        child.send_signal(signal.SIGTERM)
        out, err = (stream.decode() for stream in child.communicate(timeout=60))
        assert child.returncode == 130, err
        # Without the URL in the settings, the run cannot go on; nor with another one.
        code, refused_out, refused = run("resume", "--repo", str(repo), capsys=capsys)
        assert code == 2
        assert "STOMPER_BASE_URL" in refused and f"user:{MASK}@" in refused
        monkeypatch.setenv("STOMPER_BASE_URL", url)
        code, resumed, resumed_err = run(
            "resume", "--repo", str(repo), "--json", "--no-progress", capsys=capsys
        )
    assert [unit["status"] for unit in json.loads(resumed)["units"]] == ["fixed"]
    assert code == 0
    assert_kept(repo, out, err, refused_out, refused, resumed, resumed_err)


class LeakingAgent:
    """A third-party agent with a bug: its error quotes the key."""

    name = "leaking"

    async def ready(self) -> None:
        raise RuntimeError(f"cannot use the key {os.environ['OPENAI_API_KEY']}")

    async def fix(self, task: AgentTask) -> AgentOutcome:
        raise NotImplementedError


def leaking_agent(settings: Settings) -> LeakingAgent:
    return LeakingAgent()


def test_a_crash_log_holds_no_secret(make, capsys) -> None:
    repo = make({"a.py": module(["F401"])})
    code, out, err = run(
        "fix", "--repo", str(repo), "--agent", f"{__name__}:leaking_agent", capsys=capsys
    )
    assert code == 3
    found = re.search(r"the details are in (\S+)", " ".join(err.split()))
    assert found is not None, err
    log = Path(found[1])
    try:
        text = log.read_text()
    finally:
        log.unlink()
    assert f"RuntimeError: cannot use the key {MASK}" in text
    assert_kept(repo, out, err, text)


# The redaction itself.


def test_every_configured_secret_in_every_spelling_is_masked() -> None:
    settings = Settings(
        base_url="http://user:p%40ss-word@llm.example/v1",
        checkpointer="postgresql://u:db-secret@db/stomper",
    )
    redact = Redaction.of(settings, {"OPENAI_API_KEY": KEY})
    basic = base64.b64encode(b"user:p@ss-word").decode()
    text = f"Bearer {KEY}; p%40ss-word or p@ss-word, Basic {basic}; db-secret"
    assert redact(text) == f"Bearer {MASK}; {MASK} or {MASK}, Basic {MASK}; {MASK}"
    record = {"reason": KEY, "units": [{KEY: ("db-secret", 3)}], "n": 1}
    assert redact.value(record) == {"reason": MASK, "units": [{MASK: [MASK, 3]}], "n": 1}


def test_a_short_or_empty_secret_masks_nothing_but_its_urls() -> None:
    settings = Settings(base_url="http://u:pw@llm.example/v1")
    for key in ("", "k", "abc"):
        redact = Redaction.of(settings, {"OPENAI_API_KEY": key})
        assert redact("a bc abc pw") == "a bc abc pw"
        assert redact("cannot reach http://u:pw@llm.example/v1") == (
            f"cannot reach http://u:{MASK}@llm.example/v1"
        )
    assert secret("the key", "", "abc").forms == ()
    assert Redaction()("anything") == "anything"


def test_feedback_to_an_agent_holds_no_secret() -> None:
    redaction.use(Redaction.of(Settings(), {"OPENAI_API_KEY": KEY}))
    prompt = task_prompt("a.py", [], feedback=f"the agent said: Bearer {KEY}")
    assert f"the agent said: Bearer {MASK}" in prompt and KEY not in prompt


def test_a_change_may_not_add_a_secret_but_may_keep_one_that_was_there() -> None:
    redact = Redaction.of(Settings(), {"OPENAI_API_KEY": KEY})
    assert redact.written(b"x = 1\n", b"x = 1\n") is None
    reason = redact.written(b"x = 1\n", f"x = '{KEY}'\n".encode())
    assert reason is not None and KEY not in reason and "$OPENAI_API_KEY" in reason
    held = f"# {KEY}\nx = 1\n".encode()
    assert redact.written(held, held.replace(b"x = 1", b"x = 2")) is None
    assert redact.written(held, held + f"y = '{KEY}'\n".encode()) is not None


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://u:secret@db:5432/stomper", "postgresql://u:***@db:5432/stomper"),
        ("postgres://u@db/stomper", "postgres://u@db/stomper"),
        ("postgresql://u:p%40ss@a:1,b:2/db?sslmode=require", "postgresql://u:***@a:1,b:2/db?sslmode=require"),
        ("postgresql:///db?user=u&password=secret", "postgresql:///db?user=u&password=***"),
        ("postgresql://db?sslpassword=secret&application_name=x", "postgresql://db?sslpassword=***&application_name=x"),
        ("http://user:secret@localhost:8000/v1", "http://user:***@localhost:8000/v1"),
        ("host=db password=secret", "***"),
    ],
)  # fmt: skip
def test_one_masking_of_urls(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    hidden = Redaction.of_url("checkpointer", url)
    assert "secret" not in hidden(f"cannot reach {url}")


def test_a_password_is_found_in_every_spelling() -> None:
    url = "postgresql://u:p%40ss@[db/stomper"
    message = f'bad URI "{url}"\n\tpassword p@ss, or p%40ss'
    assert Redaction.of_url("checkpointer", url)(message) == (
        'bad URI "postgresql://u:***@[db/stomper"\n\tpassword ***, or ***'
    )
    assert {"p@ss", "p%40ss", base64.b64encode(b"u:p@ss").decode()} == url_secrets(url)


def test_a_resumed_run_uses_the_url_it_started_with() -> None:
    recorded = "postgresql://u:***@db/stomper"
    real = "postgresql://u:secret@db/stomper"
    assert resume_url("r1", "checkpointer", recorded, real) == real
    # Without a password the journal's URL is the whole URL.
    assert resume_url("r1", "checkpointer", "postgres://u@db/x", None) == "postgres://u@db/x"
    assert resume_url("r1", "checkpointer", "postgres://u@db/x", real) == "postgres://u@db/x"
    with pytest.raises(ConfigError, match="STOMPER_CHECKPOINTER") as unset:
        resume_url("r1", "checkpointer", recorded, None)
    with pytest.raises(ConfigError, match="not postgresql://u:\\*\\*\\*@other/stomper") as moved:
        resume_url("r1", "checkpointer", recorded, "postgresql://u:secret@other/stomper")
    with pytest.raises(ConfigError, match="STOMPER_BASE_URL"):
        resume_url("r1", "base_url", "http://u:***@llm/v1", "http://u:secret@elsewhere/v1")
    for refused in (unset, moved):
        assert "secret" not in str(refused.value)
