"""The socket-to-socket body path (resolver/streaming/relay.py): every property of the WSGI stream kept.

Under gunicorn from the Procfile, with a plain upstream and with an HTTPS one whose CA (made here) the
environment names in REQUESTS_CA_BUNDLE: exact bytes, Range, the access log's byte count, a short upstream
cutting the connection, a client leaving mid-stream, a chunked upstream taking the WSGI loop, keep-alive after
a relayed body. In-process, with gunicorn's own Response object on a real socket: only the first chunk goes
through the WSGI loop, and over TLS the writes are larger than one TLS record.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import socket
import ssl
import struct
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from gunicorn.config import Config
from gunicorn.http.wsgi import Response as GunicornResponse

from resolver import config, policy
from resolver.access.signing import Signer
from resolver.errors import UpstreamFailed
from resolver.sources import Source
from resolver.streaming import relay
from resolver.streaming.upstream import StreamAborted, Transfer, new_session
from resolver.streaming.upstream import Upstream as Streamer
from tests.support.env import KEYS, base_env, start_gunicorn, stop_gunicorn
from tests.support.hostile import BLOB, BLOB_SHA, URGENT_BODY, Upstream, make_tls, mint, raw_get, stream_env

SIZE = len(BLOB)
TLS_RECORD = 16 * 1024


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    """(CA file, an HTTPS hostile upstream on 127.0.0.1 with a certificate naming that address)."""
    ca, cert, key = make_tls(str(tmp_path_factory.mktemp("relay-tls")), names=("127.0.0.1",))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = Upstream(tls=ctx)
    yield ca, server
    server.close()


def _start(tmp, twilio, storage, upstream_url: str, **extra: str):
    env = {**stream_env(tmp, base_env(tmp, twilio, storage), upstream_url), "WEB_CONCURRENCY": "1", **extra}
    srv = start_gunicorn(env, tmp, name="relay")
    srv.audit_path = Path(env["RESOLVER_AUDIT_LOG"])  # type: ignore[attr-defined]
    return srv


@pytest.fixture(scope="module", params=["http", "https"])
def server(request, tmp_path_factory, twilio, storage, hostile, tls):
    tmp = tmp_path_factory.mktemp(f"relay-{request.param}")
    if request.param == "http":
        srv = _start(tmp, twilio, storage, hostile.url)
    else:  # the Procfile as it is, trusting the test CA as an operator would (README, "Outbound TLS")
        ca, upstream = tls
        srv = _start(tmp, twilio, storage, upstream.url, REQUESTS_CA_BUNDLE=ca)
    yield srv
    stop_gunicorn(srv)


@pytest.fixture(scope="module")
def grant(server):
    signer = Signer(KEYS)
    return lambda key, source="hostile": server.url + mint(signer, source, key)


def access_bytes(server, since: int, rid: str = "") -> list[tuple[int, int]]:
    """(status, %(B)s) of each /m/ access-log line written after byte offset `since` of the log; with `rid`,
    only that request's line (a previous test's line may land late, after `since`)."""
    deadline = time.monotonic() + 5
    while True:
        text = server.log()[since:]
        lines = re.findall(r'"GET /m/<grant_token>" (\d{3}) (\d+) \S+ rid=(\S*)', text)
        found = [(int(s), int(b)) for s, b, r in lines if not rid or r == rid]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def audit_records(server, key: str, n: int = 1, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        lines = server.audit_path.read_text().splitlines() if server.audit_path.exists() else []
        found = [r for r in map(json.loads, lines) if r.get("event") == "grant" and r.get("key") == key
                 and r.get("outcome") != "started"]  # the records a stream ends with
        if len(found) >= n or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_full_body_exact_bytes_and_access_log_count(server, grant):
    mark = len(server.log())
    resp = requests.get(grant("ok/full.mp3"), timeout=20)
    assert resp.status_code == 200 and len(resp.content) == SIZE
    assert hashlib.sha256(resp.content).hexdigest() == BLOB_SHA
    assert access_bytes(server, mark) == [(200, SIZE)]
    record = audit_records(server, "ok/full.mp3")[-1]
    assert record["complete"] is True and record["bytes"] == SIZE and record["status"] == 200


def test_range_is_exact_and_counted(server, grant):
    mark = len(server.log())
    start, end = 1000, 2_500_000  # spans several 1 MiB reads, ends mid-buffer
    resp = requests.get(grant("ok/range.mp3"), headers={"Range": f"bytes={start}-{end}"}, timeout=20)
    assert resp.status_code == 206 and resp.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert resp.content == BLOB[start:end + 1]
    assert access_bytes(server, mark) == [(206, end - start + 1)]


def test_keep_alive_after_relayed_bodies(server, grant):
    """Stopping exactly at Content-Length leaves the connection usable: the next response parses cleanly."""
    with requests.Session() as s:
        a = s.get(grant("ok/a.mp3"), timeout=20)
        b = s.get(grant("ok/b.mp3"), headers={"Range": "bytes=5-1500004"}, timeout=20)
    assert a.content == BLOB and b.status_code == 206 and b.content == BLOB[5:1500005]


def test_a_short_upstream_body_cuts_the_connection_and_is_audited_incomplete(server, grant):
    status, headers, body = raw_get(grant("short/s.mp3"))
    assert status == 200 and headers["content-length"] == str(SIZE)
    assert len(body) < SIZE and body == BLOB[:len(body)]  # what came is right, and it is visibly cut
    record = audit_records(server, "short/s.mp3")[-1]
    assert record["complete"] is False and 0 < record["bytes"] <= 1024 * 1024


def test_a_client_leaving_mid_stream_is_audited_and_the_worker_carries_on(server, grant):
    url = grant("huge/leave.mp3")
    want = 64 * 1024 * 1024  # far more than the client takes
    mark = len(server.log())
    hostport, path = url.split("://", 1)[1].split("/", 1)
    host, port = hostport.split(":")
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(f"GET /{path} HTTP/1.1\r\nHost: {hostport}\r\nRange: bytes=0-{want - 1}\r\n\r\n".encode())
        got = 0
        while got < 4 * 1024 * 1024:
            got += len(sock.recv(1 << 20))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
    record = audit_records(server, "huge/leave.mp3")[-1]
    assert record["complete"] is False and got - 2 * 1024 * 1024 < record["bytes"] < want
    assert "Traceback" not in server.log()[mark:]  # gunicorn drops it quietly, as a failed write of its own
    assert requests.get(grant("ok/after.mp3"), headers={"Range": "bytes=0-9"}, timeout=10).content == BLOB[:10]


def test_a_trickling_upstream_is_relayed_exactly(server, grant):
    """The body loop often finds nothing at hand and waits for the next piece: every byte still arrives once."""
    mark = len(server.log())
    status, headers, body = raw_get(grant("trickle/t.mp3"))
    assert status == 200 and headers["content-length"] == str(SIZE)
    assert hashlib.sha256(body).hexdigest() == BLOB_SHA
    assert access_bytes(server, mark, headers["x-request-id"]) == [(200, SIZE)]
    record = audit_records(server, "trickle/t.mp3")[-1]
    assert record["complete"] is True and record["bytes"] == SIZE


def test_an_upstream_silent_mid_body_is_cut_after_the_idle_timeout(server, grant):
    """1 MiB, then nothing: the waiting read gives up after RESOLVER_UPSTREAM_IDLE_TIMEOUT (1 s here) and the
    connection is cut short of its Content-Length, audited incomplete."""
    started = time.monotonic()
    status, headers, body = raw_get(grant("stall-body/s.mp3"))
    elapsed = time.monotonic() - started
    assert status == 200 and headers["content-length"] == str(SIZE)
    assert 0 < len(body) <= 1024 * 1024 and body == BLOB[:len(body)]
    assert 0.9 < elapsed < 8
    record = audit_records(server, "stall-body/s.mp3")[-1]
    assert record["complete"] is False and 0 < record["bytes"] <= 1024 * 1024


def test_a_chunked_upstream_takes_the_wsgi_loop_and_ends_with_its_terminator(server, grant):
    mark = len(server.log())
    status, headers, body = raw_get(grant("chunked/c.mp3"))
    assert status == 200 and headers.get("transfer-encoding") == "chunked" and "content-length" not in headers
    payload, pos = b"", 0
    while True:
        end = body.index(b"\r\n", pos)
        n = int(body[pos:end], 16)
        if n == 0:
            break
        payload += body[end + 2:end + 2 + n]
        pos = end + 2 + n + 2
    assert payload == BLOB
    assert [status for status, _ in access_bytes(server, mark, headers["x-request-id"])] == [200]
    assert audit_records(server, "chunked/c.mp3")[-1]["complete"] is True


# -- in-process: gunicorn's Response object on a real socket, driven as gunicorn's worker drives it ---------
def serve_once(streamer: Streamer, source: Source, url: str, headers: dict, transfer: Transfer,
               out: socket.socket, recorded: list[int] | None = None) -> tuple[int, GunicornResponse]:
    """gunicorn's handle_request in miniature: start_response, write each item, close. Returns (items, resp).
    With `recorded`, every write's length is appended to it (the socket is wrapped to see them); without, the
    server writes to `out` itself, as gunicorn does (a gevent socket is then one the relay writes to through
    the socket gevent wraps)."""

    class Recording:
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def sendall(self, data: bytes | memoryview) -> None:
            if recorded is not None:
                recorded.append(len(data))
            self.sock.sendall(data)

        def send(self, data: bytes | memoryview) -> int:  # the relay's writes (an idle timeout per send)
            if recorded is not None:
                recorded.append(len(data))
            return self.sock.send(data)

        def gettimeout(self) -> float | None:
            return self.sock.gettimeout()

        def settimeout(self, timeout: float | None) -> None:
            self.sock.settimeout(timeout)

    req = SimpleNamespace(version=(1, 1), method="GET", should_close=lambda: False)
    sock = Recording(out) if recorded is not None else out
    server_resp = GunicornResponse(req, sock, Config())
    client = relay.Client(sock, server_resp)
    resp = streamer.response(source, url, method="GET", client_headers=headers, filename="x.mp3",
                             transfer=transfer, client=client)
    items = 0
    try:
        server_resp.start_response(resp.status, list(resp.headers.items()))
        for item in resp.response:
            items += 1
            server_resp.write(item)
        server_resp.close()
    finally:
        resp.close()
    return items, server_resp


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while got := sock.recv(1 << 20):
        data += got
    return data


def relay_in_process(scheme: str, env: dict, hostile: Upstream, tls, path: str, transfer: Transfer,
                     writes: list[int] | None = None, **settings: str) -> tuple[bytes, int, GunicornResponse]:
    """serve_once from the plain or the TLS hostile upstream to one end of a socketpair, a thread reading the
    other: (the body the client got, items through the WSGI loop, gunicorn's response). What it raises
    propagates, with `transfer` as the stream left it."""
    with in_process_streamer(scheme, env, hostile, tls, **settings) as (streamer, source, base):
        return stream_to_socketpair(streamer, source, f"{base}/{path}", transfer, writes)


@contextlib.contextmanager
def in_process_streamer(scheme: str, env: dict, hostile: Upstream, tls, **settings: str):
    """(a Streamer on its own session trusting the test CA, a source for the upstream, the upstream's URL)."""
    ca, tls_upstream = tls
    base = hostile.url if scheme == "http" else tls_upstream.url
    source = Source(name="s", kind="http", base_url=base + "/", content_types=("audio/mpeg",))
    session = new_session()
    session.verify = ca
    streamer = Streamer(config.from_env({**env, **settings}), session)
    try:
        yield streamer, source, base
    finally:
        session.close()
        streamer.close()


def stream_to_socketpair(streamer: Streamer, source: Source, url: str, transfer: Transfer,
                         writes: list[int] | None = None, gevent_client: bool = False
                         ) -> tuple[bytes, int, GunicornResponse]:
    """serve_once to one end of a socketpair (with `gevent_client`, gevent's socket over it, as gunicorn's
    gevent worker hands the app), a thread reading the other: (the body it got, items, gunicorn's response)."""
    client_end, our_end = socket.socketpair()
    if gevent_client:
        import gevent.socket

        our_end = gevent.socket.socket(fileno=our_end.detach())
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_all(client_end)))
    reader.start()
    try:
        items, server_resp = serve_once(streamer, source, url, {}, transfer, our_end, writes)
    finally:
        our_end.shutdown(socket.SHUT_WR)
        reader.join(20)
        our_end.close()
        client_end.close()
    return got[0].partition(b"\r\n\r\n")[2], items, server_resp


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_only_the_first_chunk_goes_through_wsgi_and_tls_writes_span_records(scheme, env, hostile, tls):
    transfer, writes = Transfer(), []
    body, items, server_resp = relay_in_process(scheme, env, hostile, tls, "ok/inproc.mp3", transfer, writes)
    assert body == BLOB and transfer.complete and transfer.bytes == SIZE
    assert items == 1  # the first chunk; the relay wrote the rest itself
    assert server_resp.sent == SIZE  # and counted it where the access log reads it
    body_writes = writes[2:]  # headers, then the first chunk, then the relay's writes
    assert max(body_writes) <= (relay.TLS_BUF if scheme == "https" else relay.BUF)
    if scheme == "https":
        assert max(body_writes) > TLS_RECORD, "the TLS fill never put more than one record in a write"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_slower_upstream_is_waited_for_and_relayed_exactly(scheme, env, hostile, tls, monkeypatch):
    """The waiting read (`_wait_read`) runs whenever nothing has arrived, and what it and the fills after it read
    is written once, in order. A spy counts its calls while the real function runs."""
    waits: list[int] = []
    real_wait = relay._wait_read

    def counting_wait(sock, view, timeout):
        waits.append(len(view))
        return real_wait(sock, view, timeout)

    monkeypatch.setattr(relay, "_wait_read", counting_wait)
    transfer = Transfer()
    body, _, server_resp = relay_in_process(scheme, env, hostile, tls, "trickle/inproc.mp3", transfer)
    assert body == BLOB and transfer.complete and server_resp.sent == SIZE
    assert len(waits) > 5, "the upstream was never waited for: the test did not reach the waiting read"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_silent_upstream_raises_after_the_read_timeout(scheme, env, hostile, tls):
    transfer = Transfer()
    started = time.monotonic()
    with pytest.raises(StreamAborted):
        relay_in_process(scheme, env, hostile, tls, "stall-body/inproc.mp3", transfer,
                         RESOLVER_UPSTREAM_IDLE_TIMEOUT="0.5")
    assert 0.45 < time.monotonic() - started < 5
    assert not transfer.complete and 0 < transfer.bytes <= 1024 * 1024


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_bytes_past_the_length_never_become_the_next_response(scheme, env, hostile, tls):
    """An upstream sends a forged second response in the same write (over TLS, the same record) as its body's
    last bytes, and keeps the connection open. The relay stops exactly at the length, so over TLS the forgery
    sits decrypted in OpenSSL, where polling the socket cannot see it: the connection must not go back to the
    pool, and the next stream from the same session gets the real media from a new connection."""
    bodies = []
    with in_process_streamer(scheme, env, hostile, tls) as (streamer, source, base):
        for path in ("smuggle/first.mp3", "ok/second.mp3"):
            transfer = Transfer()
            body, _, _ = stream_to_socketpair(streamer, source, f"{base}/{path}", transfer)
            assert transfer.complete and transfer.bytes == SIZE
            bodies.append(body)
    assert [len(b) for b in bodies] == [SIZE, SIZE]
    assert bodies == [BLOB, BLOB]


