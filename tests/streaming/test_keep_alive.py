"""Upstream keep-alive (upstream._keep_alive, Upstream._send): a body read to exactly its length gives its
connection back to the pool, so the next grant skips the handshake; a pooled connection the upstream closed
just as it was reused is retried once on another connection, never answered 502.

Under gunicorn from the Procfile, against a real HTTP/1.1 keep-alive server that counts its connections.
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import pytest
import requests

from resolver.access.signing import Signer
from tests.support.env import KEYS, base_env, start_gunicorn, stop_gunicorn
from tests.support.hostile import BLOB, mint, read_request, stream_env

SIZE = len(BLOB)


@dataclass
class KeepAliveStore:
    """HTTP/1.1 on raw sockets: /ok/ answers BLOB and keeps the connection; with `answer_once`, a kept
    connection's second request is read and the connection closed unanswered (the keep-alive race)."""

    answer_once: bool = False
    connections: int = 0
    answered: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            served = 0
            while (req := read_request(conn)) is not None:
                if self.answer_once and served:
                    return  # closed without an answer, as a server whose idle timeout just fired
                head = (f"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {SIZE}\r\n"
                        "Accept-Ranges: bytes\r\n\r\n")
                conn.sendall(head.encode())
                if req.method != "HEAD":
                    conn.sendall(BLOB)
                served += 1
                with self.lock:
                    self.answered += 1

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=[False, True], ids=["keeps", "closes-on-reuse"])
def store_and_server(request, tmp_path, twilio, storage):
    store = KeepAliveStore(answer_once=request.param)
    env = {**stream_env(tmp_path, base_env(tmp_path, twilio, storage), store.url), "WEB_CONCURRENCY": "1"}
    srv = start_gunicorn(env, tmp_path, name="keepalive")
    yield store, srv
    stop_gunicorn(srv)
    store.close()


def test_sequential_grants_reuse_one_upstream_connection_or_retry_a_closed_one(store_and_server):
    store, srv = store_and_server
    signer = Signer(KEYS)
    bodies = [requests.get(srv.url + mint(signer, "hostile", f"ok/{i}.mp3"), timeout=20) for i in range(3)]
    assert [(r.status_code, r.content == BLOB) for r in bodies] == [(200, True)] * 3
    assert store.answered == 3
    if store.answer_once:  # each reuse found the connection closed: once more, on a new one
        assert store.connections == 3
    else:
        assert store.connections == 1
