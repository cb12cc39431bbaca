"""Helpers for testing pipelines: a fake JSON API on 127.0.0.1."""

from elt.testing.fake_api import FakeApi, Reply, Request

__all__ = ["FakeApi", "Reply", "Request"]
