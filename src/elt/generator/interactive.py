"""`elt init --interactive`: the requirements questions asked in the terminal, with defaults.

The answers become a requirements file (written into the project as
requirements.yaml), so an interactive start and a file start are the same.
"""

from __future__ import annotations

from typing import Any

import typer
import yaml

from elt.generator.requirements import env_name

TYPES = ["rest_api", "database", "file_drop", "webhook", "manual"]
FRESHNESS = ["real_time", "near_real_time", "hourly", "daily", "on_demand"]
AUTH = ["none", "api_key", "bearer", "basic", "oauth2"]


def _choice(question: str, choices: list[str], default: str) -> str:
    while True:  # bounded by the person at the keyboard; an empty answer takes the default
        answer = typer.prompt(f"{question} ({'/'.join(choices)})", default=default).strip()
        if answer in choices:
            return answer
        typer.echo(f"  please answer one of: {', '.join(choices)}")


def ask(default_name: str) -> str:
    """Ask the questions; return the requirements as YAML text."""
    name = typer.prompt("Project name (lower case, digits, _)", default=default_name.replace("-", "_").lower())
    data: dict[str, Any] = {"project": name, "description": typer.prompt("What is it for (one line)", default=""),
                            "timezone": typer.prompt("Business time zone", default="UTC"), "sources": []}
    count = int(typer.prompt("How many sources", default="1"))
    for number in range(1, max(1, count) + 1):
        typer.echo(f"Source {number}")
        source: dict[str, Any] = {"name": typer.prompt("  name", default=f"source{number}"),
                                  "type": _choice("  type", TYPES, "rest_api")}
        source["freshness"] = _choice("  how fresh must its data be", FRESHNESS, "daily")
        source["volume"] = {"total_rows": int(typer.prompt("  rows in total today", default="10000")),
                            "rows_per_sync": int(typer.prompt("  rows changed per sync", default="1000"))}
        auth = _choice("  authentication", AUTH, "none")
        source["auth"] = {"kind": auth}
        if auth != "none":
            source["auth"]["secret_env"] = typer.prompt("  environment variable for the secret",
                                                        default=f"{env_name(source['name'])}_SECRET")
        if source["type"] == "rest_api":
            rate = typer.prompt("  rate limit, requests per second (empty: none)", default="")
            source["rate_limit"] = {"page_size": int(typer.prompt("  records per page", default="100"))}
            if rate:
                source["rate_limit"]["requests_per_second"] = float(rate)
        entities = typer.prompt("  entities, as name or name:cursor, comma separated", default="records:updated_at")
        source["entities"] = []
        for item in entities.split(","):
            entity, _, cursor = item.strip().partition(":")
            source["entities"].append({"name": entity, "primary_key": "id", **({"cursor": cursor} if cursor else {})})
        data["sources"].append(source)
    data["destination"] = {"kind": _choice("Destination", ["postgres", "supabase", "bigquery"], "postgres")}
    wanted = typer.prompt("Transformations wanted, in plain words (comma separated, empty: none)", default="")
    data["transformations"] = [t.strip() for t in wanted.split(",") if t.strip()]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