def test_an_upstream_certificate_the_session_does_not_trust_is_never_streamed(env, hostile, tls):
    """With the session's default trust (not the test CA) the HTTPS upstream's certificate fails and the grant
    is a 502, with nothing sent; with the CA it streams."""
    with in_process_streamer("https", env, hostile, tls) as (streamer, source, base):
        streamer.session.verify = True
        with pytest.raises(UpstreamFailed):
            stream_to_socketpair(streamer, source, f"{base}/ok/untrusted.mp3", Transfer())
        streamer.session.verify = tls[0]
        transfer = Transfer()
        body, _, _ = stream_to_socketpair(streamer, source, f"{base}/ok/trusted.mp3", transfer)
    assert body == BLOB and transfer.complete


def test_writes_to_a_tls_client_go_through_openssl(tmp_path):
    """The raw fast path is for gevent's plain socket only: a gevent TLS socket (gunicorn with certfile) is
    written through OpenSSL, so the peer decrypts exactly what was sent, never plaintext on the wire."""
    import gevent
    import gevent.socket
    import gevent.ssl

    ca, cert, key = make_tls(str(tmp_path), names=("127.0.0.1",))  # its own: the module's CA file stays
    server_ctx = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = gevent.ssl.SSLContext(gevent.ssl.PROTOCOL_TLS_CLIENT)
    client_ctx.load_verify_locations(ca)
    a, b = gevent.socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    payload = BLOB[:300_000]
    received = bytearray()

    def peer() -> None:
        with client_ctx.wrap_socket(b, server_hostname="127.0.0.1") as tls_b:
            while len(received) < len(payload):
                received.extend(tls_b.recv(65536))

    reading = gevent.spawn(peer)
    tls_a = server_ctx.wrap_socket(a, server_side=True)
    try:
        assert isinstance(tls_a, gevent.ssl.SSLSocket)
        relay._sender(tls_a)(memoryview(payload))
        reading.join(10)
    finally:
        reading.kill()
        tls_a.close()
        b.close()
    assert bytes(received) == payload


