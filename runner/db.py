"""Database access for the runner: an async connection pool that is safe behind PgBouncer in
transaction mode (no prepared statements, no session state), and the schema-version check.

Every call the runner makes goes through a SQL function of the pack or a short statement; nothing
holds a transaction across network I/O.
"""

from __future__ import annotations

import logging

import psycopg
from psycopg_pool import AsyncConnectionPool

from runner import migrate

log = logging.getLogger("storeops.db")


class SchemaNotCurrent(RuntimeError):
    """The database is not migrated to the version this runner expects."""


def _configure_connection_kwargs() -> dict:
    # prepare_threshold=None: no server-side prepared statements, which transaction-mode PgBouncer
    # cannot track across pooled server connections. UTF-8 on the wire whatever the server's
    # default: the intake sends webhook bodies as raw UTF-8 bytes (runner.intake).
    return {"autocommit": True, "prepare_threshold": None, "client_encoding": "UTF8"}


async def open_pool(url: str, *, min_size: int = 2, max_size: int = 10, name: str = "storeops",
                    timeout: float = 10.0) -> AsyncConnectionPool:
    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs=_configure_connection_kwargs(),
        open=False,
        name=name,
        timeout=timeout,
        reconnect_timeout=5.0,
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=False)
    return pool


def check_schema(url: str) -> None:
    """Refuse to run against an unmigrated or older schema, with a message that says what to do."""
    state = migrate.state(url)
    if not state.applied:
        raise SchemaNotCurrent("the database is not migrated: run 'storeops migrate' first")
    if state.pending:
        raise SchemaNotCurrent(
            f"the database schema is older than this runner ({len(state.pending)} migration(s) pending, "
            f"first {state.pending[0]}): run 'storeops migrate'"
        )


def is_unavailable(exc: BaseException) -> bool:
    """Whether an exception means the database cannot do the work right now, so the caller should
    retry later (answer 503): no connection (a lost one has no SQLSTATE), class 08 connection
    exceptions, 53 insufficient resources, 57 operator intervention (shutdown, cannot connect now,
    statement timeout), 25006 a read-only (standby) database, 40 serialization failures and
    deadlocks. Errors about the statement or its data (e.g. 54000, a value too big for an index)
    are not: retrying them cannot help."""
    from psycopg_pool import PoolTimeout

    if isinstance(exc, PoolTimeout | OSError):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] in ("08", "53", "57", "40") or state == "25006"
