"""Finding bearer material in free text, in linear time, without blanking ordinary identifiers."""

from __future__ import annotations

import time

import pytest

from resolver import redact


@pytest.mark.parametrize("text,shaped", [
    ("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl", True),
    ("see /m/eyJsb25nIjoxfQ.QpZ_1c2lnbmF0dXJlc2ln?x=1", True),
    (".eJyrVirOLy1KTlWyUipKTc4vSsnMSy9W0lHKTq0ECgW5GgLZ.Zm9vYmFyYmF6cXV4cXV1eHF1dXg", True),
    ("alice.smith@example.com", False),
    ("recordings/2026-01-01-call-recording.mp3", False),
    ("RE" + "a" * 32, False),
    ("203.0.113.9", False),
])
def test_token_shapes(text, shaped):
    assert redact.token_shaped(text) is shaped


def test_hostile_long_values_are_checked_in_linear_time():
    for evil in ("eyJ" * 400_000, "a" * 1_000_000 + ".", ("a" * 30 + ".") * 30_000):
        started = time.perf_counter()
        redact.token_shaped(evil)
        assert time.perf_counter() - started < 1.0


def test_redact_blanks_token_paths_and_token_runs_only():
    grant = ".eJyrVirOLy1KTlWyUipKTc4vSsnMSy9W0lHKTq0ECgW5GgLZ.Zm9vYmFyYmF6cXV4cXV1eHF1dXg"
    line = (f'Error handling request /m/{grant}?X-Amz-Expires=60 from 203.0.113.9 '
            'token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl for alice.smith@example.com /d/abc')
    out = redact.redact(line)
    assert out == ("Error handling request /m/[redacted]?X-Amz-Expires=60 from 203.0.113.9 "
                   "token=[redacted] for alice.smith@example.com /d/[redacted]")
    assert redact.redact("GET /healthz 200") == "GET /healthz 200"
