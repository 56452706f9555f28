"""Shared state in an existing engine: SQLite on one machine, Redis across machines.

What lives here is small and must be shared by every worker and instance: the token-validation cache,
rate-limit and use counters, and revocations. Grants themselves are stateless and never stored.
Every method raises `StoreError` (a 503 `store_unavailable`) when the engine does not answer, so a caller
that does not catch it fails closed by construction.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

import redis

from .errors import StoreUnavailable

T = TypeVar("T")
ALL_BEFORE = "before"  # the revocation kind whose value is a cut-off time (seconds since the epoch)
SWEEP_EVERY = 60.0  # seconds between deletions of expired SQLite rows, per process
BUSY_PAUSE_FIRST, BUSY_PAUSE_MAX = 0.001, 0.01  # seconds between tries while another process holds a lock
SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL, exp REAL NOT NULL);
-- Covers TAKE_SLOT's count of a group's live members: read from the index alone, not row by row.
CREATE INDEX IF NOT EXISTS kv_k_exp ON kv (k, exp);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (kind, value));
"""


TAKE_SLOT = """
INSERT INTO kv (k, v, exp) SELECT ?, x'', ?
WHERE EXISTS (SELECT 1 FROM kv WHERE k = ? AND exp > ?)
   OR (SELECT COUNT(*) FROM kv WHERE k >= ? AND k < ? AND exp > ?) < ?
ON CONFLICT(k) DO UPDATE SET exp = excluded.exp
RETURNING 1
"""
# One Lua call for all of a stream's groups (sorted sets scored by expiry): first check every group has room
# (after dropping the expired), then add or renew in all; else name the full one.
TAKE_SLOTS_LUA = """
local now, exp, member, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if not redis.call('ZSCORE', key, member) and redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then
    return i
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, exp, member)
  redis.call('PEXPIRE', key, ttl)
end
return 0
"""


def _contended(err: sqlite3.OperationalError) -> bool:
    """Another connection holds the lock right now (worth retrying), rather than a broken file or disk."""
    text = str(err).lower()
    return "locked" in text or "busy" in text


