"""Request bodies are bounded before anything reads them, and odd JSON is a 400 (issue 16)."""

from __future__ import annotations

import socket
import time

import pytest
import requests

from tests.support.env import SERVICE_KEY

ENDPOINTS = [  # (path, limit): every POST endpoint and its policy limit
    ("/api/v1/resolve", 8 * 1024),
    ("/api/v1/links", 64 * 1024),
    ("/api/v1/revocations", 8 * 1024),
    ("/api/v1/tasks/WT" + "1" * 32 + "/media", 64 * 1024),
    ("/hooks/taskrouter", 64 * 1024),
]


@pytest.mark.parametrize("path, limit", ENDPOINTS)
def test_a_declared_body_over_the_limit_is_413_before_it_is_read(client, path, limit):
    resp = client.post(path, data=b"x" * (limit + 1), headers={"Authorization": f"Bearer {SERVICE_KEY}",
                                                                "Content-Type": "application/json"})
    assert resp.status_code == 413
    assert resp.get_json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("path, limit", ENDPOINTS)
def test_a_body_at_the_limit_is_not_413(client, path, limit):
    resp = client.post(path, data=b"x" * limit, headers={"Authorization": f"Bearer {SERVICE_KEY}",
                                                          "Content-Type": "application/json"})
    assert resp.status_code != 413


def test_get_with_a_large_body_is_413(client):
    assert client.get("/healthz", data=b"x" * 20000).status_code == 413


@pytest.mark.parametrize("path", ["/api/v1/resolve", "/api/v1/links", "/api/v1/revocations"])
@pytest.mark.parametrize("body", ["[" * 1000, '{"a":' * 1000, "[" * 3000 + "]" * 3000])
def test_deeply_nested_json_is_400(client, path, body):
    resp = client.post(path, data=body, headers={"Authorization": f"Bearer {SERVICE_KEY}",
                                                  "Content-Type": "application/json"})
    assert resp.status_code in (400, 401) and resp.status_code != 500
    assert "Traceback" not in resp.get_data(as_text=True)


def test_a_chunked_upload_is_cut_at_the_limit_under_gunicorn(gunicorn):
    """No Content-Length: the body is read only up to the limit (werkzeug cuts the stream there), so what was
    read is a truncated body: 413, or 400 when the cut JSON is simply invalid. Never parsed whole, never 500."""
    host, port = gunicorn.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(b"POST /api/v1/resolve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer eyJabc\r\nTransfer-Encoding: chunked\r\n\r\n")
        body = b'{"url": "' + b"x" * 256 * 1024 + b'"}'  # valid JSON, 32x the limit
        try:
            for i in range(0, len(body), 4096):
                chunk = body[i:i + 4096]
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may close once it has answered
        answer = s.recv(65536)
    assert answer.startswith((b"HTTP/1.1 413", b"HTTP/1.1 400")), answer[:200]
    assert b"bad_url" not in answer  # parsed whole, the url would have been judged (and refused as too long)


def test_a_huge_hook_body_is_refused_fast_and_the_worker_stays_small(gunicorn):
    size = 30 * 1024 * 1024
    start = time.monotonic()
    resp = requests.post(f"{gunicorn.url}/hooks/taskrouter", data=b"a=" + b"x" * size, timeout=60,
                         headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413 and time.monotonic() - start < 10
    assert requests.get(f"{gunicorn.url}/healthz", timeout=5).status_code == 200
