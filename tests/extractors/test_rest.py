"""RestExtractor against a real HTTP server: retries, bad bodies, rate limits, child streams, incremental loads."""

from __future__ import annotations

import datetime as dt
import decimal
import email.utils
import json
import threading
import time

import pytest

from elt import (
    Cursor,
    OffsetPaginator,
    PageNumberPaginator,
    Pipeline,
    RateLimit,
    RestExtractor,
    SourceError,
)
from elt.extractors.rest import _retry_after
from elt.logs import configure_logging
from elt.testing import Reply
from tests.extractors.rest_helpers import ids, make_items, read_all
from tests.helpers import run, table_rows

ITEMS = make_items(50)


class Items(RestExtractor):
    name = "items"
    base_url = "http://127.0.0.1:9"
    path = "/items"
    records_path = "data"
    primary_key = "id"
    paginator = PageNumberPaginator(page_size=10)
    backoff = 0.01
    max_backoff = 0.05


def paged(request, items=ITEMS):
    page = int(request.params.get("page", "1"))
    return {"data": items[(page - 1) * 10: page * 10]}


class Flaky:
    """A paged route whose request number ``n`` (1-based) answers ``faults[n]`` instead."""

    def __init__(self, fake_api, faults):
        self.api, self.faults = fake_api, faults
        fake_api.route("/items", self)

    def __call__(self, request):
        fault = self.faults.get(self.api.count("/items"))
        return fault(request) if callable(fault) else fault or paged(request)


# --- retries ------------------------------------------------------------------------


def test_429_with_retry_after_is_honoured_then_the_page_loads(fake_api):
    Flaky(fake_api, {2: Reply({"error": "slow down"}, status=429, headers={"Retry-After": "1"})})
    started = time.monotonic()
    assert ids(read_all(Items(base_url=fake_api.url))) == ids(ITEMS)
    assert time.monotonic() - started >= 1.0  # the server's word, not the 10 ms backoff
    assert [r.params["page"] for r in fake_api.requests] == ["1", "2", "2", "3", "4", "5", "6"]


def test_retry_after_as_an_http_date_and_rate_limit_reset_headers(fake_api):
    # Parsed from real responses of the fake API (header forms are what matters here).
    soon = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True)
    fake_api.route("/date", lambda r: Reply({}, status=429, headers={"Retry-After": soon}))
    fake_api.route("/epoch", lambda r: Reply({}, status=429, headers={"X-RateLimit-Reset": str(int(time.time()) + 20)}))
    fake_api.route("/delta", lambda r: Reply({}, status=429, headers={"RateLimit-Reset": "7"}))
    fake_api.route("/none", lambda r: Reply({}, status=503))
    import httpx

    waits = {path: _retry_after(httpx.get(fake_api.url + path)) for path in ("/date", "/epoch", "/delta", "/none")}
    assert 28 <= waits["/date"] <= 30
    assert 18 <= waits["/epoch"] <= 20
    assert waits["/delta"] == 7
    assert waits["/none"] is None


def test_5xx_then_success(fake_api):
    Flaky(fake_api, {1: Reply({"error": "oops"}, status=500), 2: Reply(body=b"bad gateway", status=502),
                     4: Reply({}, status=503), 5: Reply({}, status=504)})
    assert ids(read_all(Items(base_url=fake_api.url))) == ids(ITEMS)


def test_a_connection_dropped_mid_body_is_retried(fake_api):
    def half(request):
        return Reply(paged(request), drop_after=25)

    Flaky(fake_api, {3: half})
    assert ids(read_all(Items(base_url=fake_api.url))) == ids(ITEMS)
    assert fake_api.count("/items") == 7


def test_a_timeout_is_retried(fake_api):
    Flaky(fake_api, {1: lambda r: Reply(paged(r), delay=0.6)})
    assert ids(read_all(Items(base_url=fake_api.url, timeout=0.2))) == ids(ITEMS)


