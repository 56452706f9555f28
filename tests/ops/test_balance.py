"""New connections spread over the workers on one shared socket (ops/balance.py): the table's rule, gevent's
accepting server stepping aside (never for good), and the Procfile's gunicorn holding a burst evenly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import gevent
import pytest
from gevent.pool import Pool

from bench import procs
from resolver.ops import balance
from resolver.ops.balance import FREE, LEAVING, BalancedServer, Table
from resolver.ops.listeners import per_worker
from tests.support.env import start_gunicorn, stop_gunicorn


def table(*counts: int) -> Table:
    t = Table(len(counts))
    for slot, count in enumerate(counts):
        t.counts[slot] = count
    return t


@pytest.mark.parametrize(("counts", "busier"), [
    ((3, 1), True),  # more than SLACK above a sibling: step aside
    ((2, 1), False),  # within SLACK
    ((0, 5), False),  # the least loaded never steps aside
    ((9, FREE), False),  # nobody else holds a slot
    ((9, LEAVING), False),  # a stopping sibling accepts nothing: not waited for
    ((9, LEAVING, 4), True),
])
def test_a_worker_steps_aside_only_for_an_accepting_sibling_with_fewer_connections(counts, busier):
    assert table(*counts).busier(0) is busier


def test_slots_are_claimed_before_a_fork_and_freed_at_the_exit(monkeypatch):
    monkeypatch.setattr(balance, "TABLE", Table(2))
    first, second, third = SimpleNamespace(), SimpleNamespace(), SimpleNamespace()
    for worker in (first, second, third):
        balance.claim(worker)
    assert (first.slot, second.slot, third.slot) == (0, 1, None)  # a third runs unbalanced, not refused
    balance.release(first)
    balance.claim(third)
    assert third.slot == 0 and balance.TABLE.counts[0] == 0


def accept_time(t: Table, slot: int = 0) -> float:
    """Seconds from a connection's arrival to its accept by a BalancedServer on a real listening socket."""
    accepted: list[float] = []
    server = BalancedServer(("127.0.0.1", 0), handle=lambda sock, addr: accepted.append(time.monotonic()),
                            spawn=Pool(10), table=t, slot=slot)
    server.max_accept = 1  # as gunicorn sets it for more than one worker
    server.start()
    try:
        gevent.sleep(0.01)
        started = time.monotonic()
        with socket.create_connection(server.address, timeout=2):  # the kernel completes it: no accept needed
            deadline = started + 2
            while not accepted and time.monotonic() < deadline:
                gevent.sleep(0.0005)
        assert accepted, "never accepted"
        return accepted[0] - started
    finally:
        server.stop()


def test_an_idle_sibling_is_given_the_connection_and_a_stuck_one_delays_it_only_briefly(monkeypatch):
    step = 0.3  # long enough that a loaded machine's scheduling cannot be mistaken for a step aside
    monkeypatch.setattr(balance, "STEP_ASIDE_SECONDS", step)
    # The sibling (slot 1) holds nothing and never accepts (it is not there): the connection waits out one
    # step aside, then this worker takes it.
    waited = accept_time(table(5, 0))
    assert step * 0.8 <= waited < step * 3
    # Not busier than anyone: accepted at once.
    assert accept_time(table(1, 0)) < step / 2


@pytest.mark.parametrize("workers", [1, 2])
def test_the_procfile_config_balances_exactly_where_the_workers_share_a_socket(workers):
    code = "import resolver.ops.gunicorn_config as c; print(c.worker_class)"  # in a child: the config patches gevent
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "WEB_CONCURRENCY": str(workers)},
                         capture_output=True, text=True, timeout=60, check=True)
    shared = workers > 1 and not per_worker(workers)
    assert out.stdout.strip() == ("resolver.ops.balance.Worker" if shared else "gevent")


def connections_by_worker(master: int, port: int) -> dict[int, int]:
    """Established connections on `port` held by each of the master's children (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "01":  # local port, ESTABLISHED
            inodes.add(fields[9])
    held = {}
    for pid in procs.children(master):
        links = [os.readlink(p) for p in Path(f"/proc/{pid}/fd").iterdir() if p.is_symlink()]
        held[pid] = sum(1 for link in links if link.startswith("socket:[") and link[8:-1] in inodes)
    return held


async def keep_alive_load(port: int, n: int, requests: int) -> list[asyncio.StreamWriter]:
    """n connections opened at once, each sending `requests` requests back to back as soon as it is up (as a
    load tool or a page of media players does); the connections are left open."""

    async def one() -> asyncio.StreamWriter:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(requests):
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            await reader.readexactly(length)
        return writer

    return await asyncio.gather(*(one() for _ in range(n)))


def wait_for_workers(master: int, n: int, not_in: frozenset[int] | set[int] = frozenset()) -> set[int]:
    """Once `n` workers, none of them in `not_in`, run (and listen: gunicorn answered /healthz before)."""
    deadline = time.monotonic() + 30
    while True:
        workers = set(procs.children(master))
        if len(workers) == n and not workers & not_in:
            time.sleep(1.0)  # booted: listening
            return workers
        assert time.monotonic() < deadline, f"workers now {workers}, waiting for {n} not in {not_in}"
        time.sleep(0.1)


def held_after_a_burst(master: int, port: int) -> dict[int, int]:
    async def load_and_count() -> dict[int, int]:
        writers = await keep_alive_load(port, 32, 20)
        try:
            return connections_by_worker(master, port)
        finally:
            for w in writers:
                w.close()

    return asyncio.run(load_and_count())


shared_socket = pytest.mark.skipif(per_worker(2), reason="one socket per worker here (tcp_migrate_req=1): the "
                                                          "kernel spreads the connections")


@shared_socket
def test_a_burst_of_keep_alive_connections_is_held_evenly_by_two_workers(tmp_path, env):
    server = start_gunicorn({**env, "WEB_CONCURRENCY": "2"}, tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        wait_for_workers(server.proc.pid, 2)
        held = held_after_a_burst(server.proc.pid, port)
        assert sum(held.values()) == 32 and len(held) == 2, held
        assert all(12 <= n <= 20 for n in held.values()), held  # unbalanced: all 32 on one worker in 3 of 4 runs
    finally:
        stop_gunicorn(server)


@shared_socket
def test_workers_started_by_a_reload_take_over_the_slots_and_stay_balanced(tmp_path, env):
    """SIGHUP: the new workers claim slots of their own while the old ones still run, and after two reloads
    the pair that serves shares a burst as the first pair did."""
    server = start_gunicorn({**env, "WEB_CONCURRENCY": "2"}, tmp_path)
    port = int(server.url.rsplit(":", 1)[1])
    try:
        workers = wait_for_workers(server.proc.pid, 2)
        for _ in range(2):
            os.kill(server.proc.pid, signal.SIGHUP)
            workers = wait_for_workers(server.proc.pid, 2, not_in=workers)
        held = held_after_a_burst(server.proc.pid, port)
        assert set(held) == workers and sum(held.values()) == 32, held
        assert all(12 <= n <= 20 for n in held.values()), held
    finally:
        stop_gunicorn(server)
