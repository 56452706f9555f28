"""New connections spread over gunicorn's workers when they all accept on one listening socket.

The kernel wakes every worker for a new connection and the first to call accept() gets it: the worker
that is already on a core, so in a burst one worker takes most of it. 300 stream starts at once split up to
232/68 here, and the busier worker's queue set the p99 first byte (~510 ms, against ~400 ms for a 178/122
split); 16 keep-alive connections opened together all went to one worker while the other idled.

So each worker counts the connections it holds in a small table shared by the master and the workers (an
anonymous shared mapping, made before the first fork). Before accepting, a worker that holds more than
SLACK connections above its least-loaded sibling steps aside for STEP_ASIDE_SECONDS, leaving the connection
to the siblings that wait on the same socket; when it resumes, it accepts whatever is still waiting without
asking again, so a sibling that is stuck delays new connections by at most that long each, never stops
them. The least-loaded worker never steps aside, so the workers together never stop accepting.

Only where the workers share one socket (ops/listeners.py): with a socket per worker the kernel spreads
connections already, and one queued on a worker's own socket cannot go to a sibling.
"""

from __future__ import annotations

import ctypes
import time
from functools import partial
from multiprocessing.sharedctypes import RawArray
from typing import Any

from gevent.server import StreamServer
from gunicorn.workers import ggevent

SLOTS = 64  # workers at once, old and new ones during a reload included; more run unbalanced, not refused
FREE, LEAVING = -1, -2  # a slot nobody holds; one whose worker has stopped accepting
SLACK = 1  # connections a worker may hold above its least-loaded sibling and still accept
STEP_ASIDE_SECONDS = 0.005


class Table:
    """Connections held per worker slot. The master claims and frees slots (before a fork, after an exit);
    each worker writes only its own slot's count; anyone reads."""

    def __init__(self, size: int = SLOTS) -> None:
        self.counts = RawArray(ctypes.c_int, [FREE] * size)

    def claim(self) -> int | None:
        for slot, count in enumerate(self.counts):
            if count == FREE:
                self.counts[slot] = 0
                return slot
        return None

    def free(self, slot: int) -> None:
        self.counts[slot] = FREE

    def busier(self, slot: int, slack: int = SLACK) -> bool:
        """Whether this slot holds more than `slack` connections above some accepting sibling."""
        mine = self.counts[slot]
        return any(0 <= count < mine - slack for other, count in enumerate(self.counts) if other != slot)


TABLE: Table | None = None  # made by the master (start), inherited by every worker


def wanted(workers: int, per_worker_sockets: bool) -> bool:
    return workers > 1 and not per_worker_sockets


def start() -> None:
    """In the master, before any worker is forked."""
    global TABLE
    TABLE = Table()


class BalancedServer(StreamServer):
    """gevent's accepting server, stepping aside while its worker is busier than a sibling."""

    def __init__(self, *args: Any, table: Table, slot: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table, self.slot = table, slot
        self.resumed = 0.0  # when it last resumed after stepping aside; 0.0 once its one sure accept is used

    def _do_read(self) -> None:
        # One connection that waited while this worker stood aside is accepted without asking again (it is
        # seen as soon as the worker listens again, so "promptly" tells it from one that arrives later).
        waited = self.resumed and time.monotonic() - self.resumed < STEP_ASIDE_SECONDS
        self.resumed = 0.0
        if not waited and self.table.busier(self.slot):
            self.stop_accepting()
            self._timer = self.loop.timer(STEP_ASIDE_SECONDS)
            self._timer.start(self._resume)
            return
        super()._do_read()

    def _resume(self) -> None:
        self.resumed = time.monotonic()
        self._start_accepting_if_started()


class Worker(ggevent.GeventWorker):
    """gunicorn's gevent worker, counting its connections in TABLE and accepting through BalancedServer.

    The slot comes from the master's pre_fork hook (gunicorn_config). gunicorn builds the accepting servers
    inside `run` from its module's `StreamServer`; this process is this worker's alone, so that name is
    pointed at BalancedServer here."""

    slot: int | None = None

    def run(self) -> None:
        table, slot = TABLE, self.slot
        if table is not None and slot is not None:
            ggevent.StreamServer = partial(BalancedServer, table=table, slot=slot)  # type: ignore[misc]
        super().run()

    def handle(self, listener: Any, client: Any, addr: Any) -> None:
        self._count(+1)
        try:
            super().handle(listener, client, addr)
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        if TABLE is not None and self.slot is not None and TABLE.counts[self.slot] >= 0:
            TABLE.counts[self.slot] += delta

    def handle_exit(self, sig: int, frame: Any) -> None:
        self._leave()
        super().handle_exit(sig, frame)

    def handle_quit(self, sig: int, frame: Any) -> None:
        self._leave()
        super().handle_quit(sig, frame)

    def _leave(self) -> None:
        """Stopping: siblings no longer step aside for this worker (the master frees the slot at its exit)."""
        if TABLE is not None and self.slot is not None:
            TABLE.counts[self.slot] = LEAVING


def claim(worker: Any) -> None:
    """gunicorn's pre_fork hook (in the master)."""
    if TABLE is not None:
        worker.slot = TABLE.claim()


def release(worker: Any) -> None:
    """gunicorn's child_exit hook (in the master)."""
    slot = getattr(worker, "slot", None)
    if TABLE is not None and slot is not None:
        TABLE.free(slot)