@pytest.fixture
def buffers(monkeypatch):
    """(the sizes of the buffers send_rest allocates, the length of each write it makes, in order)."""
    made: list[int] = []
    writes: list[int] = []
    real_sender = relay._sender

    def allocate(size: int) -> bytearray:
        made.append(size)
        return bytearray(size)

    def recording_sender(sock):
        send = real_sender(sock)
        return lambda view: (writes.append(len(view)), send(view))[1]

    monkeypatch.setattr(relay, "bytearray", allocate, raising=False)
    monkeypatch.setattr(relay, "_sender", recording_sender)
    monkeypatch.setattr(relay, "GROW_AFTER", 1 << 20)  # the body is 3 MiB; a socketpair holds far less than 1
    return made, writes


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_a_fast_client_grows_the_buffer_once_after_taking_grow_after_fast(scheme, env, hostile, tls, buffers):
    """Under gevent (the client socket gunicorn's worker hands the app), a client that took GROW_AFTER bytes
    faster than GROW_RATE gets one larger buffer (BUF, TLS_BUF over TLS); every write before that is at most
    START_BUF. The bytes, the access log's count and the transfer are exact."""
    made, writes = buffers
    transfer = Transfer()
    with in_process_streamer(scheme, env, hostile, tls) as (streamer, source, base):
        body, _, server_resp = stream_to_socketpair(streamer, source, f"{base}/ok/grow.mp3", transfer,
                                                    gevent_client=True)
    assert body == BLOB and server_resp.sent == SIZE and transfer.complete and transfer.bytes == SIZE
    most = relay.TLS_BUF if scheme == "https" else relay.BUF
    assert len(made) == 2 and made[0] == relay.START_BUF, made  # grown once
    assert relay.START_BUF < made[1] <= most, made
    first_large = next(i for i, n in enumerate(writes) if n > relay.START_BUF)
    assert sum(writes[:first_large]) >= relay.GROW_AFTER  # nothing larger before GROW_AFTER was taken


