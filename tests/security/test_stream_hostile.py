"""The streaming proxy under gunicorn's gevent worker (the Procfile), against misbehaving real upstreams.

What only the real server can show: a truncated body reaches the client as a cut connection (fewer bytes than
Content-Length, or no terminating chunk), never as a complete response; and a thousand aborted downloads
leave no upstream connection, file descriptor or thread behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time
from pathlib import Path

import pytest
import requests

from resolver.access.signing import Signer
from tests.support.env import base_env, start_gunicorn, stop_gunicorn
from tests.support.hostile import BLOB, BLOB_SHA, ETAG, HOSTILE_TOKEN, mint, raw_get, stream_env

SIZE = len(BLOB)


@pytest.fixture(scope="module")
def server(tmp_path_factory, twilio, storage, hostile):
    tmp = tmp_path_factory.mktemp("gunicorn-stream")
    env = {**stream_env(tmp, base_env(tmp, twilio, storage), hostile.url), "WEB_CONCURRENCY": "1"}
    srv = start_gunicorn(env, tmp, name="stream")
    srv.audit_path = Path(env["RESOLVER_AUDIT_LOG"])  # type: ignore[attr-defined]
    yield srv
    stop_gunicorn(srv)


@pytest.fixture(scope="module")
def grant(server):
    from tests.support.env import KEYS

    signer = Signer(KEYS)
    return lambda key, source="hostile": server.url + mint(signer, source, key)


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The payload of a chunked body and whether it ended with the terminating zero-length chunk."""
    out, pos = b"", 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            return out, False
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            return out, body[end:end + 4] == b"\r\n\r\n"
        if len(body) < end + 2 + size + 2:
            return out + body[end + 2:end + 2 + size], False
        out += body[end + 2:end + 2 + size]
        pos = end + 2 + size + 2


def test_integrity_and_player_requests_under_gunicorn(grant):
    url = grant("ok/call.mp3")
    full = requests.get(url, timeout=10)
    assert full.status_code == 200 and hashlib.sha256(full.content).hexdigest() == BLOB_SHA
    parts, pos = [], 0
    for size in (2, 65536, 1000001, 262144):
        resp = requests.get(url, headers={"Range": f"bytes={pos}-{pos + size - 1}"}, timeout=10)
        assert resp.status_code == 206 and resp.headers["Content-Range"] == f"bytes {pos}-{pos + size - 1}/{SIZE}"
        parts.append(resp.content)
        pos += size
    parts.append(requests.get(url, headers={"Range": f"bytes={pos}-"}, timeout=10).content)
    assert hashlib.sha256(b"".join(parts)).hexdigest() == BLOB_SHA
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(SIZE) and head.content == b""
    assert requests.get(url, headers={"If-None-Match": ETAG}, timeout=10).status_code == 304
    zero = requests.get(url, headers={"Range": "bytes=-0"}, timeout=10)
    assert zero.status_code == 416 and zero.headers["Content-Range"] == f"bytes */{SIZE}"
    many = requests.get(url, headers={"Range": "bytes=" + ",".join(f"{i}-{i}" for i in range(500))}, timeout=10)
    assert many.status_code == 200 and hashlib.sha256(many.content).hexdigest() == BLOB_SHA


@pytest.mark.parametrize("key", ["stall-headers/x.mp3", "stall-first/x.mp3"])
def test_stalls_before_the_first_byte_are_504(grant, key):
    started = time.monotonic()
    resp = requests.get(grant(key), timeout=15)
    assert resp.status_code == 504 and resp.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("key", ["stall-body/x.mp3", "reset/x.mp3", "short/x.mp3"])
def test_a_truncated_body_is_a_cut_connection_not_a_complete_response(grant, key):
    started = time.monotonic()
    status, headers, body = raw_get(grant(key))
    assert status == 200 and headers["content-length"] == str(SIZE)
    assert 0 < len(body) < SIZE and body == BLOB[:len(body)]
    assert time.monotonic() - started < 10  # the idle timeout (1 s) ended it
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(grant(key), timeout=15).content  # noqa: B018 - a client library notices


def test_a_complete_chunked_stream_ends_with_its_terminator(grant):
    """The control for the next test: an upstream without Content-Length, relayed whole, chunked."""
    status, headers, body = raw_get(grant("no-length/x.mp3"))
    payload, terminated = dechunk(body)
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert terminated and hashlib.sha256(payload).hexdigest() == BLOB_SHA