def test_retries_run_out_with_url_status_and_body_and_earlier_pages_are_handed_over(fake_api):
    Flaky(fake_api, {n: Reply({"error": "database is down"}, status=503) for n in range(3, 20)})
    stream = Items(base_url=fake_api.url, max_retries=2, params={"status": "open"}, batch_size=10)
    got: list[int] = []
    with pytest.raises(SourceError) as raised:
        for batch in stream.extract(_state()):
            got.extend(ids(batch.records))
    message = str(raised.value)
    assert f"GET {fake_api.url}/items?status=open&page=3 failed after 3 attempts" in message
    assert "HTTP 503 Service Unavailable" in message and "database is down" in message
    assert got == ids(ITEMS[:20])


def test_a_client_error_is_not_retried(fake_api):
    Flaky(fake_api, {1: Reply({"message": "Not Found"}, status=404)})
    with pytest.raises(SourceError, match=r"HTTP 404 Not Found \(check base_url and path\)"):
        read_all(Items(base_url=fake_api.url))
    assert fake_api.count("/items") == 1


def test_a_retry_after_beyond_the_limit_fails_instead_of_blocking(fake_api):
    Flaky(fake_api, {1: Reply({}, status=429, headers={"Retry-After": "3600"})})
    with pytest.raises(SourceError, match="asked to wait 3600 s, longer than max_retry_after=600"):
        read_all(Items(base_url=fake_api.url))


def test_should_retry_hook_can_widen_what_is_transient(fake_api):
    class Picky(Items):
        def should_retry(self, response):
            # This API answers 200 with an error body while it warms up.
            return super().should_retry(response) or b"warming up" in response.content

    Flaky(fake_api, {1: Reply({"status": "warming up"})})
    assert ids(read_all(Picky(base_url=fake_api.url))) == ids(ITEMS)


# --- bodies that are not what was promised ---------------------------------------------


def test_a_cut_or_invalid_2xx_body_is_retried_like_a_5xx_and_counted(fake_api):
    Flaky(fake_api, {2: Reply(body=b'{"data": [{"id": 11, "name": "it'),
                     4: Reply(body=b'{"data": [{"id": 31, "name": "caf\xe9"}]}')})  # invalid UTF-8
    stream = Items(base_url=fake_api.url)
    assert ids(read_all(stream)) == ids(ITEMS)
    assert fake_api.count("/items") == 8
    assert stream.fault_report() == {"retries": {"invalid_body": 2}}


def test_a_body_cut_on_every_attempt_fails_naming_the_url_and_what_was_expected(fake_api):
    Flaky(fake_api, {n: Reply(body=b'{"data": [{"id": 11, "name": "it') for n in range(2, 20)})
    stream = Items(base_url=fake_api.url, max_retries=2)
    with pytest.raises(SourceError) as raised:
        read_all(stream)
    message = str(raised.value)
    assert f"GET {fake_api.url}/items?page=2 failed after 3 attempts" in message
    assert "is not valid JSON" in message and "expected a JSON body with the records at 'data'" in message
    assert stream.fault_report() == {"retries": {"invalid_body": 2}, "failed_urls": [f"{fake_api.url}/items?page=2"]}


def test_a_missing_records_path_is_an_error_not_an_empty_page(fake_api):
    fake_api.route("/items", lambda r: {"results": ITEMS, "count": 50})
    with pytest.raises(SourceError) as raised:
        read_all(Items(base_url=fake_api.url))
    message = str(raised.value)
    assert "has no 'data' on the way to records_path 'data'" in message and "'results', 'count'" in message


def test_records_path_that_is_not_a_list(fake_api):
    fake_api.route("/items", lambda r: {"data": {"id": 1}})
    with pytest.raises(SourceError, match="expected a list of records at records_path 'data'.*found dict"):
        read_all(Items(base_url=fake_api.url))


# --- rate limits -------------------------------------------------------------------------


