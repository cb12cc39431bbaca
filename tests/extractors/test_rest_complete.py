"""REST streams read everything in one run: through injected faults, with data moving during the read.

A real API on 127.0.0.1 (``FakeApi``) sits behind a real fault-injecting proxy
(tests/fixtures/fault_proxy.py): 20 % of requests meet a fault, every kind
drawn by a fixed seed. Runs go through the runner into the test PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest

from elt import Cursor, KeysetPaginator, OffsetPaginator, Pipeline, RestExtractor
from elt.errors import ConfigError
from elt.runner import Runner
from elt.testing import Reply
from tests.fixtures.fault_proxy import KINDS, FaultProxy
from tests.fixtures.projects import run_elt
from tests.helpers import run, table_rows

T0 = dt.datetime(2024, 6, 30, 8, 0, tzinfo=dt.UTC)


def ms_z(moment: dt.datetime) -> str:
    """The source's own textual form: milliseconds and Z (compared as strings by the API)."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def spaced(moment: dt.datetime) -> str:
    """Another source's form: a space, whole seconds, no zone."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


class MovingApi:
    """``/items`` over records that may change between requests.

    Filters ``updated_since`` by comparing strings (as many APIs do), sorts by
    ``(updated_at, id)``, pages by ``offset``/``limit`` or by ``updated_since``
    and ``limit`` (keyset). ``during_read`` runs before each answer, under the
    lock, so tests can change records while a read is going on.
    """

    def __init__(self, fake_api: Any, count: int, form: Callable[[dt.datetime], str] = ms_z) -> None:
        self.form = form
        self.lock = threading.Lock()
        self.clock = T0
        self.records: dict[int, dict[str, Any]] = {}
        for i in range(1, count + 1):
            self.add(i)
        self.during_read: Callable[[MovingApi, Any], None] | None = None
        self.requests = 0
        self.cap = 1000  # the most records the API serves per page, whatever is asked
        self.broken: Callable[[Any], bool] = lambda request: False
        fake_api.route("/items", self.items)

    def tick(self) -> str:
        self.clock += dt.timedelta(milliseconds=1500)
        return self.form(self.clock)

    def add(self, i: int) -> None:
        self.records[i] = {"id": i, "name": f"item {i}", "version": 1, "updated_at": self.tick()}

    def update(self, i: int) -> None:
        record = self.records[i]
        self.records[i] = {**record, "version": record["version"] + 1, "updated_at": self.tick()}

    def items(self, request: Any) -> Any:
        with self.lock:
            self.requests += 1
            if self.broken(request):
                return Reply({"error": "database is down"}, status=503)
            if self.during_read is not None:
                self.during_read(self, request)
            rows = sorted(self.records.values(), key=lambda r: (r["updated_at"], r["id"]))
            since = request.params.get("updated_since")
            after = request.params.get("after_id")
            if since is not None and after is not None:
                rows = [r for r in rows if (r["updated_at"], r["id"]) > (since, int(after))]
            elif since is not None:
                rows = [r for r in rows if r["updated_at"] >= since]  # a string comparison, on purpose
            limit = min(int(request.params.get("limit", 50)), self.cap)
            offset = int(request.params.get("offset", 0))
            return {"data": [dict(r) for r in rows[offset: offset + limit]], "total": len(rows)}

    def current(self) -> dict[str, dict[str, Any]]:
        return {str(i): r for i, r in self.records.items()}


class Items(RestExtractor):
    name = "items"
    base_url = "http://127.0.0.1:9"
    path = "/items"
    records_path = "data"
    primary_key = "id"
    cursor = Cursor("updated_at", param="updated_since")
    write_strategy = "upsert"
    paginator = KeysetPaginator(page_size=50)
    timeout = 0.5  # the proxy's slow answers take 1 s: a timeout, retried
    backoff = 0.01
    max_backoff = 0.05


def stored(db: Any, table: str = "raw.shop_items") -> dict[str, dict[str, Any]]:
    rows = table_rows(db, table, "id, _raw_payload AS p", "id")
    return {r["id"]: r["p"] for r in rows}


def watermark(db: Any) -> Any:
    row = db.execute("SELECT value FROM pipeline.state WHERE stream_name = 'items' AND key = 'watermark'").fetchone()
    return row["value"]["value"] if row else None


def logged_streams(db: Any) -> dict[str, Any]:
    return db.execute("SELECT streams FROM pipeline.execution_log ORDER BY id DESC LIMIT 1").fetchone()["streams"]


@pytest.fixture
def proxy(fake_api):
    with FaultProxy(fake_api.url, rate=0.2, seed=13) as running:
        yield running


# --- one run is enough, through faults ---------------------------------------------------------


def test_a_full_load_and_an_incremental_load_each_equal_the_source_in_one_run(fake_api, proxy, loader, db):
    api = MovingApi(fake_api, 2000)
    pipeline = Pipeline("shop", streams=[Items(base_url=proxy.url, paginator=KeysetPaginator(page_size=20))])

    first = run(pipeline, loader)
    assert first.status == "success", first.summary.error_message
    assert stored(db) == api.current()

    for i in range(1, 2000, 7):
        api.update(i)
    for i in range(2001, 2301):
        api.add(i)
    injected = proxy.total_injected
    second = run(pipeline, loader)
    assert second.status == "success", second.summary.error_message
    assert stored(db) == api.current()
    assert proxy.total_injected > injected
    assert set(proxy.injected) == set(KINDS)  # every kind of fault met, each survived

    # The faults are in the run's record, by cause, with no URL failed for good.
    faults = logged_streams(db)["items"]["faults"]
    assert sum(faults["retries"].values()) > 0 and "failed_urls" not in faults
    assert set(faults["retries"]) <= {"429", "5xx", "timeout", "connection_dropped", "invalid_body"}


def test_a_full_load_with_offset_paging_equals_the_source_in_one_run(fake_api, proxy, loader, db):
    api = MovingApi(fake_api, 1500)
    stream = Items(base_url=proxy.url, cursor=None, paginator=OffsetPaginator(limit=50))
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.status == "success", result.summary.error_message
    assert stored(db) == api.current()
    assert proxy.total_injected > 0


# --- data moving during the read -------------------------------------------------------------


def updating(every: int, until: int, count: int = 3) -> Callable[[MovingApi, Any], None]:
    """Update ``count`` records (spread over the whole set) on every ``every``-th request, up to request ``until``."""
    def change(api: MovingApi, request: Any) -> None:
        if api.requests % every == 0 and api.requests <= until:
            for n in range(count):
                api.update(1 + (api.requests * 37 + n * 101) % len(api.records))
    return change


def test_records_updated_during_a_first_and_an_incremental_load_none_missing_none_stale(fake_api, proxy, loader, db):
    api = MovingApi(fake_api, 3000)
    api.during_read = updating(every=2, until=40)
    pipeline = Pipeline("shop", streams=[Items(base_url=proxy.url)])

    first = run(pipeline, loader)
    assert first.status == "success", first.summary.error_message
    assert stored(db) == api.current()  # every record, each in its latest version

    for i in range(3001, 3101):
        api.add(i)
    api.requests = 0
    api.during_read = updating(every=1, until=4)
    second = run(pipeline, loader)
    assert second.status == "success", second.summary.error_message
    assert stored(db) == api.current()


def moving_read_pages(api: MovingApi, request: Any) -> None:
    """Before the second page: three records of the first page change, move to the end, and every
    later record shifts three places forward; three records are never served at their offset."""
    if api.requests == 2:
        since = request.params.get("updated_since", "")
        first_page = sorted((r for r in api.records.values() if r["updated_at"] >= since),
                            key=lambda r: (r["updated_at"], r["id"]))[:3]
        for record in first_page:
            api.update(record["id"])


def test_offset_paging_over_moving_data_ends_partial_and_keeps_the_watermark_and_the_replace_table(
    fake_api, loader, db
):
    api = MovingApi(fake_api, 400)
    offset = OffsetPaginator(limit=50)
    incremental = Items(base_url=fake_api.url, paginator=offset)
    pipeline = Pipeline("shop", streams=[incremental])
    assert run(pipeline, loader).status == "success"
    mark = watermark(db)

    for i in range(1, 401, 3):
        api.update(i)  # the next incremental read spans three pages
    api.requests = 0
    api.during_read = moving_read_pages
    result = run(pipeline, loader)
    assert result.status == "partial"
    message = result.summary.error_message
    assert "was read twice" in message and "Use KeysetPaginator" in message
    assert watermark(db) == mark  # not moved past a read that may have skipped records

    # replace: the table of the last complete read stays, not one missing records.
    api.during_read = None
    replaced = Pipeline("shop", streams=[Items(base_url=fake_api.url, paginator=offset, cursor=None,
                                               write_strategy="replace")])
    db.execute("DROP TABLE raw.shop_items CASCADE")
    assert run(replaced, loader).status == "success"
    before = stored(db)
    api.requests = 0
    api.during_read = moving_read_pages
    result = run(replaced, loader)
    assert result.status == "partial" and "was read twice" in result.summary.error_message
    assert stored(db) == before


def test_a_record_deleted_during_an_offset_read_is_caught_by_the_moving_total(fake_api, loader, db):
    # A deletion shifts every later record up one place: one is never read, and no key is read twice.
    api = MovingApi(fake_api, 20)
    pipeline = Pipeline("shop", streams=[Items(base_url=fake_api.url, paginator=OffsetPaginator(limit=5,
                                                                                                  total_path="total"))])

    def delete_one(api: MovingApi, request: Any) -> None:
        if request.params.get("offset") == "5" and 3 in api.records:
            del api.records[3]  # read on the first page

    api.during_read = delete_one
    result = run(pipeline, loader)
    assert result.status == "partial"
    assert "total went from 20 to 19" in result.summary.error_message
    assert watermark(db) is None  # nothing proven complete: the next run reads it all again
    api.during_read = None
    assert run(pipeline, loader).status == "success"
    assert sorted(int(k) for k in stored(db)) == sorted([*api.records, 3])  # 3 was read before its deletion


# --- cursors in the source's own textual form ---------------------------------------------------


@pytest.mark.parametrize("form", [ms_z, spaced], ids=["millis_z", "space_no_zone"])
def test_the_watermark_goes_back_in_the_sources_textual_form_to_an_api_comparing_strings(fake_api, loader, db, form):
    api = MovingApi(fake_api, 120, form=form)
    pipeline = Pipeline("shop", streams=[Items(base_url=fake_api.url)])
    assert run(pipeline, loader).status == "success"
    last = max(r["updated_at"] for r in api.records.values())

    for i in range(121, 131):
        api.add(i)
    seen: list[str] = []
    api.during_read = lambda api, request: seen.append(request.params.get("updated_since", ""))
    result = run(pipeline, loader)
    assert result.status == "success"
    assert seen[0] == last  # exactly as the source wrote it, not 2024-06-30T...+00:00
    assert result.streams["items"].inserted == 10 and result.streams["items"].updated == 0
    assert stored(db) == api.current()


# --- ties larger than a page ---------------------------------------------------------------------


def test_a_tie_larger_than_the_page_is_read_by_growing_the_page(fake_api, loader, db):
    api = MovingApi(fake_api, 30)
    for i in range(31, 111):  # 80 records share one timestamp: more than a page of 25
        api.records[i] = {"id": i, "name": f"item {i}", "version": 1, "updated_at": api.records[30]["updated_at"]}
    for i in range(111, 131):
        api.add(i)
    pipeline = Pipeline("shop", streams=[Items(base_url=fake_api.url, paginator=KeysetPaginator(page_size=25))])
    result = run(pipeline, loader)
    assert result.status == "success", result.summary.error_message
    assert stored(db) == api.current()


def test_a_tie_beyond_the_largest_page_is_an_error_naming_the_value(fake_api, loader, db):
    api = MovingApi(fake_api, 30)
    tie = api.records[30]["updated_at"]
    for i in range(31, 111):
        api.records[i] = {"id": i, "name": f"item {i}", "version": 1, "updated_at": tie}
    stream = Items(base_url=fake_api.url, paginator=KeysetPaginator(page_size=25, max_page_size=50))
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.status == "failed"
    assert f"share the cursor value {tie!r}" in result.summary.error_message
    assert "max_page_size=50" in result.summary.error_message


def test_an_api_breaking_ties_is_paged_within_the_tie(fake_api, loader, db):
    api = MovingApi(fake_api, 30)
    tie = api.records[30]["updated_at"]
    for i in range(31, 111):
        api.records[i] = {"id": i, "name": f"item {i}", "version": 1, "updated_at": tie}
    paginator = KeysetPaginator(page_size=25, max_page_size=25, tie_param="after_id")
    result = run(Pipeline("shop", streams=[Items(base_url=fake_api.url, paginator=paginator)]), loader)
    assert result.status == "success", result.summary.error_message
    assert stored(db) == api.current()
    assert result.streams["items"].extracted == 110  # no record read twice


def test_keyset_paging_through_an_api_capping_its_pages_and_a_tie_at_the_cap(fake_api, loader, db):
    api = MovingApi(fake_api, 200)
    api.cap = 30
    pipeline = Pipeline("shop", streams=[Items(base_url=fake_api.url, paginator=KeysetPaginator(page_size=100))])
    assert run(pipeline, loader).status == "success"
    assert stored(db) == api.current()

    tie = api.tick()
    for i in range(201, 241):  # 40 records of one value: more than the 30 the API serves
        api.records[i] = {"id": i, "name": f"item {i}", "version": 1, "updated_at": tie}
    result = run(pipeline, loader)
    assert result.status == "failed" and f"share the cursor value {tie!r}" in result.summary.error_message
    assert "the API serves at most 30 per page" in result.summary.error_message


def test_keyset_paging_needs_a_cursor_parameter():
    with pytest.raises(ConfigError, match="KeysetPaginator resumes from the cursor"):
        Items(cursor=Cursor("updated_at"))


# --- a failure that outlasts every retry -----------------------------------------------------


def test_a_failure_outlasting_every_retry_is_in_the_runs_record_and_the_watermark_holds(fake_api, loader, db):
    api = MovingApi(fake_api, 200)
    stream = Items(base_url=fake_api.url, max_retries=2)
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, loader).status == "success"
    mark = watermark(db)

    for i in range(201, 301):
        api.add(i)
    api.broken = lambda request: request.params.get("updated_since", "") > api.records[240]["updated_at"]
    result = run(pipeline, loader)
    assert result.status == "failed" and "failed after 3 attempts: HTTP 503" in result.summary.error_message
    faults = logged_streams(db)["items"]["faults"]
    assert faults["retries"] == {"5xx": 2}
    [url] = faults["failed_urls"]
    assert url.startswith(f"{fake_api.url}/items?updated_since=")
    # The watermark covers exactly the pages loaded: at most the start of the page that failed.
    held = watermark(db)
    assert mark < held <= api.records[300]["updated_at"].replace("Z", "+00:00")
    assert set(stored(db)) < set(api.current())

    api.broken = lambda request: False
    assert run(pipeline, loader).status == "success"
    assert stored(db) == api.current()


def test_elt_status_json_shows_the_faults(fake_api, loader, db, database_url, tmp_path):
    api = MovingApi(fake_api, 60)
    api.broken = lambda request: api.requests == 2  # the second request fails once, then passes
    assert run(Pipeline("shop", streams=[Items(base_url=fake_api.url)]), loader).status == "success"
    status = run_elt(["status", "--json"], cwd=tmp_path, database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)[0]["streams"]["items"]["faults"] == {"retries": {"5xx": 1}}


# --- deletes -----------------------------------------------------------------------------------


def test_detect_deletes_without_a_key_listing_is_refused_at_declaration():
    with pytest.raises(ConfigError, match="detect_deletes = True needs a way to list the source's keys"):
        Items(detect_deletes=True)


def test_reconcile_reads_the_key_listing(fake_api, loader, db):
    api = MovingApi(fake_api, 90)
    listed: list[dict[str, str]] = []
    fake_api.route("/items/ids", lambda request: listed.append(request.params) or {
        "data": [{"id": i} for i in sorted(api.records)][int(request.params.get("offset", 0)):][:50]})
    stream = Items(base_url=fake_api.url, detect_deletes=True, keys_path="/items/ids", keys_params={"fields": "id"},
                   keys_paginator=OffsetPaginator(limit=50))
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, loader).status == "success"
    for i in (3, 4, 50):
        del api.records[i]
    result = Runner(pipeline, loader=loader).reconcile()
    assert result.status == "success", result.summary.error_message
    assert result.streams["items"].deleted == 3
    assert all(p.get("fields") == "id" for p in listed)


def test_detect_deletes_on_a_stream_that_cannot_list_keys_is_refused_when_the_pipeline_loads(tmp_path):
    # Before: accepted, and `elt reconcile` crashed with AttributeError.
    from elt import extractor
    from elt.pipeline import load_project

    (tmp_path / "pipelines.py").write_text(
        "from elt import Pipeline, extractor\n"
        "orders = extractor(lambda since: [], name='orders', primary_key='id', detect_deletes=True)\n"
        "Pipeline('shop', streams=[orders])\n"
    )
    with pytest.raises(ConfigError, match="detect_deletes = True needs a way to list the source's keys"):
        load_project(tmp_path)
    assert extractor(lambda since: [], name="orders", primary_key="id").detect_deletes is False


# --- a single-page stream whose response says there is more ---------------------------------------


class Single(RestExtractor):
    name = "items"
    base_url = "http://127.0.0.1:9"
    path = "/single"
    records_path = "data"
    primary_key = "id"


@pytest.mark.parametrize("extra, signal", [
    ({"has_more": True}, "has_more: true"),
    ({"next": "/single?page=2"}, "next: '/single?page=2'"),
    ({"meta": {"total": 300}}, "meta.total: 300"),
], ids=["has_more", "next-link", "total"])
def test_a_single_page_read_whose_response_says_there_is_more_ends_partial(fake_api, loader, db, extra, signal):
    fake_api.route("/single", lambda request: {"data": [{"id": i} for i in range(100)], **extra})
    result = run(Pipeline("shop", streams=[Single(base_url=fake_api.url)]), loader)
    assert result.status == "partial"
    message = result.summary.error_message or ""
    assert signal in message and "paginator" in message, message
    assert len(table_rows(db, "raw.shop_items", "id")) == 100  # what was read is loaded


def test_a_single_page_read_that_holds_everything_it_announces_is_a_success(fake_api, loader, db):
    fake_api.route("/single", lambda request: {"data": [{"id": i} for i in range(100)], "has_more": False,
                                               "next": None, "total": 100})
    assert run(Pipeline("shop", streams=[Single(base_url=fake_api.url)]), loader).status == "success"


def test_reconcile_marks_nothing_when_the_key_listing_says_it_is_short(fake_api, loader, db):
    fake_api.route("/single", lambda request: {"data": [{"id": i} for i in range(300)]})
    fake_api.route("/single/ids", lambda request: {"data": [{"id": i} for i in range(100)], "has_more": True})
    pipeline = Pipeline("shop", streams=[Single(base_url=fake_api.url, detect_deletes=True, keys_path="/single/ids")])
    assert run(pipeline, loader).status == "success"
    result = Runner(pipeline, loader=loader).reconcile()
    assert result.status == "failed"
    assert "key listing may have missed keys" in (result.summary.error_message or "")
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items WHERE _deleted_at IS NOT NULL").fetchone()["n"] == 0