@pytest.mark.parametrize(("key", "source"), [("chunked-abort/x.mp3", "hostile"), ("no-length/x.mp3", "limited")])
def test_a_cut_chunked_stream_has_no_terminating_chunk(grant, key, source):
    status, headers, body = raw_get(grant(key, source))
    payload, terminated = dechunk(body)
    assert status == 200 and headers.get("transfer-encoding") == "chunked"
    assert not terminated and 0 < len(payload) < SIZE and payload == BLOB[:len(payload)]
    if source == "limited":
        assert len(payload) <= 1_000_000


@pytest.mark.parametrize(("key", "status"), [("fail/503", 502), ("fail/500", 502), ("gone/x.mp3", 404),
                                              ("html/x.mp3", 200), ("ok/x.mp3", 502)])
def test_upstream_faults_and_limits_under_gunicorn(grant, key, status):
    resp = requests.get(grant(key, "limited" if key == "ok/x.mp3" else "hostile"), timeout=10)
    assert resp.status_code == status
    if key.startswith("html"):
        assert resp.headers["Content-Type"] == "application/octet-stream"
        assert resp.headers["Content-Disposition"].startswith("attachment")


@pytest.mark.parametrize("location", ["http://169.254.169.254/latest/meta-data/", "https://[::ffff:127.0.0.1]/",
                                      "https://evil.example/", "file:///etc/passwd"])
def test_redirects_are_refused_under_gunicorn(grant, hostile, location):
    hostile.redirects["g"] = (302, location)
    resp = requests.get(grant("redirect/g"), timeout=10)
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "upstream_redirect_refused"


def worker_pid(master: int) -> int:
    with open(f"/proc/{master}/task/{master}/children") as f:
        children = [int(p) for p in f.read().split()]
    assert len(children) == 1, children
    return children[0]


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def threads(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("Threads:")).split()[1])


def settle(hostile, timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while hostile.open_connections and time.monotonic() < deadline:
        time.sleep(0.05)
    return hostile.open_connections


def abort_download(url: str, rst: bool) -> None:
    host, port = url.split("://", 1)[1].split("/", 1)[0].split(":")
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    got = 0
    while got < 65536:
        got += len(sock.recv(65536))
    if rst:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def test_a_thousand_aborted_downloads_leave_nothing_open(server, grant, hostile):
    url = grant("endless/live.mp3")  # the upstream only stops when the resolver closes the connection
    master = server.proc.pid
    pid = worker_pid(master)
    for i in range(20):  # warm up pools and lazily opened files
        abort_download(url, rst=bool(i % 2))
    assert settle(hostile) == 0
    before_fds, before_threads = fds(pid), threads(pid)
    started = time.monotonic()
    peak = 0
    for i in range(1000):
        abort_download(url, rst=bool(i % 2))
        peak = max(peak, hostile.open_connections)
    elapsed = time.monotonic() - started
    assert peak <= 5  # each upstream connection closed right after its client went away, not in bulk later
    assert settle(hostile) == 0  # every upstream connection was closed by the resolver
    time.sleep(0.5)
    assert worker_pid(master) == pid  # the same worker: none was lost or restarted
    assert fds(pid) <= before_fds + 2, (before_fds, fds(pid))
    assert threads(pid) <= before_threads + 1
    ok = requests.get(grant("ok/call.mp3"), headers={"Range": "bytes=0-99"}, timeout=10)
    assert ok.status_code == 206 and ok.content == BLOB[:100]
    assert HOSTILE_TOKEN not in server.log()
    records = [json.loads(line) for line in server.audit_path.read_text().splitlines()]
    aborted = [r for r in records if r["event"] == "grant" and r.get("key") == "endless/live.mp3"
               and r["outcome"] != "started"]
    assert len(aborted) == 1020 and all(r["outcome"] == "served" and r["complete"] is False for r in aborted)
    started = [r for r in records if r["event"] == "grant" and r["outcome"] == "started"
               and r.get("key") == "endless/live.mp3"]
    assert len(started) == 1020  # each stream was on the trail before its first byte
    print(f"1000 aborted downloads in {elapsed:.1f}s; upstream connections open at most {peak}; "
          f"worker fds {before_fds} -> {fds(pid)}")
