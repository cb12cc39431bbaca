"""Where settings come from: the environment, the project's ``.env`` file, defaults.

One place decides which database a command talks to (``ELT_DATABASE_URL`` or the
embedded default), so ``elt run``, ``elt status`` and the library agree. The
project's ``.env`` is loaded before its ``pipelines.py`` is imported (see
:func:`elt.pipeline.load_project`), because generated projects read their
source settings at import. ``ELT_ENV_FILE`` names another file to load instead.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from elt import secrets

_loaded_from: set[Path] = set()


def env_file(project_dir: Path | None = None) -> Path | None:
    """The file of settings to load: ``ELT_ENV_FILE`` when set, else the project's (or current folder's) ``.env``."""
    chosen = os.environ.get("ELT_ENV_FILE", "").strip()
    if chosen:
        path = Path(chosen).expanduser()
        if not path.exists():
            from elt.errors import ConfigError

            raise ConfigError(f"ELT_ENV_FILE={chosen}: no such file; point it at the settings file or unset it")
        return path
    path = (project_dir or Path.cwd()).resolve() / ".env"
    return path if path.is_file() else None


def load_dotenv_once(project_dir: Path | None = None) -> None:
    """Load the settings file (:func:`env_file`) into the environment once; real environment variables win."""
    path = env_file(project_dir)
    if path is None or path.resolve() in _loaded_from:
        return
    _loaded_from.add(path.resolve())
    # Real environment variables win, but an empty one (VAR= in a unit
    # file or crontab) does not hide the .env value.
    for key, value in dotenv_values(path).items():
        if value is not None and not os.environ.get(key):
            os.environ[key] = value


@dataclass(frozen=True)
class DatabaseTarget:
    """A resolved database: its URL (a secret when it holds a password) and a safe description."""

    url: str
    description: str
    embedded: bool


def database_target(project_dir: Path | None = None, env_var: str = "ELT_DATABASE_URL") -> DatabaseTarget:
    """The URL in ``env_var`` (environment or ``.env``); for ``ELT_DATABASE_URL`` unset, the embedded PostgreSQL."""
    load_dotenv_once(project_dir)
    url = os.environ.get(env_var, "").strip()
    # A SQLAlchemy-style URL (postgresql+psycopg://) names a driver; libpq wants the plain scheme.
    url = re.sub(r"^postgres(?:ql)?\+[A-Za-z0-9_]+://", "postgresql://", url)
    if url:
        secrets.register_connection(url)
        return DatabaseTarget(url=url, description=secrets.redact(url), embedded=False)
    if env_var != "ELT_DATABASE_URL":
        from elt.errors import ConfigError

        raise ConfigError(f"environment variable {env_var} is not set: put the database URL there or in .env")
    from elt.embedded import embedded_url

    url, data_dir = embedded_url(project_dir or Path.cwd())
    return DatabaseTarget(url=url, description=f"embedded PostgreSQL (data in {data_dir})", embedded=True)
