"""The stream passes on what a slow upstream has sent so far, instead of waiting for a full chunk."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from resolver import config
from resolver.sources import Source
from resolver.streaming.upstream import Transfer, Upstream, new_session

FIRST, REST = b"a" * 1000, b"b" * 1000


@pytest.fixture
def held_upstream() -> Iterator[tuple[str, threading.Event, threading.Event]]:
    """Sends headers and FIRST, then holds the rest until `release` is set (or 5 s pass: `timed_out`)."""
    release, timed_out = threading.Event(), threading.Event()
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            head = f"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: {len(FIRST + REST)}\r\n\r\n"
            conn.sendall(head.encode() + FIRST)
            if not release.wait(5):
                timed_out.set()
            conn.sendall(REST)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/r.mp3", release, timed_out
    release.set()
    thread.join()
    listener.close()


def test_first_bytes_of_a_slow_upstream_are_passed_on_at_once(held_upstream, env) -> None:  # type: ignore[no-untyped-def]
    url, release, timed_out = held_upstream
    base, name = url.rsplit("/", 1)
    source = Source(name="slow", kind="http", base_url=base + "/", content_types=("audio/mpeg",))
    session = new_session()
    upstream = Upstream(config.from_env(env), session)
    transfer = Transfer()
    resp = upstream.response(source, url, method="GET", client_headers={}, filename=name, transfer=transfer)
    body = iter(resp.response)
    first = next(body)
    held = not timed_out.is_set()  # the first bytes left before the upstream sent the rest
    release.set()
    rest = b"".join(body)
    resp.close()
    session.close()
    upstream.hops.close()
    assert first == FIRST and held
    assert first + rest == FIRST + REST and transfer.complete and transfer.bytes == len(FIRST + REST)
