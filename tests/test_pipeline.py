"""Pipelines refuse declarations that would mix two streams' records in one raw table."""

from __future__ import annotations

import pytest

from elt import Pipeline, extractor
from elt.errors import ConfigError


def stream(name: str, source: str | None = None):
    return extractor(lambda: iter(()), name=name, primary_key="id", source=source)


def test_two_streams_of_one_pipeline_on_one_raw_table_are_refused():
    with pytest.raises(ConfigError, match=r"streams shop.orders_v2 and shop.v2 would both load raw.shop_orders_v2"):
        Pipeline("shop", streams=[stream("orders_v2"), stream("v2", source="shop_orders")])


def test_two_pipelines_on_one_raw_table_are_refused_naming_both():
    Pipeline("shop", streams=[stream("orders")])
    with pytest.raises(ConfigError, match=r"streams shop.orders and backfill.orders would both load raw.shop_orders"):
        Pipeline("backfill", streams=[stream("orders", source="shop")])


def test_declaring_the_same_pipeline_again_replaces_it():
    Pipeline("shop", streams=[stream("orders")])
    Pipeline("shop", streams=[stream("orders")])  # a project re-imported
