"""Lean HTTP/1.1 clients for the load: they must cost far less CPU than the server they measure.

- `fetch`: one request on a raw blocking socket, body read with `recv_into` into a 1 MiB buffer and
  counted, not stored (a 1 GiB download costs the client a few hundred ms of CPU, mostly in the kernel).
- `afetch` / `Conn`: the same over asyncio streams, for hundreds of concurrent listeners and for
  keep-alive request loops (`load`), with per-request latency.
Both decode Content-Length, chunked and read-to-close bodies with `BodyReader`.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

BUF = 1 << 20


class HTTPError(Exception):
    pass


class BodyReader:
    """Incremental body decoder; counts decoded bytes and keeps them only when asked."""

    def __init__(self, length: int | None, chunked: bool, keep: bool) -> None:
        self.length, self.chunked = length, chunked
        self.received = 0
        self.kept: bytearray | None = bytearray() if keep else None
        self.done = (not chunked) and length == 0
        self._left = 0
        self._line = bytearray()
        self._state = "size"

    def _take(self, data: memoryview) -> None:
        self.received += len(data)
        if self.kept is not None:
            self.kept += data

    def feed(self, data: memoryview) -> None:
        if not self.chunked:
            n = len(data) if self.length is None else min(len(data), self.length - self.received)
            self._take(data[:n])
            self.done = self.length is not None and self.received >= self.length
            return
        i, end = 0, len(data)
        while i < end and not self.done:
            if self._state == "data":
                n = min(self._left, end - i)
                self._take(data[i : i + n])
                i, self._left = i + n, self._left - n
                if self._left == 0:
                    self._state = "crlf"
                continue
            window = bytes(data[i : i + 128])
            k = window.find(b"\n")
            if k < 0:
                self._line += window
                i += len(window)
                if len(self._line) > 4096:
                    raise HTTPError("chunk control line too long")
                continue
            line = bytes(self._line + window[:k]).strip()
            self._line.clear()
            i += k + 1
            if self._state == "size":
                size = int(line.split(b";")[0], 16)
                self._state, self._left = ("trailer", 0) if size == 0 else ("data", size)
            elif self._state == "crlf":
                if line:
                    raise HTTPError("missing CRLF after chunk")
                self._state = "size"
            elif not line:  # trailer section ends with an empty line
                self.done = True

    def eof(self) -> None:
        if self.length is None and not self.chunked:
            self.done = True
        if not self.done:
            raise HTTPError(f"connection closed after {self.received} body bytes")


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    received: int = 0  # decoded body bytes
    body: bytes = b""  # only when keep=True
    ttfb: float = 0.0  # seconds from the start of connect to the first response byte
    first_body: float = 0.0  # ... to the first body byte (0.0 if the body is empty)
    wall: float = 0.0  # ... to the last body byte


def parse_head(raw: bytes) -> tuple[int, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError(f"bad status line {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


def body_reader(method: str, status: int, headers: dict[str, str], keep: bool) -> BodyReader:
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return BodyReader(0, False, keep)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return BodyReader(None, True, keep)
    if "content-length" in headers:
        return BodyReader(int(headers["content-length"]), False, keep)
    return BodyReader(None, False, keep)


def request_bytes(method: str, host: str, path: str, headers: dict[str, str] | None, body: bytes | None,
                  close: bool) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "User-Agent: bench", "Accept: */*"]
    if close:
        lines.append("Connection: close")
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None,
          keep: bool = False, timeout: float = 120.0) -> Response:
    """One request on a fresh connection; times measured from the start of connect."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    out = Response()
    t0 = time.perf_counter()
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(request_bytes(method, f"{host}:{port}", path, headers, body, close=True))
        buf = bytearray(BUF)
        view = memoryview(buf)
        head = bytearray()
        while True:
            n = sock.recv_into(buf)
            if not out.ttfb:
                out.ttfb = time.perf_counter() - t0
            if n == 0:
                raise HTTPError("connection closed before the response head")
            head += view[:n]
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                break
        out.status, out.headers = parse_head(bytes(head[:end]))
        reader = body_reader(method, out.status, out.headers, keep)
        rest = memoryview(bytes(head[end + 4 :]))
        if rest:
            out.first_body = time.perf_counter() - t0
            reader.feed(rest)
        while not reader.done:
            n = sock.recv_into(buf)
            if n == 0:
                reader.eof()
                break
            if not out.first_body:
                out.first_body = time.perf_counter() - t0
            reader.feed(view[:n])
    out.wall = time.perf_counter() - t0
    out.received = reader.received
    out.body = bytes(reader.kept) if reader.kept is not None else b""
    return out


