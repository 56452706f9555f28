"""Log redaction: the app's handler and gunicorn's own error and access logs never print a token."""

from __future__ import annotations

import logging
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from resolver.ops import logs

GRANT = ".eJyrVirOLy1KTlWyUipKTc4vSsnMSy9W0lHKTq0ECgW5GgLZ.Zm9vYmFyYmF6cXV4cXV1eHF1dXg"
SECRET = "configured-secret-value-1234567890"


@pytest.fixture
def gunicorn_logger(tmp_path):
    """gunicorn's loggers are process-wide: close their files and restore the filter afterwards."""
    secrets = logs.FILTER.secrets
    yield lambda: make_logger(tmp_path)
    logs.FILTER.secrets = secrets
    for name in ("gunicorn.error", "gunicorn.access"):
        for handler in list(logging.getLogger(name).handlers):
            handler.close()
            logging.getLogger(name).removeHandler(handler)


def make_logger(tmp_path) -> logs.GunicornLogger:
    cfg = Config()
    cfg.set("errorlog", str(tmp_path / "error.log"))
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("access_log_format", '%(h)s "%(r)s" %(s)s')  # the default-style request line, with the path
    return logs.GunicornLogger(cfg)


def test_gunicorn_error_log_redacts_uri_and_traceback(tmp_path, gunicorn_logger):
    log = gunicorn_logger()
    logs.FILTER.secrets = (SECRET,)
    try:
        raise RuntimeError(f"upstream said {SECRET} for /m/{GRANT}")
    except RuntimeError:
        log.exception("Error handling request %s", f"/m/{GRANT}?X-Amz-Expires=60")
    text = (tmp_path / "error.log").read_text()
    assert "Error handling request /m/[redacted]?X-Amz-Expires=60" in text and "RuntimeError" in text
    assert GRANT not in text and SECRET not in text and "eJyrVirOLy1" not in text


def test_gunicorn_access_log_redacts_request_line(tmp_path, gunicorn_logger):
    log = gunicorn_logger()
    resp = SimpleNamespace(status="200 OK", sent=10, headers=[], response_length=10)
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"/m/{GRANT}", "PATH_INFO": f"/m/{GRANT}",
               "QUERY_STRING": "", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "203.0.113.9"}
    req = SimpleNamespace(headers=[], method="GET", uri=f"/m/{GRANT}", path=f"/m/{GRANT}", query="",
                          version=(1, 1))
    log.access(resp, req, environ, timedelta(milliseconds=5))
    text = (tmp_path / "access.log").read_text()
    assert '"GET /m/[redacted] HTTP/1.1" 200' in text and GRANT not in text


def test_app_log_lines_carry_utc_time_and_request_id(capsys):
    logs.setup()
    logging.getLogger("resolver.example").warning("token %s", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING \[(-|[0-9a-f]{16})\] "
                        r"resolver\.example: token \[redacted\]", line), line
