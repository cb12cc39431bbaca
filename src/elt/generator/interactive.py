"""`elt init --interactive`: the requirements questions asked in the terminal, with defaults.

The answers become a requirements file (written into the project as
requirements.yaml), so an interactive start and a file start are the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer
import yaml

from elt.generator.requirements import _NAME, env_name

_FIELD = r"^[A-Za-z_][A-Za-z0-9_]*$"

TYPES = ["rest_api", "database", "file_drop", "webhook", "manual"]
FRESHNESS = ["real_time", "near_real_time", "hourly", "daily", "on_demand"]
AUTH = ["none", "api_key", "bearer", "basic", "oauth2"]


def _ask(question: str, default: str, check: Callable[[str], Any]) -> Any:
    """Ask until ``check`` accepts the answer (it returns the value, or raises ValueError saying what is wanted)."""
    while True:  # bounded by the person at the keyboard; an empty answer takes the default; end of input aborts
        answer = typer.prompt(question, default=default).strip()
        try:
            return check(answer)
        except ValueError as exc:
            typer.echo(f"  {exc}")


def _choice(question: str, choices: list[str], default: str) -> str:
    def check(answer: str) -> str:
        if answer not in choices:
            raise ValueError(f"please answer one of: {', '.join(choices)}")
        return answer

    return _ask(f"{question} ({'/'.join(choices)})", default, check)


def _pattern(pattern: str, what: str) -> Callable[[str], str]:
    def check(answer: str) -> str:
        if not re.match(pattern, answer):
            raise ValueError(f"please answer {what}")
        return answer

    return check


def _number(kind: type, *, optional: bool = False, positive: bool = False) -> Callable[[str], Any]:
    def check(answer: str) -> Any:
        if optional and not answer:
            return None
        try:
            value = kind(answer.replace(",", "").replace("_", ""))
        except ValueError:
            whole = "whole " if kind is int else ""
            raise ValueError(f"please answer a {whole}number{' (or nothing)' if optional else ''}") from None
        if value < 0 or (positive and value == 0):
            raise ValueError("please answer a number above 0" if positive else "please answer 0 or more")
        return value

    return check


def _time_zone(answer: str) -> str:
    try:
        ZoneInfo(answer)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{answer!r} is not a time zone; answer like UTC, Europe/Paris or America/New_York") from None
    return answer


def _entities(answer: str) -> list[dict[str, Any]]:
    entities = []
    for item in answer.split(","):
        entity, _, cursor = item.strip().partition(":")
        if not re.match(_NAME, entity) or (cursor and not re.match(_FIELD, cursor)):
            raise ValueError(f"{item.strip()!r}: write name or name:cursor, names in lower case, digits and _"
                             " (orders, orders:updated_at)")
        entities.append({"name": entity, "primary_key": "id", **({"cursor": cursor} if cursor else {})})
    return entities


def ask(default_name: str) -> str:
    """Ask the questions, each answer checked at once; return the requirements as YAML text."""
    lower = "lower case letters, digits and _, starting with a letter"
    name = _ask(f"Project name ({lower})", re.sub(r"[^a-z0-9_]", "_", default_name.lower()).lstrip("_0123456789")
                or "project", _pattern(_NAME, lower))
    data: dict[str, Any] = {"project": name, "description": typer.prompt("What is it for (one line)", default=""),
                            "timezone": _ask("Business time zone", "UTC", _time_zone), "sources": []}
    count = _ask("How many sources", "1", _number(int, positive=True))
    for number in range(1, count + 1):
        typer.echo(f"Source {number}")
        source: dict[str, Any] = {"name": _ask("  name", f"source{number}", _pattern(_NAME, lower)),
                                  "type": _choice("  type", TYPES, "rest_api")}
        source["freshness"] = _choice("  how fresh must its data be", FRESHNESS, "daily")
        source["volume"] = {"total_rows": _ask("  rows in total today", "10000", _number(int)),
                            "rows_per_sync": _ask("  rows changed per sync", "1000", _number(int))}
        auth = _choice("  authentication", AUTH, "none")
        source["auth"] = {"kind": auth}
        if auth != "none":
            source["auth"]["secret_env"] = _ask("  environment variable for the secret",
                                                f"{env_name(source['name'])}_SECRET",
                                                _pattern(r"^[A-Z][A-Z0-9_]*$", "in upper case, digits and _"))
        if source["type"] == "rest_api":
            rate = _ask("  rate limit, requests per second (empty: none)", "", _number(float, optional=True,
                                                                                     positive=True))
            source["rate_limit"] = {"page_size": _ask("  records per page", "100", _number(int, positive=True))}
            if rate:
                source["rate_limit"]["requests_per_second"] = rate
        source["entities"] = _ask("  entities, as name or name:cursor, comma separated", "records:updated_at",
                                  _entities)
        data["sources"].append(source)
    data["destination"] = {"kind": _choice("Destination", ["postgres", "supabase", "bigquery"], "postgres")}
    wanted = typer.prompt("Transformations wanted, in plain words (comma separated, empty: none)", default="")
    data["transformations"] = [t.strip() for t in wanted.split(",") if t.strip()]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
