"""Log lines: UTC, the request id on every line, and no token, link, grant or configured secret.

The same `RedactFilter` guards the app's loggers and gunicorn's error and access logs (gunicorn's own
"Error handling request /m/<grant>" line would otherwise print a grant). It rewrites the message and a
traceback's text before any handler formats them.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterable

from gunicorn.glogging import Logger as _GunicornLogger

from .. import redact, requestid

FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s [%(request_id)s] %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"


class RedactFilter(logging.Filter):
    """Blank token paths, token-shaped text and the configured secrets in a record; add its request id."""

    secrets: tuple[str, ...] = ()

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(record, "request_id", None) or requestid.current() or "-"
        message = self._clean(record.getMessage())
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        if record.stack_info:
            record.stack_info = self._clean(record.stack_info)
        return True

    def _clean(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, redact.REDACTED)
        return redact.redact(text)


FILTER = RedactFilter()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (test runners and daemons swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def setup(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    """Give the `resolver` loggers one stderr handler with the UTC format and the filter (idempotent)."""
    FILTER.secrets = redact.searchable_secrets(secrets)
    logger = logging.getLogger("resolver")
    logger.setLevel(level)
    if any(FILTER in h.filters for h in logger.handlers):
        return
    handler = _StderrHandler()
    formatter = logging.Formatter(FORMAT, DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    handler.addFilter(FILTER)
    logger.addHandler(handler)


class GunicornLogger(_GunicornLogger):
    """gunicorn's logger with the redaction filter on its error and access logs (`logger_class`)."""

    def setup(self, cfg) -> None:  # type: ignore[no-untyped-def]
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if FILTER not in log.filters:
                log.addFilter(FILTER)