class StoreError(StoreUnavailable):
    """The store did not answer; unhandled, it becomes 503 `store_unavailable` (fail closed).

    `detail` (which engine failed) is for logs; the response keeps the fixed sentence of StoreUnavailable."""

    def __init__(self, detail: str) -> None:
        super().__init__()
        self.detail = detail

    def __str__(self) -> str:
        return self.detail


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl: float) -> None: ...

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        """Set `key` only if it holds nothing unexpired; True when this call set it (a lease: exactly one of
        any number of concurrent callers, across workers and instances, gets True)."""
        ...

    def delete(self, key: str) -> None: ...

    def take_slots(self, groups: list[tuple[str, int]], member: str, ttl: float) -> str | None:
        """Hold `member` for `ttl` seconds in each (group, bound) whose unexpired members number fewer than its
        bound (or that holds it already: a renewal). All or nothing: the first full group's name, with nothing
        taken, else None. Atomic across workers and instances, one round trip whatever the bounds."""
        ...

    def drop_slots(self, groups: list[str], member: str) -> None: ...

    def incr(self, key: str, ttl: float, by: int = 1) -> int:
        """Add `by` (one; a block of a high limit, see limits.Reserved; -1 gives a reservation back) to a
        counter that expires `ttl` seconds after its first increment; return the new value. Atomic across
        workers and instances: N concurrent increments always end at N."""
        ...

    def revoke(self, kind: str, value: str, at: float) -> None:
        """Record a revocation durably. For ALL_BEFORE, `value` is the cut-off time; the latest one wins."""
        ...

    def revoked(self, checks: Mapping[str, str | tuple[str, ...]], issued_at: float) -> str | None:
        """Return the kind of the first revocation that matches `checks` (kind -> value, or a tuple of values
        any of which matches) or covers `issued_at` through an "all before" revocation; None otherwise."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class SQLiteStore:
    """One file shared by the workers of one machine.

    WAL mode lets readers run beside the one writer; every statement is its own short transaction
    (autocommit), so a writer waits at most `busy_timeout` seconds for another process's lock (`_guard`,
    yielding to the worker's other requests meanwhile) and the counters are single atomic UPSERT statements.
    Revocations are written with a full fsync.
    """

    def __init__(self, path: str, *, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._swept = 0.0
        self._create_schema()

    def _create_schema(self) -> None:
        """WAL mode and the tables, tolerating every other process opening the same new file at once.

        Switching a new file to WAL needs a moment of exclusive access, which another process opening the same
        new file may hold, so several workers booting on a fresh store contend for it: `_guard` retries, as for
        any other statement; the master process also creates the schema before it forks
        (gunicorn_config.on_starting)."""

        def create(db: sqlite3.Connection) -> None:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")  # persistent: later opens find it set
            db.executescript(SCHEMA)

        self._guard(create)

    def _db(self) -> sqlite3.Connection:
        """One connection per process (a forked worker opens its own); a lock serialises its statements."""
        if self._conn is None or self._pid != os.getpid():
            # No busy handler of SQLite's own: it sleeps in C, which would stall every request of a gevent
            # worker while another process holds the write lock; `_guard` waits instead, yielding.
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            # WAL + NORMAL: a commit survives a crash of the process; only revocations ask for FULL (fsync).
            conn.execute("PRAGMA synchronous=NORMAL")
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _guard(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` on the connection; while another process holds the lock it needs, run it again after a
        short pause (growing, jittered, up to `busy_timeout` in all). The pause is `time.sleep`, which under
        gevent yields to the worker's other requests, and is taken without holding this process's lock.
        Retrying is safe: a statement refused for a lock changed nothing, and `fn` rolls back what it began."""
        deadline, pause = 0.0, BUSY_PAUSE_FIRST
        while True:
            try:
                with self._lock:
                    return fn(self._db())
            except sqlite3.OperationalError as e:
                now = time.monotonic()
                deadline = deadline or now + self.busy_timeout
                if not _contended(e) or now >= deadline:
                    raise StoreError("sqlite store failed") from e
            except sqlite3.Error as e:
                raise StoreError("sqlite store failed") from e
            time.sleep(pause * (0.5 + secrets.randbelow(1000) / 1000))
            pause = min(BUSY_PAUSE_MAX, pause * 2)

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        return self._guard(lambda db: db.execute(sql, args).fetchall())

    def _sweep(self, now: float) -> None:
        """Delete expired rows now and then, so counters for past windows do not pile up."""
        if now - self._swept >= SWEEP_EVERY:
            self._swept = now
            self._run("DELETE FROM kv WHERE exp <= ?", (now,))

    def get(self, key: str) -> bytes | None:
        rows = self._run("SELECT CAST(v AS BLOB) FROM kv WHERE k = ? AND exp > ?", (key, time.time()))
        return bytes(rows[0][0]) if rows else None

    def put(self, key: str, value: bytes, ttl: float) -> None:
        now = time.time()
        self._run("INSERT OR REPLACE INTO kv (k, v, exp) VALUES (?, ?, ?)", (key, value, now + ttl))
        self._sweep(now)

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        now = time.time()
        rows = self._run(
            """
            INSERT INTO kv (k, v, exp) VALUES (?, ?, ?)
            ON CONFLICT(k) DO UPDATE SET v = excluded.v, exp = excluded.exp WHERE exp <= ?
            RETURNING 1
            """,
            (key, value, now + ttl, now),
        )
        return bool(rows)

    def delete(self, key: str) -> None:
        self._run("DELETE FROM kv WHERE k = ?", (key,))

    def take_slots(self, groups: list[tuple[str, int]], member: str, ttl: float) -> str | None:
        # Members are kv rows `<group>/<member>`; per group one statement counts the live ones (an index range
        # on the key) and inserts or renews; all groups in one write transaction (one lock, all or nothing).
        now = time.time()

        def take(db: sqlite3.Connection) -> str | None:
            db.execute("BEGIN IMMEDIATE")
            try:
                for group, bound in groups:
                    key = f"{group}/{member}"
                    if not db.execute(TAKE_SLOT, (key, now + ttl, key, now, group + "/", group + "0", now,
                                                  bound)).fetchall():
                        db.execute("ROLLBACK")
                        return group
                db.execute("COMMIT")
                return None
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

        full = self._guard(take)
        self._sweep(now)
        return full

    def drop_slots(self, groups: list[str], member: str) -> None:
        # One statement, so one commit (executemany in autocommit mode commits once per row).
        keys = tuple(f"{g}/{member}" for g in groups)
        self._run(f"DELETE FROM kv WHERE k IN ({', '.join('?' * len(keys))})", keys)  # noqa: S608 - placeholders only

    def incr(self, key: str, ttl: float, by: int = 1) -> int:
        now = time.time()
        rows = self._run(
            """
            INSERT INTO kv (k, v, exp) VALUES (?, ?, ?)
            ON CONFLICT(k) DO UPDATE SET
                v = CASE WHEN exp <= ? THEN excluded.v ELSE CAST(v AS INTEGER) + excluded.v END,
                exp = CASE WHEN exp <= ? THEN excluded.exp ELSE exp END
            RETURNING CAST(v AS INTEGER)
            """,
            (key, by, now + ttl, now, now),
        )
        self._sweep(now)
        return int(rows[0][0])

    def revoke(self, kind: str, value: str, at: float) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute("PRAGMA synchronous=FULL")
            try:
                db.execute("INSERT OR REPLACE INTO revocations (kind, value, at) VALUES (?, ?, ?)",
                           (kind, value, at))
            finally:
                db.execute("PRAGMA synchronous=NORMAL")

        self._guard(write)

    def revoked(self, checks: Mapping[str, str | tuple[str, ...]], issued_at: float) -> str | None:
        pairs = _pairs(checks)
        clause = " OR ".join("(kind = ? AND value = ?)" for _ in pairs) or "0"
        args = [x for pair in pairs for x in pair]
        rows = self._run(
            f"SELECT kind FROM revocations WHERE {clause} "  # noqa: S608 - placeholders only
            "OR (kind = ? AND CAST(value AS REAL) > ?) LIMIT 1",
            (*args, ALL_BEFORE, issued_at),
        )
        return rows[0][0] if rows else None

    def ping(self) -> None:
        self._run("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


class RedisStore:
    """Several machines share one Redis; every operation is one round trip (MULTI/EXEC where it counts).

    Durability of revocations is the Redis server's: run it with AOF (`appendonly yes`) or snapshots as
    your recovery point requires. Keys carry the prefix `fmr:`.
    """

    def __init__(self, url: str, *, timeout: float = 2.0, max_connections: int = 200) -> None:
        # A blocking pool: under a burst (hundreds of streams on one gevent worker) a request waits up to
        # `timeout` for a free connection instead of failing at once with "too many connections" (a 503).
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=timeout, socket_timeout=timeout,
            socket_connect_timeout=timeout)
        self._redis = redis.Redis(connection_pool=pool)
        self._prefix = "fmr:"

    def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:
            raise StoreError("redis store unavailable") from e

    def get(self, key: str) -> bytes | None:
        return self._call(self._redis.get, self._prefix + key)  # type: ignore[return-value]

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._call(self._redis.set, self._prefix + key, value, px=max(1, int(ttl * 1000)))

    def add(self, key: str, value: bytes, ttl: float) -> bool:
        return bool(self._call(self._redis.set, self._prefix + key, value, px=max(1, int(ttl * 1000)), nx=True))

    def delete(self, key: str) -> None:
        self._call(self._redis.delete, self._prefix + key)

    def take_slots(self, groups: list[tuple[str, int]], member: str, ttl: float) -> str | None:
        now = time.time()
        keys = [self._prefix + "slots:" + group for group, _ in groups]
        full = int(self._call(self._redis.eval, TAKE_SLOTS_LUA, len(keys), *keys, repr(now), repr(now + ttl),
                              member, max(1, int(ttl * 1000)), *(bound for _, bound in groups)))
        return groups[full - 1][0] if full else None

    def drop_slots(self, groups: list[str], member: str) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for group in groups:
            pipe.zrem(self._prefix + "slots:" + group, member)
        self._call(pipe.execute)

    def incr(self, key: str, ttl: float, by: int = 1) -> int:
        def run() -> int:
            pipe = self._redis.pipeline(transaction=True)
            pipe.set(self._prefix + key, 0, px=max(1, int(ttl * 1000)), nx=True)
            pipe.incrby(self._prefix + key, by)
            return int(pipe.execute()[1])

        return self._call(run)

    def revoke(self, kind: str, value: str, at: float) -> None:
        if kind == ALL_BEFORE:
            # keep the latest cut-off only: a later "all before" covers every earlier one
            script = ("local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
                      "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end")
            self._call(self._redis.eval, script, 1, self._prefix + "rev:before", value)
        else:
            self._call(self._redis.set, f"{self._prefix}rev:{kind}:{value}", repr(at))

    def revoked(self, checks: Mapping[str, str | tuple[str, ...]], issued_at: float) -> str | None:
        pairs = _pairs(checks)
        kinds = [k for k, _ in pairs]
        keys = [f"{self._prefix}rev:{k}:{v}" for k, v in pairs] + [self._prefix + "rev:before"]
        values: list = self._call(self._redis.mget, keys)  # type: ignore[assignment]
        for kind, value in zip(kinds, values[:-1], strict=True):
            if value is not None:
                return kind
        before = values[-1]
        return ALL_BEFORE if before is not None and float(before) > issued_at else None

    def ping(self) -> None:
        self._call(self._redis.ping)

    def close(self) -> None:
        self._redis.close()
        self._redis.connection_pool.disconnect()


def _pairs(checks: Mapping[str, str | tuple[str, ...]]) -> list[tuple[str, str]]:
    """(kind, value) for every non-empty value; a tuple gives one pair per value."""
    out = []
    for kind, value in checks.items():
        for v in (value,) if isinstance(value, str) else value:
            if v:
                out.append((kind, v))
    return out


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///"):])
    if url.startswith(("redis://", "rediss://")):
        return RedisStore(url)
    raise ValueError("unsupported store URL")
