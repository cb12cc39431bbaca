"""Connections to a PostgreSQL destination, with elt's session settings, and the shipped migrations.

A connection lost in the middle of a run (the server restarted, a failover, a
network cut) is opened again with backoff for a while (:func:`reconnect`)
before the run gives up with a message naming the database.
"""

from __future__ import annotations

import os
import socket
import time
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from elt import secrets
from elt.errors import ConfigError, LoadError

# First key of every advisory lock elt takes ("elt" in ASCII), so they do not
# collide with an application's own advisory locks.
LOCK_SPACE = 0x656C74
MIGRATION_LOCK = 0
_SEND_BUFFER = 4 * 1024 * 1024


def ensure_schema(conn: Any, name: str) -> None:
    """Create schema ``name`` unless it exists (``conn``: a connection or cursor).

    ``CREATE SCHEMA IF NOT EXISTS`` checks the CREATE privilege on the database
    before it looks whether the schema exists, so it fails for a role that owns
    its schemas but may not create new ones (the least-privilege setup the
    README documents). Looking first works for both.
    """
    if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone() is None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(name)))


def migrations_dir() -> Path:
    """The shipped DDL: ``elt/sql`` in an installed wheel, ``sql/`` in a source checkout."""
    packaged = resources.files("elt") / "sql" / "postgres" / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[4] / "sql" / "postgres" / "migrations"
    if source.is_dir():
        return source
    raise ConfigError("elt's SQL files are missing from this installation; reinstall elt")


def connect(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """Open a connection with elt's session settings, or fail with a message that names the fix."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name="elt", connect_timeout=15)
    except psycopg.Error as exc:  # whatever refused the connection, the message names the database and the fix
        raise LoadError(
            f"cannot connect to the database {secrets.redact(url)}: {secrets.redact(str(exc)).strip()}\n"
            "Check that the server is running and that ELT_DATABASE_URL (environment or .env) is right."
        ) from None
    # UTC everywhere: timestamps without zone in records mean UTC (see records.parse_timestamp).
    conn.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


#: SQLSTATEs by which the server says it is ending the session (administrator or crash shutdown,
#: a server still starting): the connection is gone even while psycopg has not yet seen the socket close.
_SESSION_ENDED = frozenset({"57P01", "57P02", "57P03"})


def lost(conn: psycopg.Connection[Any] | None, exc: BaseException | None = None) -> bool:
    """Whether a connection is gone (closed, or broken by a server or network failure), not merely in error.

    ``exc``, the error a statement just raised, settles the race in which the
    server's "terminating connection" message arrives before the socket's
    end: psycopg then reports the connection as fine. Such a connection is
    closed here, so the next use opens a new one.
    """
    if conn is None:
        return False
    state = getattr(exc, "sqlstate", None) or ""
    if state in _SESSION_ENDED or state.startswith("08"):  # class 08: connection exception
        conn.close()
    return conn.closed or conn.broken


def reconnect(url: str, *, autocommit: bool, within: float, what: str) -> psycopg.Connection[Any]:
    """A new connection after one was lost, tried with exponential backoff for ``within`` seconds.

    A restarting server refuses connections for a few seconds (and then
    answers "the database system is starting up"): each failure waits 0.5 s,
    then 1, 2, 4 s... until the deadline; the last failure's message is
    raised, naming the database (its password masked) and what was lost.
    """
    from elt.logs import get_logger

    deadline = time.monotonic() + within
    wait = 0.5
    while True:
        try:
            return connect(url, autocommit=autocommit)
        except LoadError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"lost the connection to the database during {what}, and could not connect again"
                                f" within {within:g} s: {exc}") from None
            get_logger().warning("the database is unreachable; trying again", database=secrets.redact(url),
                                 what=what, wait_s=round(min(wait, left), 1))
            time.sleep(min(wait, left))
            wait = min(wait * 2, 8.0)


def privilege_hint(exc: BaseException) -> str:
    """What to grant, for an error by which the database refused elt's role a privilege ("" otherwise)."""
    if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return ""
    text = str(exc)
    if "temporary tables" in text:
        return (" elt's role needs TEMPORARY on the database (each batch is staged in a temporary table):"
                " GRANT TEMPORARY ON DATABASE <database> TO <elt's role>; see README, 'Database roles and grants'")
    return (" elt's role must own the schemas raw, stg, mart, rpt and pipeline (or be allowed to create them):"
            " see README, 'Database roles and grants'")


def widen_send_buffer(conn: psycopg.Connection[Any]) -> None:
    """Ask the OS for a 4 MB send buffer on the data connection (best effort; capped by net.core.wmem_max).

    During a COPY the server drains the socket while this process prepares the
    next rows in another thread; the default buffer (about 200 kB) holds only a
    millisecond or two of the server's work, so each time this process is slow
    to refill it the server sits idle. A larger buffer keeps it busy.
    """
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
    except OSError:
        pass  # a socket type or platform that refuses: the default buffer still works
