"""Structured logging: readable console lines for people, JSON lines for machines.

``ELT_LOG_FORMAT=json`` switches to one JSON object per line. Every line passes
through the secret redactor last, so no processor or caller can leak a secret.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from elt.secrets import redact_value

_configured = False


def _redact_processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    return {key: redact_value(value) for key, value in event.items()}


def configure_logging(*, fmt: str | None = None, level: str | None = None, force: bool = False) -> None:
    """Set up structlog once per process (again when ``force``)."""
    global _configured
    if _configured and not force:
        return
    fmt = (fmt or os.environ.get("ELT_LOG_FORMAT", "console")).lower()
    level_name = (level or os.environ.get("ELT_LOG_LEVEL", "INFO")).upper()
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level_name, logging.INFO)),
        # Logs go to stderr so that `--json` output on stdout stays parseable.
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(**bound: Any) -> structlog.typing.FilteringBoundLogger:
    configure_logging()
    return structlog.get_logger("elt").bind(**bound)
