"""Secret values: read from the environment, never shown in logs or errors.

Every secret ``elt`` reads goes through :func:`from_env` (or is registered with
:func:`register`), and :func:`redact` replaces each registered value in any text
before it is logged or raised. The log pipeline and the command line's error
output both call :func:`redact`, so a secret that slips into an exception
message from a driver is still masked.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from elt.errors import EltError

_MASK = "***"
_lock = threading.Lock()
_values: set[str] = set()
_pattern: re.Pattern[str] | None = None

# A password inside a connection URL (scheme://user:password@host) is a secret
# whether or not anyone registered it. Greedy up to the last "@" of the URL: an
# unencoded "@" or "/" inside the password must not leave its tail visible.
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<pw>\S+)(?=@[^@\s]*)")
# A password given as a parameter: a URL's ?password=..., a libpq keyword string
# (host=db password=... or password='with spaces'), PGPASSWORD=... in a command line.
_PARAM_PASSWORD = re.compile(
    r"(?i)(?P<head>\b(?:pg)?(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;'\"]+)")


class Secret:
    """A secret string. ``str()`` and ``repr()`` show ``***``; ``.value`` is the real thing.

    A secret made by :func:`from_env` before its variable is set reads the
    environment again when first used, and raises :class:`MissingSecretError` then.
    """

    __slots__ = ("_value", "name", "_env")

    def __init__(self, value: str | None, name: str = "secret", *, env: str | None = None) -> None:
        self._value = value
        self.name = name
        self._env = env
        register(value)

    @property
    def value(self) -> str:
        if self._value is None:
            self._value = _read_env(self._env or self.name, None)
            register(self._value)
        return self._value

    def __str__(self) -> str:
        return _MASK

    def __repr__(self) -> str:
        return f"Secret({self.name}={_MASK})"

    def __eq__(self, other: object) -> bool:
        # The name takes part so that equal secrets hash equally without reading an unset variable.
        return isinstance(other, Secret) and other.name == self.name and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.name)


class MissingSecretError(EltError):
    """An environment variable that should hold a secret is not set."""


def from_env(name: str, *, default: str | None = None) -> Secret:
    """The secret in environment variable ``name`` (``.env`` included), masked in every log and error.

    Declaring a secret never fails: a variable that is not set raises
    :class:`MissingSecretError` when the secret is first used, so a project
    whose other pipelines do not need it still imports and runs.
    """
    from elt.config import load_dotenv_once

    load_dotenv_once()
    value = os.environ.get(name) or default
    return Secret(value, name=name, env=name)


def _read_env(name: str, default: str | None) -> str:
    from elt.config import load_dotenv_once

    load_dotenv_once()
    value = os.environ.get(name) or default
    if not value:
        raise MissingSecretError(
            f"environment variable {name} is not set: put it in the environment or in the project's .env file"
        )
    return value


def register(value: str | None) -> None:
    """Mask ``value`` wherever it appears in logs and errors from now on, URL-encoded too.

    A key sent as a query parameter reaches an error message inside the
    request's URL, percent-encoded (``q8Zk%2BT3x%2F...``) or form-encoded
    (``+`` for a space): each form is masked.
    """
    from urllib.parse import quote, quote_plus

    global _pattern
    # Very short values would mask ordinary words; a real secret is longer.
    if not value or len(value) < 4:
        return
    forms = {value, quote(value, safe=""), quote(value), quote_plus(value)}
    with _lock:
        if forms <= _values:
            return
        _values.update(forms)
        ordered = sorted(_values, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(v) for v in ordered))


def mask_passwords(text: str) -> str:
    """``text`` with the password of every connection URL and ``password=`` parameter replaced by ``***``.

    Needs no registration: what a URL or a libpq keyword string says is a
    password is one. Generated files (``elt init``) use this alone.
    """
    text = _URL_PASSWORD.sub(lambda m: m.group("head") + _MASK, text)
    return _PARAM_PASSWORD.sub(lambda m: m.group("head") + _MASK, text)


def redact(text: str) -> str:
    """Return ``text`` with every registered secret and connection password replaced by ``***``."""
    if not isinstance(text, str):
        text = str(text)
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(_MASK, text)
    return mask_passwords(text)


def register_connection(conninfo: str) -> None:
    """Register the password of a database URL or libpq keyword string, in every form it may be printed in.

    A percent-encoded password (``p%40ss``) can reach a message decoded (``p@ss``) and
    the other way round, so both are masked.
    """
    from urllib.parse import quote, unquote, urlsplit

    password: str | None = None
    if "://" in conninfo:
        try:
            password = urlsplit(conninfo).password
        except ValueError:
            password = None
        query_password = re.search(r"[?&]password=([^&#]*)", conninfo)
        if query_password:
            register(unquote(query_password.group(1)))
            register(query_password.group(1))
    else:
        match = _PARAM_PASSWORD.search(conninfo)
        if match:
            password = match.group("pw").strip("'\"")
    if password:
        for form in {password, unquote(password), quote(unquote(password), safe="")}:
            register(form)
            # An unencoded "@" in a URL's password: libpq ends the password at the first "@" and reads
            # the rest as the host, which its error then prints ("could not translate host name
            # 'rest@db'"). Each part around an "@" is masked on its own.
            parts = form.split("@")
            for i in range(1, len(parts)):
                register("@".join(parts[:i]))
                register("@".join(parts[i:]))


def redact_value(value: Any) -> Any:
    """Redact strings inside ``value`` (recursing into dicts, lists and tuples)."""
    if isinstance(value, Secret):
        return _MASK
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    if isinstance(value, BaseException):
        return redact(f"{type(value).__name__}: {value}")
    return value
