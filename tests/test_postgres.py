"""Checkpoints in PostgreSQL, against a real server that this module starts.

The server is a throwaway cluster in a temporary folder, listening on a free loopback port.
TCP connections need a password, a distinctive one, so that every test can also check that
it is shown and written nowhere. Without the server binaries the tests that need the server
are skipped, unless STOMPER_REQUIRE_POSTGRES=1 (as in CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import pytest

from stomper.cli import main
from stomper.testing.repos import make_repo, sample_project
from tests.conftest import sh
from tests.test_durability import (
    MID_WAY,
    UNITS,
    agent_env,
    assert_nothing_left,
    calls,
    landed_units,
    moved_hook_env,
    project,
    stomper,
    wait_for,
)

PASSWORD = "pw-" + secrets.token_hex(8)
USER = "stomper"
DATABASE = "stomper"
# Read once: the tests' own fixture removes every STOMPER_* variable.
REQUIRED = os.environ.get("STOMPER_REQUIRE_POSTGRES") == "1"


@dataclass(frozen=True)
class Server:
    port: int

    def url(
        self,
        *,
        password: str = PASSWORD,
        database: str = DATABASE,
        port: int | None = None,
    ) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{port or self.port}/{database}"

    def redacted(self) -> str:
        return f"postgresql://{USER}:***@127.0.0.1:{self.port}/{DATABASE}"


def unavailable(reason: str) -> NoReturn:
    if REQUIRED:
        pytest.fail(f"{reason}; STOMPER_REQUIRE_POSTGRES=1 asks for these tests to run")
    pytest.skip(reason)


def server_binaries() -> Path | None:
    """The folder of initdb, pg_ctl and postgres: pg_config's, or the newest Debian's."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if found.returncode == 0:
            candidates.append(Path(found.stdout.strip()))
    versions = [
        bin for bin in Path("/usr/lib/postgresql").glob("*/bin") if bin.parent.name.isdigit()
    ]
    candidates += sorted(versions, key=lambda bin: int(bin.parent.name), reverse=True)
    for folder in candidates:
        if all((folder / name).is_file() for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres() -> Iterator[Server]:
    """A PostgreSQL server of the tests' own, stopped and removed at the end of the session."""
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[test]'")
    binaries = server_binaries()
    if binaries is None:
        unavailable("no PostgreSQL server binaries (initdb, pg_ctl): install postgresql")
    root = Path(tempfile.mkdtemp(prefix="stomper-pg-"))
    password_file = root / "password"
    password_file.write_text(PASSWORD)
    as_owner: list[str] = []
    if os.geteuid() == 0:
        # initdb refuses to run as root: the cluster belongs to the postgres user.
        for path in (root, password_file):
            shutil.chown(path, user="postgres")
        as_owner = ["runuser", "-u", "postgres", "--"]
    data = root / "data"
    port = free_port()

    def pg(*args: str | Path, check: bool = True) -> None:
        done = subprocess.run(
            [*as_owner, *map(str, args)], capture_output=True, text=True, timeout=60
        )
        if check and done.returncode != 0:
            log = root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {done.stdout}{done.stderr}{tail}")

    try:
        pg(
            binaries / "initdb",
            *("-D", data, "-U", USER, "--pwfile", password_file),
            *("--auth-local=trust", "--auth-host=scram-sha-256"),
            *("--no-sync", "--no-instructions", "--encoding=UTF8", "--locale=C"),
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -p {port} -k {shlex.quote(str(root))} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg(binaries / "pg_ctl", "-D", data, "-l", root / "log", "-o", options, "-w", "start")
        try:
            server = Server(port)
            with psycopg.connect(server.url(database="postgres"), autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {DATABASE}")
            yield server
        finally:
            pg(binaries / "pg_ctl", "-D", data, "-m", "fast", "-w", "stop", check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def checkpoint_rows(server: Server, run_id: str) -> int:
    import psycopg

    with psycopg.connect(server.url()) as conn:
        row = conn.execute(
            "SELECT count(*) FROM checkpoints WHERE thread_id = %s", (run_id,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def stomper_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--no-progress"] if args[0] in ("fix", "resume") else list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def the_run(repo: Path) -> Path:
    (run_dir,) = (repo / ".git" / "stomper" / "runs").iterdir()
    return run_dir


def tree(repo: Path) -> str:
    return sh(repo, "rev-parse", "HEAD^{tree}").strip()


def snapshot(repo: Path) -> tuple[str, str, str]:
    return (
        sh(repo, "rev-parse", "HEAD"),
        sh(repo, "status", "--porcelain", "--untracked-files=all"),
        sh(repo, "for-each-ref"),
    )


def statuses(document: dict[str, Any]) -> dict[str, str]:
    return {unit["path"]: unit["status"] for unit in document["units"]}


# Against the server.


def test_fix_keeps_its_checkpoints_in_postgres(make, capsys, postgres: Server) -> None:
    files = sample_project(6)
    in_journal = make(files)
    in_postgres = make(files)
    expected, out, _ = stomper_main(capsys, "fix", "--repo", str(in_journal), "--json")
    reference = json.loads(out)
    code, out, err = stomper_main(
        capsys, "fix", "--repo", str(in_postgres), "--json", "--checkpointer", postgres.url()
    )
    document = json.loads(out)
    assert code == expected, err
    assert document["status"] == "completed"
    assert statuses(document) == statuses(reference)
    assert tree(in_postgres) == tree(in_journal)
    run_dir = the_run(in_postgres)
    assert run_dir.name == document["run_id"]
    assert checkpoint_rows(postgres, document["run_id"]) > 0
    assert not (run_dir / "checkpoints.sqlite").exists()
    assert (run_dir / "units.jsonl").is_file() and (run_dir / "run.json").is_file()
    assert (the_run(in_journal) / "checkpoints.sqlite").is_file()


def test_the_password_is_written_and_shown_nowhere(make, capsys, monkeypatch, postgres) -> None:
    repo = make(sample_project(4))
    monkeypatch.setenv("STOMPER_CHECKPOINTER", postgres.url())
    shown = [stomper_main(capsys, "fix", "--repo", str(repo), "--json")]
    shown.append(stomper_main(capsys, "runs", "--repo", str(repo), "--json"))
    shown.append(stomper_main(capsys, "doctor", "--repo", str(repo)))
    doctor = " ".join(shown[-1][2].split())
    assert f"checkpointer │ ok │ │ postgresql://{USER}:***@127.0.0.1" in doctor, doctor
    for code, out, err in shown:
        assert code in (0, 1), err
        assert PASSWORD not in out + err
    meta = (the_run(repo) / "run.json").read_text()
    assert f'"checkpointer": "{postgres.redacted()}"' in meta
    written = [path for path in (repo / ".git" / "stomper").rglob("*") if path.is_file()]
    assert written
    for path in written:
        assert PASSWORD.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("server down", "Connection refused"),
        ("wrong password", "password authentication failed"),
        ("no such database", 'database "nowhere" does not exist'),
        ("malformed", "cannot be used"),
        ("not postgres", "checkpointer: give a postgresql:// or postgres:// URL"),
    ],
)
def test_an_unusable_database_is_refused_before_any_change(
    make, capsys, postgres, case, needle
) -> None:
    secret = "not-the-password-42" if case == "wrong password" else PASSWORD
    url = {
        "server down": postgres.url(port=free_port()),
        "wrong password": postgres.url(password=secret),
        "no such database": postgres.url(database="nowhere"),
        "malformed": f"postgresql://{USER}:{PASSWORD}@[::1/{DATABASE}",
        "not postgres": f"mysql://{USER}:{PASSWORD}@127.0.0.1/{DATABASE}",
    }[case]
    repo = make(sample_project(4))
    before = snapshot(repo)
    code, out, err = stomper_main(capsys, "fix", "--repo", str(repo), "--checkpointer", url)
    message = " ".join(err.split())
    assert code == 2, message
    assert out == ""
    assert needle in message
    assert secret not in err
    if case != "not postgres":
        assert "check that the server is running" in message
    assert snapshot(repo) == before
    assert not (repo / ".git" / "stomper" / "runs").exists()


def test_sigkill_mid_run_then_resume_from_postgres(tmp_path, monkeypatch, postgres) -> None:
    reference = make_repo(tmp_path / "reference", project())
    done = stomper(reference, "fix", env=agent_env(tmp_path / "reference", delay="0"))
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    # The children inherit the URL through agent_env, which copies this environment.
    monkeypatch.setenv("STOMPER_CHECKPOINTER", postgres.url())
    repo = make_repo(tmp_path / "repo", project())
    child = stomper(repo, "fix", env=moved_hook_env(tmp_path, repo, agent_env(tmp_path), MID_WAY))
    marker = tmp_path / "hang" / "marker"
    wait_for(marker.exists, "a landing mid-way")
    landed_before = set(landed_units(repo))
    calls_before = len(calls(tmp_path))
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=120)
    os.kill(int(marker.read_text()), signal.SIGKILL)
    run_id = the_run(repo).name
    assert checkpoint_rows(postgres, run_id) > 0

    without_url = agent_env(tmp_path)
    del without_url["STOMPER_CHECKPOINTER"]
    refused = stomper(repo, "resume", env=without_url)
    _, err = refused.communicate(timeout=120)
    assert refused.returncode == 2, err.decode()
    assert b"STOMPER_CHECKPOINTER" in err and postgres.redacted().encode() in err
    assert PASSWORD.encode() not in err

    resumed = stomper(repo, "resume", env=agent_env(tmp_path))
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err.decode()
    counts = Counter(landed_units(repo))
    assert set(counts) == {f"m{i:02d}.py" for i in range(UNITS)}
    assert max(counts.values()) == 1, "a unit landed twice"
    assert not set(calls(tmp_path)[calls_before:]) & landed_before, "a landed unit ran again"
    assert_nothing_left(repo)
    assert tree(repo) == tree(reference)
    assert not (the_run(repo) / "checkpoints.sqlite").exists()


def test_clean_removes_the_checkpoints_of_a_completed_run(
    make, capsys, monkeypatch, postgres
) -> None:
    repo = make(sample_project(2))
    monkeypatch.setenv("STOMPER_CHECKPOINTER", postgres.url())
    stomper_main(capsys, "fix", "--repo", str(repo))
    run_dir = the_run(repo)
    assert checkpoint_rows(postgres, run_dir.name) > 0

    # Without the password the checkpoints cannot be reached: the journal stays to say where.
    monkeypatch.delenv("STOMPER_CHECKPOINTER")
    code, _, err = stomper_main(capsys, "clean", "--journals", "--repo", str(repo))
    assert code == 0
    assert "kept the journal" in err and "STOMPER_CHECKPOINTER" in err
    assert PASSWORD not in err
    assert run_dir.is_dir()

    monkeypatch.setenv("STOMPER_CHECKPOINTER", postgres.url())
    code, _, err = stomper_main(capsys, "clean", "--journals", "--repo", str(repo))
    assert code == 0, err
    assert not run_dir.exists()
    assert checkpoint_rows(postgres, run_dir.name) == 0


def test_doctor_says_whether_the_database_can_be_used(make, capsys, monkeypatch, postgres) -> None:
    repo = make({"a.py": "X = 1\n"})
    monkeypatch.setenv("STOMPER_CHECKPOINTER", postgres.url(port=free_port()))
    code, _, err = stomper_main(capsys, "doctor", "--repo", str(repo))
    message = " ".join(err.split())
    assert code == 1
    assert "checkpointer" in message and "cannot be used" in message
    assert PASSWORD not in err
