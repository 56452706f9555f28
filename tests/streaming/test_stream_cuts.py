"""Streams end when access ends (issue 16), under the Procfile's gunicorn with the stream policy shortened.

A client that stops reading is cut after the send idle timeout, on the socket-to-socket relay (a promised
length) and on the WSGI loop (a close-delimited upstream), and its upstream connection is closed at once; the
audit record says `complete: false`, reason `client_stalled`.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import requests

from resolver.access.signing import Link, Signer
from tests.support.env import KEYS, base_env, start_gunicorn, stop_gunicorn
from tests.support.hostile import BLOB, Upstream, stream_env

IDLE = 1.0  # policy.CLIENT_SEND_IDLE_TIMEOUT here (30 s in production)
POLICY = {"CLIENT_SEND_IDLE_TIMEOUT": IDLE}


@pytest.fixture(scope="module")
def upstream():
    server = Upstream()  # our own, so its connection count is only this module's
    yield server
    server.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, twilio, storage, upstream):
    tmp = tmp_path_factory.mktemp("cuts")
    env = {**stream_env(tmp, base_env(tmp, twilio, storage), upstream.url), "WEB_CONCURRENCY": "1",
           "RESOLVER_TEST_POLICY": json.dumps(POLICY)}
    srv = start_gunicorn(env, tmp, name="cuts", config_module="tests.support.gunicorn_policy")
    srv.audit_path = Path(env["RESOLVER_AUDIT_LOG"])  # type: ignore[attr-defined]
    yield srv
    stop_gunicorn(srv)


def grant_url(server, key: str, identity: str = "sup@example.com", task: str = "WT" + "5" * 32) -> str:
    now = int(time.time())
    link = Link(source="hostile", key=key, type="VoiceRecording", task=task)
    _, token = Signer(KEYS).sign_grant(link, identity=identity, worker="WK" + "2" * 32, issued_at=now,
                                       expires_at=now + 300)
    return f"{server.url}/m/{token}"


def open_and_stop_reading(url: str, range_: str | None = None) -> tuple[socket.socket, bytes]:
    """Send the request, read the response head, then read nothing more (a small receive buffer)."""
    hostport, path = url.split("://", 1)[1].split("/", 1)
    host, port = hostport.split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect((host, int(port)))
    extra = f"Range: {range_}\r\n" if range_ else ""
    sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    return sock, head


def records(server, key: str) -> list[dict]:
    lines = server.audit_path.read_text().splitlines() if server.audit_path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("event") == "grant" and r.get("key") == key
            and r.get("outcome") == "served"]


def wait_for(predicate, timeout: float) -> float | None:
    """Seconds until `predicate()` held, or None if it did not within `timeout`."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


@pytest.mark.parametrize(("key", "range_"), [("huge/stalled.mp3", "bytes=0-536870911"),  # the relay
                                             ("endless/stalled.mp3", None)])  # the WSGI loop (no length)
def test_a_client_that_accepts_no_bytes_is_cut_and_its_upstream_closed(server, upstream, key, range_):
    sock, head = open_and_stop_reading(grant_url(server, key), range_)
    try:
        assert head.split()[1] in (b"200", b"206")
        assert upstream.open_connections == 1
        # Before the fix the stream (and its upstream connection) stayed open as long as the client did.
        took = wait_for(lambda: upstream.open_connections == 0, timeout=IDLE + 8)
        assert took is not None, "the stalled stream still holds its upstream connection"
        assert wait_for(lambda: records(server, key), timeout=5) is not None
        [record] = records(server, key)
        assert record["complete"] is False and record["reason"] == "client_stalled"
        assert 0 < record["bytes"] < 512 * 1024 * 1024
    finally:
        sock.close()


def test_a_slow_but_reading_client_is_not_cut(server, upstream):
    """The timeout is for no bytes at all: a client that keeps taking a little still gets every byte."""
    size = 2 * 1024 * 1024
    with requests.get(grant_url(server, "ok/slow-reader.mp3"), headers={"Range": f"bytes=0-{size - 1}"},
                      stream=True, timeout=20) as resp:
        got = bytearray()
        for piece in resp.iter_content(256 * 1024):
            got += piece
            time.sleep(IDLE * 0.3)  # far below the rate of the first read, never idle for IDLE
    assert bytes(got) == BLOB[:size]
    assert wait_for(lambda: records(server, "ok/slow-reader.mp3"), timeout=5) is not None
    assert records(server, "ok/slow-reader.mp3")[-1]["complete"] is True