def test_a_client_slower_than_grow_rate_keeps_the_start_buffer(env, hostile, tls, buffers, monkeypatch):
    """The same stream, its client taking the bytes no faster than GROW_RATE (relay's clock says a second
    passes between two looks): however many writes did not wait, the buffer never grows."""
    made, writes = buffers
    ticks = iter(range(10**6))
    monkeypatch.setattr(relay, "_clock", lambda: float(next(ticks)))
    transfer = Transfer()
    with in_process_streamer("http", env, hostile, tls) as (streamer, source, base):
        body, _, server_resp = stream_to_socketpair(streamer, source, f"{base}/ok/slow.mp3", transfer,
                                                    gevent_client=True)
    assert body == BLOB and server_resp.sent == SIZE and transfer.complete
    assert made == [relay.START_BUF] and max(writes) <= relay.START_BUF


def test_urgent_data_in_a_plain_body_is_read_past_without_spinning(env, hostile, tls):
    """A TCP urgent byte (out of band: never part of the body) stops a read at its mark while poll says readable.
    The buffer loop's next read passes the mark, so the stream ends by its byte count, with no core spinning
    on a socket that is readable with nothing to read."""
    import gevent

    transfer = Transfer()
    cpu, started = time.process_time(), time.monotonic()
    with gevent.Timeout(10):  # a spinning loop still waits in gevent's hub, so this ends it (and fails)
        with in_process_streamer("http", env, hostile, tls) as (streamer, source, base):
            body, _, server_resp = stream_to_socketpair(streamer, source, f"{base}/urgent/u.mp3", transfer,
                                                        gevent_client=True)  # the socket gunicorn hands the app
    assert body == URGENT_BODY and server_resp.sent == len(URGENT_BODY) and transfer.complete
    assert time.monotonic() - started < 5 and time.process_time() - cpu < 2  # the whole process's CPU


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(the client's end, the server's end) of a loopback TCP connection, which buffers as real ones do."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        far = socket.create_connection(listener.getsockname())
        ours, _ = listener.accept()
    return far, ours


