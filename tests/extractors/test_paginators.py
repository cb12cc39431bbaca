"""Every paginator against a real HTTP server: all records, no extra requests, and loops refused."""

from __future__ import annotations

import pytest

from elt import (
    CursorPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    PageNumberPaginator,
    RestExtractor,
    SinglePage,
    SourceError,
    StartingAfterPaginator,
)
from elt.extractors.rest import PaginationError
from elt.testing import Reply
from tests.extractors.rest_helpers import ids, make_items, read_all

ITEMS = make_items(250)


class Items(RestExtractor):
    name = "items"
    base_url = "http://127.0.0.1:9"  # replaced per test with the fake API's address
    path = "/items"
    records_path = "data"
    primary_key = "id"
    backoff = 0.01


def test_page_number_stops_on_a_short_page(fake_api):
    @fake_api.route("/items")
    def items(request):
        page, size = int(request.params["page"]), int(request.params["per_page"])
        return {"data": ITEMS[(page - 1) * size: page * size]}

    stream = Items(base_url=fake_api.url, paginator=PageNumberPaginator(size_param="per_page", page_size=100))
    assert ids(read_all(stream)) == ids(ITEMS)
    assert [r.params["page"] for r in fake_api.requests] == ["1", "2", "3"]


def test_page_number_stops_at_total_pages_without_asking_for_an_empty_page(fake_api):
    @fake_api.route("/items")
    def items(request):
        page = int(request.params["p"])
        return {"data": ITEMS[(page - 1) * 125: page * 125], "meta": {"total_pages": 2}}

    stream = Items(base_url=fake_api.url, paginator=PageNumberPaginator(param="p", total_pages_path="meta.total_pages"))
    assert ids(read_all(stream)) == ids(ITEMS)
    assert fake_api.count("/items") == 2


def test_page_number_without_size_stops_on_an_empty_page(fake_api):
    @fake_api.route("/items")
    def items(request):
        page = int(request.params["page"])
        return {"data": ITEMS[page * 100: (page + 1) * 100]}

    stream = Items(base_url=fake_api.url, paginator=PageNumberPaginator(start=0))
    assert ids(read_all(stream)) == ids(ITEMS)
    assert [r.params["page"] for r in fake_api.requests] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("stop", ["total", "has_more", "short_page"])
def test_offset_limit_stops_on_total_has_more_or_a_short_page(fake_api, stop):
    items_200 = ITEMS[:200]  # a multiple of the limit: a short page cannot be what stops total/has_more

    @fake_api.route("/items")
    def items(request):
        offset, limit = int(request.params["offset"]), int(request.params["limit"])
        body = {"data": items_200[offset: offset + limit]}
        if stop == "total":
            body["total"] = len(items_200)
        if stop == "has_more":
            body["has_more"] = offset + limit < len(items_200)
        return body

    paginator = OffsetPaginator(limit=50, total_path="total" if stop == "total" else None,
                                has_more_path="has_more" if stop == "has_more" else None)
    assert ids(read_all(Items(base_url=fake_api.url, paginator=paginator))) == ids(items_200)
    offsets = [int(r.params["offset"]) for r in fake_api.requests]
    # Only the short-page rule needs to see an empty page to know it is done.
    assert offsets == ([0, 50, 100, 150, 200] if stop == "short_page" else [0, 50, 100, 150])


def test_cursor_token_in_the_body(fake_api):
    @fake_api.route("/items")
    def items(request):
        start = int(request.params.get("cursor", "0"))
        page = ITEMS[start: start + 100]
        nxt = str(start + 100) if start + 100 < len(ITEMS) else None
        return {"data": page, "meta": {"next_cursor": nxt}}

    stream = Items(base_url=fake_api.url, paginator=CursorPaginator(token_path="meta.next_cursor"))
    assert ids(read_all(stream)) == ids(ITEMS)
    assert [r.params.get("cursor") for r in fake_api.requests] == [None, "100", "200"]


def test_starting_after_with_has_more(fake_api):
    @fake_api.route("/items")
    def items(request):
        after = int(request.params.get("starting_after", "0"))
        limit = int(request.params["limit"])
        page = [i for i in ITEMS if i["id"] > after][:limit]
        return {"data": page, "has_more": bool(page) and page[-1]["id"] < ITEMS[-1]["id"]}

    stream = Items(base_url=fake_api.url, paginator=StartingAfterPaginator(limit=100))
    assert ids(read_all(stream)) == ids(ITEMS)
    assert [r.params.get("starting_after") for r in fake_api.requests] == [None, "100", "200"]


def test_next_url_in_the_body_relative_or_absolute(fake_api):
    @fake_api.route("/items")
    def items(request):
        page = int(request.params.get("page", "1"))
        nxt = None
        if page == 1:
            nxt = "/items?page=2&token=abc"
        elif page == 2:
            nxt = f"{fake_api.url}/items?page=3&token=abc"
        return {"data": ITEMS[(page - 1) * 100: page * 100], "next": nxt}

    stream = Items(base_url=fake_api.url, paginator=NextUrlPaginator(), params={"filter": "all"})
    assert ids(read_all(stream)) == ids(ITEMS)
    # The first request carries the stream's params; later ones follow the URL as given.
    assert [r.params for r in fake_api.requests] == [
        {"filter": "all"}, {"page": "2", "token": "abc"}, {"page": "3", "token": "abc"}]


