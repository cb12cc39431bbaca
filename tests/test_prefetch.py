"""Reading ahead in a thread keeps order, surfaces errors in place and stops with the consumer."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from elt.prefetch import prefetch


def test_items_arrive_in_order_and_at_most_depth_ahead():
    produced: list[int] = []

    def source():
        for i in range(50):
            produced.append(i)
            yield i

    seen = []
    for item in prefetch(source(), depth=2):
        time.sleep(0.001)
        # The producer is never more than depth (+1 in hand) ahead of the consumer.
        assert len(produced) - len(seen) <= 4
        seen.append(item)
    assert seen == list(range(50))


def test_an_error_in_the_producer_is_raised_after_the_items_before_it():
    def source():
        yield 1
        yield 2
        raise ValueError("source broke")

    seen = []
    with pytest.raises(ValueError, match="source broke"):
        for item in prefetch(source()):
            seen.append(item)
    assert seen == [1, 2]


def test_the_producer_stops_when_the_consumer_stops():
    stopped = threading.Event()

    def endless():
        try:
            yield from range(10**9)
        finally:
            stopped.set()

    for item in prefetch(endless(), depth=1):
        if item == 3:
            break
    deadline = time.monotonic() + 5
    while not stopped.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    threads = [t for t in threading.enumerate() if t.name == "elt-extract"]
    assert not threads or not any(t.is_alive() for t in threads)


def test_threads_switch_quickly_while_a_producer_runs_and_the_interval_is_restored_after():
    before = sys.getswitchinterval()
    outer = prefetch(iter(range(3)), depth=1)
    assert next(outer) == 0
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    # A second producer at the same time keeps the short interval until both are done.
    assert list(prefetch(iter(range(3)), depth=1)) == [0, 1, 2]
    assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert list(outer) == [1, 2]
    assert sys.getswitchinterval() == before