def test_a_client_reading_nothing_yet_has_little_queued_and_the_worker_moves_on(env, hostile, tls):
    """A body's TCP client socket queues at most policy.CLIENT_UNSENT_MOST beyond what is in flight: a client
    that reads nothing for half a second has well under a megabyte of the 3 MiB body taken for it (the kernel
    alone would take all of it: its send buffer grows to 4 MiB), so the write waits and the worker serves
    others. Then it reads, and the whole body arrives."""
    far, ours = tcp_pair()
    transfer = Transfer()
    queued: list[int] = []
    got: list[bytes] = []

    def late_reader() -> None:
        time.sleep(0.5)
        queued.append(transfer.bytes)
        got.append(read_all(far))

    reader = threading.Thread(target=late_reader)
    reader.start()
    try:
        with in_process_streamer("http", env, hostile, tls) as (streamer, source, base):
            serve_once(streamer, source, f"{base}/ok/late.mp3", {}, transfer, ours)
        unsent = ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT)
    finally:
        ours.shutdown(socket.SHUT_WR)
        reader.join(20)
        ours.close()
        far.close()
    assert queued[0] < 1 << 20, f"{queued[0]} bytes taken for a client that read nothing"
    assert unsent == policy.CLIENT_UNSENT_MOST
    assert got[0].partition(b"\r\n\r\n")[2] == BLOB and transfer.complete


