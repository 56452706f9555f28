"""The bench's own instruments: if they miscount, every figure in BENCHMARKS.md is wrong."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from bench import procs
from bench.client import BodyReader, afetch, apaced, fetch
from bench.stack import ROOT
from bench.upstream import expected, parse_range

SIZE = 3 * (1 << 20) + 5


@pytest.mark.parametrize(
    ("header", "size", "want"),
    [
        (None, 100, None),
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-500", 100, (0, 99)),
        ("bytes=95-200", 100, (95, 99)),
        ("bytes=100-", 100, "bad"),
        ("bytes=-0", 100, "bad"),
        ("bytes=5-1", 100, "bad"),
        ("bytes=0-1,5-6", 100, None),
    ],
)
def test_upstream_range_parsing(header: str | None, size: int, want: object) -> None:
    assert parse_range(header, size) == want


def chunked(body: bytes, sizes: list[int]) -> bytes:
    out, i = b"", 0
    for n in sizes:
        out += f"{n:x};ext=1\r\n".encode() + body[i : i + n] + b"\r\n"
        i += n
    return out + b"0\r\nTrailer: x\r\n\r\n"


@pytest.mark.parametrize("split", [1, 2, 3, 7, 64, 1000])
def test_chunked_body_is_decoded_whatever_the_read_boundaries(split: int) -> None:
    body = bytes(range(256)) * 20
    wire = chunked(body, [1, 300, 4000, len(body) - 4301])
    reader = BodyReader(None, True, keep=True)
    for i in range(0, len(wire), split):
        reader.feed(memoryview(wire[i : i + split]))
    assert reader.done and reader.kept == body and reader.received == len(body)


def test_short_body_is_an_error() -> None:
    reader = BodyReader(10, False, keep=False)
    reader.feed(memoryview(b"12345"))
    with pytest.raises(Exception, match="closed after 5"):
        reader.eof()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.upstream", "--rate", "65536"], cwd=ROOT,
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    yield f"http://127.0.0.1:{port}", proc.pid
    proc.terminate()
    proc.wait(10)
    proc.stdout.close()


def test_upstream_serves_the_pattern_and_counts_the_bytes(upstream: tuple[str, int]) -> None:
    url, _ = upstream
    fetch(url + "/_reset", method="POST", body=b"")
    whole = fetch(f"{url}/media/{SIZE}.mp3", keep=True)
    tail = fetch(f"{url}/media/{SIZE}.mp3", headers={"Range": "bytes=-1000"}, keep=True)
    beyond = fetch(f"{url}/media/{SIZE}.mp3", headers={"Range": f"bytes={SIZE}-"})
    assert whole.status == 200 and whole.body == expected(0, SIZE)
    assert tail.status == 206 and tail.body == expected(SIZE - 1000, 1000)
    assert tail.headers["content-range"] == f"bytes {SIZE - 1000}-{SIZE - 1}/{SIZE}"
    assert beyond.status == 416
    stats = fetch(url + "/_stats", keep=True).body
    assert f'"body_bytes": {SIZE + 1000}'.encode() in stats


def test_slow_upstream_paces_and_sends_the_first_bytes_at_once(upstream: tuple[str, int]) -> None:
    url, _ = upstream
    resp = asyncio.run(afetch(f"{url}/slow/{32 * 1024}.mp3"))
    assert resp.received == 32 * 1024
    assert resp.first_body < 0.2 and 0.3 < resp.wall < 1.5  # 32 KiB at 64 KiB/s: about half a second


def test_a_player_reads_at_its_rate_and_hangs_up_after_its_time(upstream: tuple[str, int]) -> None:
    """Measure 3p.'s client: from a fast upstream it takes about rate x seconds, not the whole body."""
    url, _ = upstream
    resp = asyncio.run(apaced(f"{url}/media/{SIZE}.mp3", rate=64 * 1024, seconds=0.5))
    assert resp.status == 200 and resp.first_body < 0.2 and resp.wall < 1.5
    assert 16 * 1024 <= resp.received <= 64 * 1024  # about 32 KiB in half a second at 64 KiB/s; never 3 MiB


def test_process_readings(upstream: tuple[str, int]) -> None:
    _, pid = upstream
    assert procs.rss_kib(pid) > 1000 and procs.status_kib(pid, "VmHWM") >= procs.rss_kib(pid) // 2
    assert procs.cpu_seconds(os.getpid()) > 0
    assert procs.children(os.getpid()) and pid in procs.children(os.getpid())
