"""How every stratafl process logs: one level and one format, set once per process.

``text`` is for people (``time logger LEVEL message``); ``json`` is one JSON object per line
for log shippers (Loki, Elasticsearch, CloudWatch), with the same fields and any
``extra={...}`` a call passes. Tiers started by the launcher inherit the level and the
format through ``STRATA_LOG_LEVEL`` and ``STRATA_LOG_FORMAT``, so a whole local federation
logs one way.
"""

from __future__ import annotations

import json
import logging
import os
from enum import StrEnum
from typing import Any

from stratafl.errors import ConfigError

__all__ = ["LEVEL_ENV", "FORMAT_ENV", "LogFormat", "configure_logging", "JsonFormatter"]

LEVEL_ENV = "STRATA_LOG_LEVEL"
FORMAT_ENV = "STRATA_LOG_FORMAT"
LEVELS = ("debug", "info", "warning", "error")


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


_STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, extras, the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_FIELDS and not key.startswith("_"):
                body[key] = value
        if record.exc_info:
            body["traceback"] = self.formatException(record.exc_info)
        return json.dumps(body, default=str)


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Set the root logger's level and format (default: ``$STRATA_LOG_LEVEL`` or info,
    ``$STRATA_LOG_FORMAT`` or text) and export both, so child tiers log the same way."""
    level = (level or os.environ.get(LEVEL_ENV) or "info").lower()
    fmt = (fmt or os.environ.get(FORMAT_ENV) or LogFormat.TEXT).lower()
    if level not in LEVELS:
        raise ConfigError(f"log level {level!r} is not one of {', '.join(LEVELS)}")
    if fmt not in tuple(LogFormat):
        raise ConfigError(f"log format {fmt!r} is not one of {', '.join(LogFormat)}")
    handler = logging.StreamHandler()
    if fmt == LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    os.environ[LEVEL_ENV], os.environ[FORMAT_ENV] = level, fmt
