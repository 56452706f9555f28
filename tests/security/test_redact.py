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
    # real identities and keys that a shape heuristic took for tokens (issue 16)
    ("heyJude.lennon@example.com", False),
    ("eyJane.doe@example.com", False),
    ("user_40example_2Dcom", False),
    ("heyJude.lennon_40example_2Ecom", False),
    ("CN=Jane Doe,OU=Support,O=Example Corp", False),
    ("calls/CA" + "0123456789abcdef" * 2 + ".RE" + "fedcba9876543210" * 2 + ".wav", False),
    ("calls/CA" + "0123456789abcdef" * 2 + ".RE" + "fedcba9876543210" * 2, False),
    ("exports/2026/q1/queue.support.escalations.transcript-000123456789.json", False),
    # tokens we know: a JWE (5 parts) and a real link and grant from our own signer
    ("eyJhbGciOiJSU0EtT0FFUCIsImVuYyI6IkEyNTZHQ00ifQ.OKOawDo13gRp2ojaHV7LFpZcgV7T6DVZKTyKOMTYUmKoTCVJRgckCL9kiMT03JGe"
     ".48V1_ALb6US04U3b.5eym8TW_c8SuK0ltJ3rpYIzOeDQz7TALvtu6UG9oMo4vpzs9tX_EFShS8iB7j6ji.XFBoMYUZodetZdvTiFvSkQ", True),
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


def test_our_own_links_and_grants_are_known_tokens():
    from resolver.access.signing import Link, Signer
    signer = Signer(["k" * 40])
    link = Link(source="recordings", key="calls/CA" + "1" * 32 + ".RE" + "2" * 32, type="VoiceRecording",
                task="WT" + "3" * 32, title="Call " * 40)  # long enough to be compressed
    short = Link(source="s", key="k", type="Raw")
    for token in (signer.sign_link(link), signer.sign_link(short),
                  signer.sign_grant(short, identity="heyJude.lennon@example.com", worker="WK" + "0" * 32,
                                    issued_at=1, expires_at=2)[1]):
        assert redact.token_shaped(f"x {token} y"), token
        assert redact.redact(f"x {token} y") == "x [redacted] y"