def test_the_rate_limit_is_never_exceeded(fake_api):
    fake_api.route("/items", lambda r: paged(r, make_items(300)))
    stream = Items(base_url=fake_api.url, rate_limit=RateLimit(per_second=40))
    started = time.monotonic()
    assert len(read_all(stream)) == 300
    elapsed = time.monotonic() - started
    requests = fake_api.count("/items")  # 30 full pages and an empty one
    assert requests == 31
    assert elapsed >= (requests - 1) / 40  # evenly spaced: never above 40/s
    assert elapsed < (requests - 1) / 40 * 1.5  # and not far below it either


def test_streams_sharing_a_limit_share_the_budget(fake_api):
    fake_api.route("/items", lambda r: paged(r, make_items(100)))
    shared = RateLimit(per_second=50)
    streams = [Items(base_url=fake_api.url, rate_limit=shared) for _ in range(2)]
    threads = [threading.Thread(target=read_all, args=(s,)) for s in streams]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - started
    assert fake_api.count("/items") == 22
    assert elapsed >= 21 / 50


def test_rate_limit_token_bucket_arithmetic():
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limit = RateLimit(per_minute=120, burst=3, clock=lambda: now[0], sleep=sleep)
    waits = [limit.acquire() for _ in range(7)]
    assert waits[:3] == [0, 0, 0]  # the burst
    assert waits[3:] == pytest.approx([0.5, 0.5, 0.5, 0.5])  # then 2/s
    now[0] += 10  # idle: the burst refills, but never beyond its size
    assert [limit.acquire() for _ in range(4)] == pytest.approx([0, 0, 0, 0.5])
    limit.defer(5)
    assert limit.acquire() == pytest.approx(5.0)


def test_full_sync_estimate_is_logged_from_the_total(fake_api, capsys):
    configure_logging(fmt="console", force=True)  # log to the stderr capsys captures
    fake_api.route("/items", lambda r: {"data": ITEMS[int(r.params["offset"]):][:10], "total": 2000})
    stream = Items(base_url=fake_api.url, paginator=OffsetPaginator(limit=10, total_path="total", max_pages=2),
                   rate_limit=RateLimit(per_second=50))
    with pytest.raises(SourceError):
        read_all(stream)  # max_pages stops it early; the estimate came first
    err = capsys.readouterr().err
    assert "full sync estimate: 200 pages x 0.02 s/page ≈ 4 s for 2,000 records (50 requests/s, 10 records/page)" in err


def test_x_total_count_gives_the_estimate_and_the_progress_lines(fake_api, capsys, monkeypatch):
    monkeypatch.setattr("elt.extractors.rest.PROGRESS_EVERY", 0.0)  # a progress line per page
    configure_logging(fmt="console", force=True)
    fake_api.route("/items", lambda r: Reply(paged(r), headers={"X-Total-Count": "50"}))
    assert ids(read_all(Items(base_url=fake_api.url))) == ids(ITEMS)
    err = capsys.readouterr().err
    assert "full sync estimate: 5 pages" in err and "for 50 records" in err
    assert "read 20 of 50 records (40%) in 2 pages" in err and "read 50 of 50 records (100%) in 5 pages" in err


# --- child streams ------------------------------------------------------------------------

CUSTOMERS = [{"id": f"cus_{i}", "name": f"Customer {i}"} for i in range(1, 6)]


