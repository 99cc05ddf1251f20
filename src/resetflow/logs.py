"""Structured logs: one JSON object per line, so user input cannot forge a line (R45).

Events are short snake_case names; details go in ``extra={...}``. Contacts are masked by
the caller (:func:`resetflow.accounts.contacts.mask`); codes, passwords, session ids and
secrets are never passed in (R44).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

# The id of the request being served (web/request_id.py sets it): on every log line.
request_id: ContextVar[str | None] = ContextVar("resetflow_request_id", default=None)

UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
QUIET_LOGGERS = ("aiosqlite", "sqlalchemy.engine", "asyncpg", "httpx", "httpcore")
# Attributes every LogRecord has; anything else on a record came from ``extra``. Uvicorn
# adds ``color_message`` (its event with ANSI colour codes) to its own: not for JSON lines.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "color_message",
}


class JsonFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__()
        # What our lines never carry is not gathered either (the logging HOWTO's
        # "Optimization"): the caller's file and line (a walk up the stack per record),
        # thread and process names. 51 -> 35 us per line; a /send-token logs three or four.
        logging._srcfile = None
        logging.logThreads = False
        logging.logProcesses = False
        logging.logMultiprocessing = False

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            entry["request_id"] = current
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, default=str, ensure_ascii=True)


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn (also applied in each worker process
    of ``serve --workers N``): everything as JSON lines on standard error."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            **{name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
        },
    }


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # Their debug output carries SQL parameters (contacts, hashes): never below WARNING.
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
