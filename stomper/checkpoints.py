"""Where a run keeps LangGraph's checkpoints: its journal, or a PostgreSQL database.

With ``checkpointer`` unset they go to ``checkpoints.sqlite`` in the run's journal. With a
``postgresql://`` URL they go to that database (the ``postgres`` extra), one thread a run named
by the run id; the rest of the journal stays in the repository either way. The URL may hold a
password, so it is recorded and shown only masked (see :mod:`stomper.redaction`), and a
resumed run reads it again from the settings.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from stomper.errors import ConfigError, RepositoryError
from stomper.journal import Journal
from stomper.redaction import Redaction, mask_url

# LangGraph loads in a quarter of a second: the settings, which read URLs here, do without it.
if TYPE_CHECKING:
    from langgraph.checkpoint.base import BaseCheckpointSaver
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver

SCHEMES = ("postgresql", "postgres")


def is_postgres_url(url: str) -> bool:
    return url.startswith(tuple(f"{scheme}://" for scheme in SCHEMES))


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


def load_saver(url: str | None) -> None:
    """Import what :func:`open_saver` needs for ``url``, ahead of it (for a thread to do
    while a run begins): LangGraph's SQLite saver takes a few tenths of a second."""
    if url is None:
        import langgraph.checkpoint.sqlite.aio  # noqa: F401


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
            f"the checkpointer {mask_url(url)} needs the postgres extra: "
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
    # Before the run's redaction is in use: the URL's own, and on one line.
    hidden = Redaction.of_url("checkpointer", url)
    return (
        f"the checkpoint database {mask_url(url)} cannot be used: "
        f"{' '.join(hidden(str(exc)).split())}: "
        "check that the server is running, the user and password, and that the database exists"
    )
