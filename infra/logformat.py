"""How log lines look: the text lines as they always were, or (``CHAINLOOM_LOG_FORMAT=json``) one JSON object per line.

A JSON line has ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``,
``message``, the ``request_id`` of the request being handled when there is one, an
``exception`` (its traceback) when one was logged, and the fields a logger adds
on purpose through ``extra=`` among ``FIELDS`` — the access log's request id,
actor, method, route, status and duration (``web/access_log.py``). Nothing else
of a record is written: no header, body or query value reaches a line unless a
message itself names it, and none does.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
# Fields a record may carry into its JSON line (set with ``logger.info(..., extra={...})``).
FIELDS = ("request_id", "actor", "method", "route", "status", "duration_ms", "remote")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in FIELDS:
            value = record.__dict__.get(field)
            if value is not None and value != "-":
                line[field] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``CHAINLOOM_LOG_FORMAT`` ("text" or "json")."""
    if log_format == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)