class Conn:
    """A keep-alive asyncio connection for request loops (one request at a time, no pipelining)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=BUF)
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None,
                      body: bytes | None = None, keep: bool = True, close: bool = False) -> Response:
        if self.writer is None:
            await self.open()
        assert self.reader is not None and self.writer is not None
        out = Response()
        t0 = time.perf_counter()
        self.writer.write(request_bytes(method, f"{self.host}:{self.port}", path, headers, body, close))
        first = await self.reader.read(1)
        out.ttfb = time.perf_counter() - t0
        if not first:
            raise HTTPError("connection closed before the response head")
        head = first + await self.reader.readuntil(b"\r\n\r\n")
        out.status, out.headers = parse_head(head[:-4])
        reader = body_reader(method, out.status, out.headers, keep)
        while not reader.done:
            data = await self.reader.read(BUF)
            if not data:
                reader.eof()
                break
            if not out.first_body:
                out.first_body = time.perf_counter() - t0
            reader.feed(memoryview(data))
        out.wall = time.perf_counter() - t0
        out.received = reader.received
        out.body = bytes(reader.kept) if reader.kept is not None else b""
        if close or out.headers.get("connection", "").lower() == "close":
            await self.close()
        return out


async def afetch(url: str, method: str = "GET", headers: dict[str, str] | None = None,
                 body: bytes | None = None, keep: bool = False) -> Response:
    """One request on a fresh asyncio connection; times include connect."""
    parts = urlsplit(url)
    conn = Conn(parts.hostname or "127.0.0.1", parts.port or 80)
    t0 = time.perf_counter()
    await conn.open()
    connect = time.perf_counter() - t0
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        out = await conn.request(method, path, headers, body, keep=keep, close=True)
    finally:
        await conn.close()
    out.ttfb += connect
    out.first_body += connect if out.first_body else 0.0
    out.wall += connect
    return out


async def apaced(url: str, rate: int, seconds: float, piece: int = 8192) -> Response:
    """A player at playback speed: `piece` bytes every piece/rate seconds for `seconds`, then it hangs up (the
    body may be far longer). The stream buffers at most a few pieces, so the kernel's receive buffer stays
    small and the server sees a slow reader, whatever its upstream's pace. Times include connect."""
    parts = urlsplit(url)
    out = Response()
    t0 = time.perf_counter()
    reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 80, limit=piece)
    try:
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        writer.write(request_bytes("GET", f"{parts.hostname}:{parts.port}", path, None, None, True))
        head = await reader.readuntil(b"\r\n\r\n")
        out.ttfb = time.perf_counter() - t0
        out.status, out.headers = parse_head(head[:-4])
        while time.perf_counter() - t0 < seconds:
            data = await reader.read(piece)
            if not data:
                break
            if not out.first_body:
                out.first_body = time.perf_counter() - t0
            out.received += len(data)
            await asyncio.sleep(len(data) / rate)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
    out.wall = time.perf_counter() - t0
    return out


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def load(url: str, make_request, concurrency: int, seconds: float, warmup: float = 0.5) -> LoadResult:
    """`concurrency` keep-alive connections each looping `make_request(i) -> (method, path, headers, body)`
    for `seconds` after `warmup`; counts completed requests, latencies and statuses in the window."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counters = {"errors": 0, "i": 0}
    loop = asyncio.get_running_loop()
    start = loop.time() + warmup
    stop = start + seconds

    async def worker() -> None:
        conn = Conn(host, port)
        try:
            while loop.time() < stop:
                counters["i"] += 1
                method, path, headers, body = make_request(counters["i"])
                try:
                    resp = await conn.request(method, path, headers, body)
                except (OSError, HTTPError, asyncio.IncompleteReadError) as e:
                    del e
                    await conn.close()
                    if loop.time() >= start:
                        counters["errors"] += 1
                    continue
                now = loop.time()
                if start <= now < stop:
                    latencies.append(resp.wall)
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
        finally:
            await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return LoadResult(len(latencies), counters["errors"], seconds, latencies, statuses)
