"""Streams end when access ends (issue 16), under the Procfile's gunicorn with the stream policy shortened.

A client that stops reading is cut after the send idle timeout, on the socket-to-socket relay (a promised
length) and on the WSGI loop (a close-delimited upstream), and its upstream connection is closed at once; the
audit record says `complete: false`, reason `client_stalled`.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from resolver.access.signing import Link, Signer
from resolver.store import open_store
from tests.support.env import KEYS, base_env, start_gunicorn, stop_gunicorn
from tests.support.hostile import BLOB, Upstream, stream_env

IDLE = 2.0  # policy.CLIENT_SEND_IDLE_TIMEOUT here (30 s in production)
RECHECK = 0.3  # policy.STREAM_RECHECK_SECONDS here (2 s in production)
PER_GRANT, PER_IDENTITY = 6, 12  # policy.MAX_STREAMS_PER_GRANT / _PER_IDENTITY here (ceilings of 500 / 1000)
POLICY = {"CLIENT_SEND_IDLE_TIMEOUT": IDLE, "STREAM_RECHECK_SECONDS": RECHECK,
          "MAX_STREAMS_PER_GRANT": PER_GRANT, "MAX_STREAMS_PER_IDENTITY": PER_IDENTITY}


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
    srv.store_url = env["RESOLVER_STORE"]  # type: ignore[attr-defined]
    yield srv
    stop_gunicorn(srv)


def grant_url(server, key: str, identity: str = "sup@example.com", task: str = "WT" + "5" * 32) -> str:
    return signed(server, key, identity, task)[1]


def signed(server, key: str, identity: str = "sup@example.com", task: str = "WT" + "5" * 32):
    """(the grant, its /m URL), as /api/v1/resolve would issue it."""
    now = int(time.time())
    link = Link(source="hostile", key=key, type="VoiceRecording", task=task)
    grant, token = Signer(KEYS).sign_grant(link, identity=identity, worker="WK" + "2" * 32, issued_at=now,
                                           expires_at=now + 300)
    return grant, f"{server.url}/m/{token}"


def open_and_stop_reading(url: str, range_: str | None = None, rcvbuf: int = 4096) -> tuple[socket.socket, bytes]:
    """Send the request, read the response head, then read nothing more (a small receive buffer)."""
    hostport, path = url.split("://", 1)[1].split("/", 1)
    host, port = hostport.split(":")
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
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


@pytest.mark.parametrize(("key", "range_"), [("huge/stalled.mp3", "bytes=0-67108863"),  # the relay
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
        assert 0 < record["bytes"] < 64 * 1024 * 1024
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


class SlowReader:
    """A client that keeps reading a little (never idle for the send timeout), on its own thread."""

    def __init__(self, url: str, range_: str | None = None) -> None:
        self.sock, self.head = open_and_stop_reading(url, range_, rcvbuf=0)
        self.status = int(self.head.split()[1])
        self.got, self.ended = 0, threading.Event()
        self._stop = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                piece = self.sock.recv(65536)
                if not piece:
                    break
                self.got += len(piece)
                time.sleep(0.005)  # some 10 MB/s at most: the stream lasts, and is never idle
        except OSError:
            pass
        self.ended.set()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()


def error_of(resp: requests.Response) -> str:
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}  # SPEC's error shape
    return body["error"]["code"]


def refusals(server, code: str) -> list[dict]:
    lines = server.audit_path.read_text().splitlines() if server.audit_path.exists() else []
    return [r for r in map(json.loads, lines) if r.get("event") == "grant" and r.get("outcome") == "refused"
            and r.get("reason") == code]


def test_concurrent_streams_are_bounded_per_grant_and_per_identity(server, upstream):
    per_grant, per_identity = PER_GRANT, PER_IDENTITY
    assert per_identity % per_grant == 0
    who = "bound@example.com"
    grants = [grant_url(server, f"huge/bound-{i}.mp3", identity=who) for i in range(per_identity // per_grant + 1)]
    rng = {"Range": "bytes=0-67108863"}
    held: list[SlowReader] = []
    try:
        for url in grants[:-1]:
            held += [SlowReader(url, rng["Range"]) for _ in range(per_grant)]
        assert [r.status for r in held] == [206] * per_identity
        before = len(refusals(server, "too_many_streams"))
        over_grant = requests.get(grants[0], headers=rng, timeout=10)  # one more of a full grant
        assert over_grant.status_code == 429 and error_of(over_grant) == "too_many_streams"
        over_identity = requests.get(grants[-1], headers=rng, timeout=10)  # a new grant, the same user
        assert over_identity.status_code == 429 and error_of(over_identity) == "too_many_streams"
        assert len(refusals(server, "too_many_streams")) == before + 2  # each audited
        other = requests.get(grant_url(server, "ok/other-user.mp3", identity="other@example.com"),
                             headers={"Range": "bytes=0-9"}, timeout=10)
        assert other.status_code == 206  # another user is not affected
        held.pop(0).close()  # a stream that ends gives its slot back at once
        assert wait_for(lambda: requests.get(grants[0], headers={"Range": "bytes=0-9"}, timeout=10).status_code
                        == 206, timeout=5) is not None
    finally:
        for r in held:
            r.close()
    assert wait_for(lambda: upstream.open_connections == 0, timeout=10) is not None


def test_a_stream_slot_is_a_lease_a_crash_cannot_keep(tmp_path, monkeypatch):
    """A worker killed mid-stream never releases its slots: they expire with their lease (real SQLite store)."""
    from resolver import policy
    from resolver.access import streams
    from resolver.errors import TooManyStreams

    store = open_store(f"sqlite:///{tmp_path / 'slots.db'}")
    now = int(time.time())
    link = Link(source="hostile", key="huge/lease.mp3", type="VoiceRecording", task="WT" + "5" * 32)
    grant, _ = Signer(KEYS).sign_grant(link, identity="lease@example.com", worker="WK" + "2" * 32,
                                       issued_at=now, expires_at=now + 300)
    monkeypatch.setattr(policy, "MAX_STREAMS_PER_GRANT", PER_GRANT)
    for _ in range(PER_GRANT):
        streams.hold(store, grant, ttl=1.0)  # never released: the worker "crashed"
    with pytest.raises(TooManyStreams):
        streams.hold(store, grant, ttl=1.0)
    time.sleep(1.1)
    streams.hold(store, grant, ttl=1.0).release()  # the leases ran out; nothing was leaked for good
    store.close()


@pytest.mark.parametrize(("key", "range_"), [("huge/revoked.mp3", "bytes=0-67108863"),  # the relay
                                             ("endless/revoked.mp3", None)])  # the WSGI loop
def test_a_revocation_cuts_a_stream_that_is_already_open(server, upstream, key, range_):
    grant, url = signed(server, key, identity="revoked@example.com")
    reader = SlowReader(url, range_)
    store = open_store(server.store_url)
    try:
        assert reader.status in (200, 206)
        assert wait_for(lambda: reader.got > 1024 * 1024, timeout=10) is not None  # it is streaming
        store.revoke("link", grant.link, time.time())
        revoked_at = time.monotonic()
        # Before the fix it went on to the end (complete: true), whatever was revoked.
        assert reader.ended.wait(RECHECK + 5), "the revoked stream is still open"
        took = time.monotonic() - revoked_at
        assert wait_for(lambda: upstream.open_connections == 0, timeout=5) is not None
        assert wait_for(lambda: records(server, key), timeout=5) is not None
        [record] = records(server, key)
        assert record["complete"] is False and record["reason"] == "revoked"
        print(f"{key}: cut {took:.2f}s after the revocation, {record['bytes']} bytes served")
        assert requests.get(url, headers={"Range": "bytes=0-9"}, timeout=10).status_code == 403
    finally:
        reader.close()
        store.close()


def test_150_clients_that_stop_reading_hold_a_bounded_number_of_upstreams_briefly(server, upstream):
    """Issue 16's reproduction: 150 clients open one grant's stream and stop reading. Before: 150 upstream
    connections held for as long as the clients stayed (more than 70 s). Now: at most MAX_STREAMS_PER_GRANT
    reach the upstream, the rest are 429, and those few are cut after the send idle timeout."""

    url = grant_url(server, "huge/flood.mp3", identity="flood@example.com")
    socks, statuses = [], []
    started = time.monotonic()
    try:
        for _ in range(150):
            sock, head = open_and_stop_reading(url, "bytes=0-67108863")
            socks.append(sock)
            statuses.append(int(head.split()[1]))
        peak = upstream.open_connections
        assert statuses.count(206) == PER_GRANT and statuses.count(429) == 150 - peak
        assert peak <= PER_GRANT
        took = wait_for(lambda: upstream.open_connections == 0, timeout=IDLE + 10)
        assert took is not None
        print(f"150 stalled clients: {statuses.count(206)} streams, {statuses.count(429)} x 429, upstream "
              f"connections at most {peak}, all closed {time.monotonic() - started:.1f}s after the first opened")
    finally:
        for sock in socks:
            sock.close()