def test_child_stream_takes_each_parent_record_into_its_path(fake_api):
    fake_api.route("/customers", lambda r: {"data": CUSTOMERS})

    @fake_api.route("/customers/{id}/orders")
    def orders(request):
        n = int(request.path_params["id"].split("_")[1])
        page = int(request.params.get("page", "1"))
        every = [{"id": f"{request.path_params['id']}-o{j}", "total": j} for j in range(n * 3)]
        return {"data": every[(page - 1) * 10: page * 10]}

    class Customers(RestExtractor):
        name = "customers"
        base_url = fake_api.url
        path = "/customers"
        records_path = "data"
        primary_key = "id"

    class Orders(Items):
        name = "orders"
        path = "/customers/{id}/orders"
        parent = Customers
        parent_fields = {"customer_id": "id"}

    orders_read = read_all(Orders(base_url=fake_api.url))
    assert len(orders_read) == sum(3 * i for i in range(1, 6))
    assert {o["customer_id"] for o in orders_read} == {c["id"] for c in CUSTOMERS}
    assert all(o["id"].startswith(o["customer_id"]) for o in orders_read)
    assert Orders(base_url=fake_api.url).sorted_by_cursor is False


# --- through the runner into PostgreSQL ----------------------------------------------------


class Events(RestExtractor):
    """An incremental stream: the API filters on ?updated_since and returns records in cursor order."""

    name = "events"
    base_url = "http://127.0.0.1:9"
    path = "/events"
    records_path = "data"
    primary_key = "id"
    cursor = Cursor("updated_at", param="updated_since")
    paginator = PageNumberPaginator(page_size=10)
    batch_size = 10
    backoff = 0.01
    max_retries = 1


class EventsApi:
    def __init__(self, fake_api, records):
        self.records = records
        self.broken_pages: set[int] = set()
        fake_api.route("/events", lambda request: self.events(request))  # looked up per request: tests may wrap it

    def events(self, request):
        since = request.params.get("updated_since")
        rows = sorted(self.records, key=lambda r: (r["updated_at"], r["id"]))
        if since:
            rows = [r for r in rows if dt.datetime.fromisoformat(r["updated_at"]) >= dt.datetime.fromisoformat(since)]
        page = int(request.params["page"])
        if page in self.broken_pages:
            return Reply({"error": "upstream timeout"}, status=503)
        return {"data": rows[(page - 1) * 10: page * 10]}


def test_incremental_runs_ask_only_for_changes_since_the_watermark(fake_api, database_url, db):
    source = make_items(35)
    api = EventsApi(fake_api, source)
    pipeline = Pipeline("crm", streams=[Events(base_url=fake_api.url)])
    assert run(pipeline).status == "success"
    first = fake_api.requests[:]
    assert all("updated_since" not in r.params for r in first)

    changed = dict(source[9], name="renamed")
    changed["updated_at"] = (dt.datetime.fromisoformat(source[-1]["updated_at"]) + dt.timedelta(minutes=5)).isoformat()
    api.records = source[:9] + source[10:] + [changed, *make_items(40)[35:]]
    result = run(pipeline)
    assert result.status == "success"
    second = fake_api.requests[len(first):]
    assert {r.params["updated_since"] for r in second} == {source[-1]["updated_at"]}
    assert result.streams["events"].extracted == 7  # the last item again (inclusive bound), the change, 5 new

    current = table_rows(db, "stg.crm_events", "id, _raw_payload->>'name' AS name", "id::int")
    assert [r["id"] for r in current] == [str(i) for i in sorted(r["id"] for r in api.records)]
    assert next(r["name"] for r in current if r["id"] == "10") == "renamed"


def test_a_failed_page_keeps_earlier_pages_and_the_rerun_ends_with_exactly_the_source(fake_api, database_url, db):
    source = make_items(45)
    api = EventsApi(fake_api, source)
    api.broken_pages = {3}
    pipeline = Pipeline("crm", streams=[Events(base_url=fake_api.url)])
    result = run(pipeline)
    assert result.status == "failed"
    assert "events?page=3 failed after 2 attempts: HTTP 503" in result.summary.error_message
    assert table_rows(db, "raw.crm_events", "count(*) AS n")[0]["n"] == 20
    # Page numbers shift when data moves: the watermark only moves after a complete read.
    state = db.execute("SELECT value FROM pipeline.state WHERE stream_name = 'events' AND key = 'watermark'").fetchone()
    assert state is None

    api.broken_pages = set()
    assert run(pipeline).status == "success"
    current = table_rows(db, "stg.crm_events", "id", "id::int")
    assert [int(r["id"]) for r in current] == ids(source)


