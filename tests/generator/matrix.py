"""The generator matrix: every source type × auth kind × cursor type, in one requirements file per destination.

One project holds a REST source per auth kind and one source of every other type; each
source has an entity per cursor type (timestamp, integer, none). So three projects (one
per destination kind) cover the whole product, and each runs in seconds.
"""

from __future__ import annotations

from typing import Any

import yaml

AUTHS: dict[str, dict[str, Any]] = {
    "none": {"kind": "none"},
    "key_header": {"kind": "api_key", "secret_env": "KEY_HEADER_SECRET", "key_name": "X-Api-Token"},
    "key_query": {"kind": "api_key", "secret_env": "KEY_QUERY_SECRET", "key_in": "query", "key_name": "apikey"},
    "bearer": {"kind": "bearer", "secret_env": "BEARER_TOKEN"},
    "basic": {"kind": "basic", "secret_env": "BASIC_PASSWORD"},
    "oauth2": {"kind": "oauth2", "secret_env": "OAUTH_CLIENT_SECRET"},
}
OTHER_TYPES = ("database", "file_drop", "manual", "webhook")
DESTINATIONS = ("postgres", "supabase", "bigquery")

#: One entity per cursor type: a timestamp, an integer sequence, none (full read).
ENTITIES = [
    {"name": "events", "primary_key": "id", "cursor": "updated_at",
     "fields": [{"name": "id", "type": "integer"}, {"name": "kind", "type": "string"},
                {"name": "amount", "type": "number"}, {"name": "updated_at", "type": "timestamp"}]},
    {"name": "ledger", "primary_key": "id", "cursor": "seq",
     "fields": [{"name": "id", "type": "integer"}, {"name": "seq", "type": "integer"},
                {"name": "booked_on", "type": "date"}, {"name": "paid", "type": "boolean"}]},
    {"name": "plans", "primary_key": "code"},
]


def source(name: str, type_: str, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "type": type_, "freshness": "hourly",
                            "volume": {"rows_per_sync": 500, "total_rows": 50_000}, "entities": ENTITIES}
    if auth:
        spec["auth"] = auth
    if type_ == "rest_api":
        spec["access"] = f"https://{name}.example.com/v1"
        spec["rate_limit"] = {"requests_per_second": 20, "page_size": 10}
    if type_ == "database":
        spec["format"] = "postgres"
    if type_ in ("file_drop", "manual"):
        spec["format"] = "csv"
    return spec


def matrix_spec(destination: str) -> str:
    sources = [source(f"api_{name}", "rest_api", auth) for name, auth in AUTHS.items()]
    sources += [source(type_, type_) for type_ in OTHER_TYPES]
    return yaml.safe_dump({"project": f"matrix_{destination}", "destination": {"kind": destination},
                           "sources": sources}, sort_keys=False)