def test_the_sender_says_when_the_client_made_it_wait():
    """A relay buffer grows only while the client keeps up: `_sender` answers whether a write had to wait."""
    import gevent
    import gevent.socket

    a, b = gevent.socket.socketpair()
    a.settimeout(10)
    try:
        send = relay._sender(a)
        assert send(memoryview(b"x" * 1000)) is False  # the kernel took it at once
        assert len(b.recv(4096)) == 1000
        big = memoryview(bytes(8 << 20))  # far more than a socketpair's buffers hold: a reader must catch up
        reader = gevent.spawn(_drain, b, len(big))
        assert send(big) is True
        assert reader.get(timeout=10) == len(big)
    finally:
        a.close()
        b.close()


def _drain(sock, n: int) -> int:
    got = 0
    while got < n:
        got += len(sock.recv(1 << 20))
    return got


def test_a_short_body_raises_for_the_server_to_cut(env, hostile):
    source = Source(name="s", kind="http", base_url=hostile.url + "/", content_types=("audio/mpeg",))
    session = new_session()
    streamer = Streamer(config.from_env(env), session)
    client_end, our_end = socket.socketpair()
    client_end.setblocking(False)
    transfer = Transfer()
    try:
        with pytest.raises(StreamAborted):
            # 1 MiB arrives; the socketpair's buffer may fill, so drain it from a thread
            stop = threading.Event()

            def drain() -> None:
                while not stop.is_set():
                    try:
                        client_end.recv(1 << 20)
                    except BlockingIOError:
                        time.sleep(0.001)
                    except OSError:
                        return

            t = threading.Thread(target=drain)
            t.start()
            try:
                serve_once(streamer, source, hostile.url + "/short/inproc.mp3", {}, transfer, our_end)
            finally:
                stop.set()
                t.join()
    finally:
        our_end.close()
        client_end.close()
        session.close()
        streamer.close()
    assert not transfer.complete and 0 < transfer.bytes <= 1024 * 1024


def test_capture_notes_gunicorns_response_only():
    seen = {}

    def app(environ, start_response):
        seen["client"] = relay.client_of(environ)
        return []

    wrapped = relay.capture_server_response(app)
    sock = object()
    server_resp = GunicornResponse(SimpleNamespace(version=(1, 1), method="GET", should_close=lambda: False),
                                   sock, Config())
    wrapped({"gunicorn.socket": sock}, server_resp.start_response)
    assert seen["client"] is not None and seen["client"].sock is sock
    assert seen["client"].server_response is server_resp
    wrapped({"gunicorn.socket": sock}, lambda status, headers: None)  # any other server: the WSGI loop
    assert seen["client"] is None
    other = GunicornResponse(SimpleNamespace(version=(1, 1), method="GET", should_close=lambda: False),
                             object(), Config())
    wrapped({"gunicorn.socket": sock}, other.start_response)  # a response on another socket
    assert seen["client"] is None
