"""``elt demo``: write a small, runnable sample project (a coffee shop's orders and customers)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from elt.errors import ConfigError

PIPELINES = '''\
"""The elt demo: a coffee shop's customers and orders, read from files that stand in for its API.

Run it with `elt run`; look at it with `elt status`. Running it again changes
nothing: orders are re-read from the watermark minus the lookback, and
records already stored byte for byte are not stored again.
"""

import datetime as dt
import gzip
import json
from pathlib import Path

from elt import Cursor, Pipeline, extractor

DATA = Path(__file__).parent / "data"


def read(name):
    with gzip.open(DATA / f"{name}.ndjson.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


@extractor(primary_key="id")
def customers():
    """A small reference list, read whole each run and upserted."""
    yield from read("customers")


@extractor(primary_key="id", cursor=Cursor("updated_at", lookback=dt.timedelta(hours=1)))
def orders(since):
    """Orders changed since the watermark (minus one hour of lookback), oldest first."""
    for order in read("orders"):
        if since is None or dt.datetime.fromisoformat(order["updated_at"]) >= since:
            yield order


Pipeline(name="shop", streams=[customers, orders])
'''

README = """\
# elt demo

A coffee shop's customers and orders, loaded into PostgreSQL by `elt`.

    elt run          # load (again: nothing changes)
    elt status       # recent runs
    elt state show   # watermarks

Tables: `raw.shop_customers`, `raw.shop_orders` (every record as received in
`_raw_payload`), `stg.shop_orders` (latest version of each order) and
`pipeline.execution_log`.
"""


def create_demo(directory: Path) -> Path:
    """Create the demo project in ``directory`` (which must not exist or be empty)."""
    directory = directory.expanduser().resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(
            f"{directory} already exists and is not empty: run `elt run` inside it, or remove it to start over"
        )
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "pipelines.py").write_text(PIPELINES, encoding="utf-8")
    (directory / "README.md").write_text(README, encoding="utf-8")
    (directory / ".gitignore").write_text(".elt/\n.env\n", encoding="utf-8")
    data = resources.files("elt.demo") / "data"
    for name in ("customers.ndjson.gz", "orders.ndjson.gz"):
        with resources.as_file(data / name) as source:
            shutil.copyfile(source, directory / "data" / name)
    return directory