def _state():
    from elt.state import StreamState

    return StreamState("test", "items")


def loaded(db) -> int:
    """Rows in raw.crm_events (0 before the first batch has created it)."""
    if db.execute("SELECT to_regclass('raw.crm_events') AS t").fetchone()["t"] is None:
        return 0
    return db.execute("SELECT count(*) AS n FROM raw.crm_events").fetchone()["n"]


CRASH_PROJECT = '''
import os
from elt import Cursor, PageNumberPaginator, Pipeline, RestExtractor

class Events(RestExtractor):
    name = "events"
    base_url = os.environ["EVENTS_API_URL"]
    path = "/events"
    records_path = "data"
    primary_key = "id"
    cursor = Cursor("updated_at", param="updated_since")
    paginator = PageNumberPaginator(page_size=10)
    complete_per_batch = True  # this source does not change during a read: the watermark may move per page
    batch_size = 10

Pipeline("crm", streams=[Events()])
'''


@pytest.mark.slow
def test_a_run_killed_mid_stream_then_re_run_ends_with_exactly_the_servers_records(fake_api, tmp_path, database_url, db):
    import signal

    from tests.fixtures.projects import popen_elt, run_elt, write_project

    source = make_items(60)
    api = EventsApi(fake_api, source)
    reached, release = threading.Event(), threading.Event()
    original = api.events

    def events(request):
        if request.params.get("page") == "4" and not release.is_set():
            reached.set()
            release.wait(timeout=30)  # hold page 4 until the test has killed the run
        return original(request)

    api.events = events
    project = write_project(tmp_path / "p", CRASH_PROJECT)
    proc = popen_elt(["run"], cwd=project, database_url=database_url, EVENTS_API_URL=fake_api.url)
    try:
        assert reached.wait(timeout=60), "the run never asked for page 4"
        # Pages 1-3 are batches of their own (read ahead of the loader); wait until all three are committed.
        deadline = time.monotonic() + 30
        while loaded(db) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        release.set()
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert loaded(db) == 30

    # Meanwhile the source changed: one record updated, two added.
    api.records = source[1:] + [dict(source[0], name="changed", updated_at="2026-06-01T00:00:00+00:00"),
                                *make_items(62)[60:]]
    rerun = run_elt(["run"], cwd=project, database_url=database_url, EVENTS_API_URL=fake_api.url)
    assert rerun.returncode == 0, rerun.stderr
    # The re-run started from the killed run's committed watermark, not from scratch.
    resumed = [r for r in fake_api.requests if r.path == "/events" and "updated_since" in r.params]
    assert resumed and resumed[0].params["updated_since"] == source[29]["updated_at"]
    current = db.execute("SELECT id::int AS id, _raw_payload AS payload FROM stg.crm_events ORDER BY 1").fetchall()
    assert [r["payload"] for r in current] == sorted(api.records, key=lambda r: r["id"])
    statuses = [r["status"] for r in db.execute("SELECT status FROM pipeline.execution_log ORDER BY id").fetchall()]
    assert statuses == ["failed", "success"]


class BodyItems(RestExtractor):
    """``/items`` with its records at ``data``: the stream the body tests below serve odd bodies to."""

    name = "items"
    path = "/items"
    records_path = "data"
    primary_key = "id"


