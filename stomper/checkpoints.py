"""Where a run keeps LangGraph's checkpoints: its journal, or a PostgreSQL database.

With ``checkpointer`` unset they go to ``checkpoints.sqlite`` in the run's journal. With a
``postgresql://`` URL they go to that database (the ``postgres`` extra), one thread a run named
by the run id; the rest of the journal stays in the repository either way. The URL may hold a
password, so it is recorded and shown only redacted, and a resumed run reads it again from
the settings.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import unquote

from stomper.errors import ConfigError, RepositoryError
from stomper.journal import Journal

# LangGraph loads in a quarter of a second: the settings, which read URLs here, do without it.
if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

SCHEMES = ("postgresql", "postgres")
MASK = "***"
# libpq reads these from a URL's query as well as from its user information.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def is_postgres_url(url: str) -> bool:
    return url.startswith(tuple(f"{scheme}://" for scheme in SCHEMES))


def redact(url: str) -> str:
    """``url`` with every password in it replaced by ``***``; all of it if it is no URL."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return MASK
    authority, slash, tail = _split_authority(rest)
    user_info, at, hosts = authority.rpartition("@")
    if at and ":" in user_info:
        authority = f"{user_info.partition(':')[0]}:{MASK}@{hosts}"
    head, question, query = tail.partition("?")
    if question:
        query = "&".join(
            f"{key}={MASK}" if unquote(key) in _SECRET_PARAMETERS else f"{key}{equals}{value}"
            for key, equals, value in (part.partition("=") for part in query.split("&"))
        )
    return f"{scheme}://{authority}{slash}{head}{question}{query}"


def scrub(text: str, url: str) -> str:
    """``text`` on one line, with ``url`` redacted and none of its passwords left in it."""
    text = text.replace(url, redact(url))
    for secret in sorted(_secrets(url), key=len, reverse=True):
        text = text.replace(secret, MASK)
    return " ".join(text.split())


def _secrets(url: str) -> set[str]:
    """The passwords ``url`` holds, as written and as decoded."""
    _, separator, rest = url.partition("://")
    if not separator:
        return {url} if url else set()
    authority, _, tail = _split_authority(rest)
    user_info, at, _ = authority.rpartition("@")
    found = set()
    if at and ":" in user_info:
        found.add(user_info.partition(":")[2])
    for part in tail.partition("?")[2].split("&"):
        key, _, value = part.partition("=")
        if unquote(key) in _SECRET_PARAMETERS:
            found.add(value)
    return {form for secret in found for form in (secret, unquote(secret)) if form}


def _split_authority(rest: str) -> tuple[str, str, str]:
    """``user:password@hosts``, the ``/`` after it, and the rest of the URL."""
    # A password may hold a '/' or '?' only encoded, so the authority ends at the first one.
    match = re.match(r"([^/?]*)(/?)(.*)", rest, re.DOTALL)
    assert match is not None
    authority, slash, tail = match.groups()
    return authority, slash, tail


def resume_url(run_id: str, recorded: str, configured: str | None) -> str:
    """The URL of the database ``run_id`` keeps its checkpoints in: the one it started with.

    ``recorded`` is the redacted URL of the run's journal, ``configured`` the URL the settings
    give now. A run whose URL held a password needs the settings to give it again.
    """
    if configured is not None and redact(configured) == recorded:
        return configured
    if not _secrets(recorded):
        return recorded
    elsewhere = "" if configured is None else f", not in {redact(configured)}"
    raise ConfigError(
        f"run {run_id} keeps its checkpoints in {recorded}{elsewhere}: set "
        "STOMPER_CHECKPOINTER or [tool.stomper] checkpointer to that URL, password included"
    )


@contextlib.asynccontextmanager
async def open_saver(journal: Journal, url: str | None) -> AsyncIterator[BaseCheckpointSaver[str]]:
    """The run's checkpointer: the journal's SQLite file, or the database at ``url``."""
    if url is None:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(journal.checkpoints)) as saver:
            yield saver
    else:
        async with _postgres(url) as saver:
            yield saver


async def check(url: str) -> None:
    """Connect to the database at ``url`` and make its tables, or say what to check."""
    async with _postgres(url):
        pass


async def delete_run(url: str, run_id: str) -> None:
    """Remove the checkpoints of ``run_id`` from the database at ``url``."""
    async with _postgres(url) as saver:
        await saver.adelete_thread(run_id)


@contextlib.asynccontextmanager
async def _postgres(url: str) -> AsyncIterator[AsyncPostgresSaver]:
    """The saver over one connection to ``url``, its tables made; psycopg's errors translated."""
    try:
        import psycopg
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    except ImportError:
        raise ConfigError(
            f"the checkpointer {redact(url)} needs the postgres extra: "
            "pip install 'stomper[postgres]'"
        ) from None
    try:
        async with AsyncPostgresSaver.from_conn_string(url) as saver:
            await saver.setup()  # makes the tables on first use, a quick check after
            yield saver
    except psycopg.Error as exc:
        # Not chained: psycopg's own message may quote the URL, password and all.
        raise RepositoryError(_unusable(url, exc)) from None


def _unusable(url: str, exc: Exception) -> str:
    return (
        f"the checkpoint database {redact(url)} cannot be used: {scrub(str(exc), url)}: "
        "check that the server is running, the user and password, and that the database exists"
    )
