"""The retry wait (Retry-After honoured, backoff capped) and the cursor's textual form, as plain functions."""

from __future__ import annotations

import datetime as dt
import email.utils

import httpx
import pytest
from tenacity import Future, RetryCallState, Retrying

from elt.extractors.cursor_text import text_like
from elt.extractors.retries import ServerWait, TransientFault


def state_after(attempt: int, fault: Exception) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.outcome = Future.construct(attempt, fault, True)
    return state


def answer(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(status, headers=headers, request=httpx.Request("GET", "http://127.0.0.1/items"))


def test_the_wait_is_the_servers_retry_after_in_seconds_or_as_a_date():
    wait = ServerWait(backoff=1.0, cap=60.0)
    assert wait(state_after(1, TransientFault("429", "429", answer(429, **{"Retry-After": "7"})))) == 7
    later = email.utils.format_datetime(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30), usegmt=True)
    assert 28 <= wait(state_after(1, TransientFault("503", "5xx", answer(503, **{"Retry-After": later})))) <= 30


def test_the_backoff_has_full_jitter_and_is_capped():
    wait = ServerWait(backoff=1.0, cap=5.0)
    waits = [wait(state_after(12, TransientFault("timeout", "timeout"))) for _ in range(200)]
    assert all(0 <= w <= 5.0 for w in waits) and max(waits) > 2.5  # 2**11 s uncapped
    assert all(0 <= wait(state_after(1, TransientFault("5xx", "5xx", answer(500)))) <= 1.0 for _ in range(50))


MOMENT = dt.datetime(2024, 6, 30, 23, 59, 59, 987654, tzinfo=dt.UTC)


@pytest.mark.parametrize(("sample", "expected"), [
    ("2024-01-01T00:00:00.000Z", "2024-06-30T23:59:59.987Z"),
    ("2024-01-01T00:00:00Z", "2024-06-30T23:59:59Z"),
    ("2024-01-01 00:00:00", "2024-06-30 23:59:59"),
    ("2024-01-01T00:00:00.000000+00:00", "2024-06-30T23:59:59.987654+00:00"),
    ("2024-01-01T00:00:00+0200", "2024-07-01T01:59:59+0200"),
    ("2024-01-01T00:00:00.123456789-05:00", "2024-06-30T18:59:59.987654000-05:00"),
    ("2024-01-01", "2024-06-30"),
])
def test_a_timestamp_is_written_like_the_sources_values(sample, expected):
    assert text_like(MOMENT, sample) == expected


def test_an_unknown_form_falls_back_to_none():
    assert text_like(MOMENT, "1719791999") is None and text_like(MOMENT, None) is None and text_like(5, "x") is None