def test_link_header(fake_api):
    @fake_api.route("/items")
    def items(request):
        page = int(request.params.get("page", "1"))
        headers = {}
        if page < 3:
            headers["Link"] = (f'<{fake_api.url}/items?page={page + 1}>; rel="next", '
                               f'<{fake_api.url}/items?page=3>; rel="last"')
        return Reply(ITEMS[(page - 1) * 100: page * 100], headers=headers)

    stream = Items(base_url=fake_api.url, records_path="", paginator=LinkHeaderPaginator())
    assert ids(read_all(stream)) == ids(ITEMS)
    assert fake_api.count("/items") == 3


def test_single_page(fake_api):
    fake_api.route("/items", lambda request: ITEMS[:7])
    stream = Items(base_url=fake_api.url, records_path="", paginator=SinglePage())
    assert ids(read_all(stream)) == ids(ITEMS[:7])
    assert fake_api.count("/items") == 1


def test_a_paginator_handed_the_same_token_twice_stops_with_a_clear_error(fake_api):
    @fake_api.route("/items")
    def items(request):
        # A buggy API: after the second page it keeps answering with the same cursor.
        cursor = request.params.get("cursor")
        if cursor is None:
            return {"data": ITEMS[:100], "next_cursor": "c2"}
        return {"data": ITEMS[100:200], "next_cursor": "c2"}

    stream = Items(base_url=fake_api.url, paginator=CursorPaginator())
    seen: list[int] = []
    with pytest.raises(PaginationError) as raised:
        for batch in stream.extract(_state()):
            seen.extend(ids(batch.records))
    message = str(raised.value)
    assert "a page already requested in this read" in message and "'c2'" in message and "pages 2 and 3" in message
    # The pages read before the loop was noticed are handed over, so they load.
    assert seen == ids(ITEMS[:200])
    assert fake_api.count("/items") == 2


def test_max_pages_guard(fake_api):
    @fake_api.route("/items")
    def items(request):
        page = int(request.params["page"])
        return {"data": ITEMS[(page - 1) * 10: page * 10]}

    stream = Items(base_url=fake_api.url, paginator=PageNumberPaginator(max_pages=3))
    with pytest.raises(PaginationError, match="max_pages=3"):
        read_all(stream)
    assert fake_api.count("/items") == 3


def test_a_paginator_setting_that_does_not_match_the_body_is_an_error(fake_api):
    fake_api.route("/items", lambda request: {"data": ITEMS[:10], "has_more": True})
    stream = Items(base_url=fake_api.url, paginator=StartingAfterPaginator(id_field="uuid"))
    with pytest.raises(SourceError, match="StartingAfterPaginator found no 'uuid'"):
        read_all(stream)


def _state():
    from elt.state import StreamState

    return StreamState("test", "items")


# --- issue 13: loop guard on full URLs, capped page sizes, short pages with other signals --------


def test_a_next_link_to_the_first_page_spelled_differently_is_refused_before_it_is_requested(fake_api):
    @fake_api.route("/items")
    def items(request):
        # The next link names the first page again: same parameters, other order, explicit port.
        link = f"<{fake_api.url}/items?status=open&per_page=10>; rel=\"next\""
        return Reply({"data": ITEMS[:10]}, headers={"Link": link})

    stream = Items(base_url=fake_api.url, params={"per_page": 10, "status": "open"}, paginator=LinkHeaderPaginator())
    with pytest.raises(PaginationError, match="a page already requested in this read"):
        read_all(stream)
    assert fake_api.count("/items") == 1


def test_an_empty_link_header_is_the_last_page(fake_api):
    fake_api.route("/items", lambda r: Reply({"data": ITEMS[:10]}, headers={"Link": ""}))
    assert ids(read_all(Items(base_url=fake_api.url, paginator=LinkHeaderPaginator()))) == ids(ITEMS[:10])
    assert fake_api.count("/items") == 1


@pytest.mark.parametrize("style", ["offset", "page_number"])
def test_an_api_capping_the_page_size_is_paged_to_the_end(fake_api, style):
    cap = 30  # the API serves at most 30 records per page whatever is asked

    @fake_api.route("/items")
    def items(request):
        if style == "offset":
            offset = int(request.params["offset"])
            return {"data": ITEMS[offset: offset + min(cap, int(request.params["limit"]))]}
        page = int(request.params["page"])
        return {"data": ITEMS[(page - 1) * cap: page * cap]}

    paginator = (OffsetPaginator(limit=100) if style == "offset"
                 else PageNumberPaginator(size_param="per_page", page_size=100))
    assert ids(read_all(Items(base_url=fake_api.url, paginator=paginator))) == ids(ITEMS)
    assert fake_api.count("/items") == 9  # 8 full pages of 30 and the short ninth (10)


def test_a_short_page_does_not_end_paging_when_the_total_says_more(fake_api):
    @fake_api.route("/items")
    def items(request):
        offset = int(request.params["offset"])
        # The API drops records it hides from this client: page 2 comes back short.
        served = ITEMS[offset: offset + 100] if offset != 100 else ITEMS[100:160]
        return {"data": served, "total": len(ITEMS)}

    got = read_all(Items(base_url=fake_api.url, paginator=OffsetPaginator(limit=100, total_path="total")))
    assert ids(got) == ids(ITEMS)
    assert [r.params["offset"] for r in fake_api.requests] == ["0", "100", "160"]