def test_a_body_with_huge_integers_nan_and_a_lone_surrogate_loses_no_digit_and_no_page(fake_api, loader, db):
    # Found by the reliability suite: orjson read 2**64 + 1 as a float (digits lost) and refused
    # the whole page for a NaN or a lone surrogate escape (what a Python API's json.dumps sends).
    body = b'{"data": [{"id": 1, "big": 18446744073709551617, "score": NaN}, {"id": 2, "name": "x\\ud800"}]}'
    fake_api.route("/items", lambda request: Reply(body=body))

    result = run(Pipeline("shop", streams=[BodyItems(base_url=fake_api.url, max_bad_ratio=1.0)]), loader)
    assert result.status == "partial" and result.summary.rows_rejected == 1  # the surrogate: PostgreSQL cannot hold it
    (payload,) = db.execute("SELECT _raw_payload::text AS p FROM raw.shop_items").fetchall()
    assert '"big": 18446744073709551617' in payload["p"] and '"score": "NaN"' in payload["p"]


def test_numbers_a_double_cannot_hold_are_stored_digit_for_digit(fake_api, loader, db):
    # Found by a new-user trial: money and crypto amounts with more digits than a double holds,
    # and numbers beyond its range, were stored rounded (1e400 even as "Infinity"), with success.
    body = (b'{"data": [{"id": 21, "amount": 0.1234567890123456789, "btc": 12345.123456789012345678},'
            b' {"id": 22, "e": 1e400, "t": 1e-400}, {"id": 23, "p": 19.990, "q": 0.1, "r": 2.5e-3}]}')
    fake_api.route("/items", lambda request: Reply(body=body))

    result = run(Pipeline("shop", streams=[BodyItems(base_url=fake_api.url)]), loader)
    assert result.status == "success" and result.summary.rows_loaded == 3
    sent = json.loads(body, parse_float=decimal.Decimal)["data"]
    stored = [json.loads(r["p"], parse_float=decimal.Decimal) for r in
              db.execute("SELECT _raw_payload::text AS p FROM raw.shop_items ORDER BY _raw_payload->>'id'")]
    assert stored == sent  # compared as exact decimals: every digit, every magnitude
    # Numbers a double holds stay what the fast path writes, so a page's path never changes a hash.
    assert stored[2] == {"id": 23, "p": decimal.Decimal("19.99"), "q": decimal.Decimal("0.1"),
                         "r": decimal.Decimal("0.0025")}


@pytest.mark.parametrize("big", [False, True], ids=["orjson", "long-number"])
def test_a_record_nested_5000_levels_deep_is_dead_lettered_and_the_rest_of_the_page_loads(fake_api, loader, db, big):
    # Found by trying the edge: both JSON parsers stop near 1,000 levels and the page failed as
    # "not valid JSON" (retried, then the stream failed) for one record. A 20-digit number sends
    # the body down the standard library's path instead of orjson's.
    deep = b"[" * 5000 + b"]" * 5000
    number = b"18446744073709551617" if big else b"3"
    body = (b'{"data": [{"id": 1, "n": ' + number + b'}, {"id": 2, "deep": {"a": ' + deep + b'}},'
            b' {"id": 3, "name": "[{\\"not\\": \\"nesting\\"}]"}]}')
    fake_api.route("/items", lambda request: Reply(body=body))

    result = run(Pipeline("shop", streams=[BodyItems(base_url=fake_api.url, max_bad_ratio=0.5)]), loader)
    assert result.status == "partial", result.summary.error_message
    assert (result.summary.rows_loaded, result.summary.rows_rejected) == (2, 1)
    assert len(fake_api.requests) == 1  # not retried as a broken body
    stored = db.execute("SELECT _raw_payload AS p FROM raw.shop_items ORDER BY id").fetchall()
    assert [r["p"] for r in stored] == [{"id": 1, "n": int(number)}, {"id": 3, "name": '[{"not": "nesting"}]'}]
    (letter,) = db.execute("SELECT error_message, kind, source_record->>'id' AS id FROM pipeline.dead_letter")
    assert letter["id"] == "2" and letter["kind"] == "problem"
    # The response: object, data, record, "deep" and the 5,000 lists.
    message = letter["error_message"]
    assert "nested too deeply: 5,004 levels in what the source sent, more than the 256 levels elt reads" in message
