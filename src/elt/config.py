"""Where settings come from: the environment, the project's ``.env`` file, defaults.

One place decides which database a command talks to (``ELT_DATABASE_URL`` or the
embedded default), so ``elt run``, ``elt status`` and the library agree.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from elt import secrets

_loaded_from: set[Path] = set()


def load_dotenv_once(project_dir: Path | None = None) -> None:
    """Load ``.env`` from the project (or current) folder; real environment variables win."""
    folder = (project_dir or Path.cwd()).resolve()
    if folder in _loaded_from:
        return
    _loaded_from.add(folder)
    env_file = folder / ".env"
    if env_file.is_file():
        # Real environment variables win, but an empty one (VAR= in a unit
        # file or crontab) does not hide the .env value.
        for key, value in dotenv_values(env_file).items():
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
    if url:
        secrets.register_connection(url)
        return DatabaseTarget(url=url, description=secrets.redact(url), embedded=False)
    if env_var != "ELT_DATABASE_URL":
        from elt.errors import ConfigError

        raise ConfigError(f"environment variable {env_var} is not set: put the database URL there or in .env")
    from elt.embedded import embedded_url

    url, data_dir = embedded_url(project_dir or Path.cwd())
    return DatabaseTarget(url=url, description=f"embedded PostgreSQL (data in {data_dir})", embedded=True)
