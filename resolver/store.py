"""Shared state in an existing engine: SQLite on one machine, Redis across machines.

What lives here is small and must be shared by every worker and instance: the token-validation cache,
rate-limit and use counters, and revocations. Grants themselves are stateless and never stored.
Every method raises `StoreError` when the engine is unreachable, so callers can fail closed.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from typing import Protocol

import redis


class StoreError(Exception):
    """The store did not answer; the caller decides how to fail closed."""


class Store(Protocol):
    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes, ttl: float) -> None: ...

    def incr(self, key: str, ttl: float) -> int:
        """Add one to a counter that expires `ttl` seconds after its first increment; return the new value."""
        ...

    def revoke(self, kind: str, value: str, at: float) -> None: ...

    def revoked(self, checks: dict[str, str], issued_at: float) -> str | None:
        """Return the kind of the first revocation that matches `checks` (kind -> value) or covers
        `issued_at` through an "all before" revocation; None when nothing matches."""
        ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


ALL_BEFORE = "before"


class SQLiteStore:
    """One file shared by the workers of one machine; WAL mode lets readers run beside one writer."""

    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        with self._lock:
            self._db().executescript(
                """
                PRAGMA journal_mode=WAL;
                CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB NOT NULL, exp REAL NOT NULL);
                CREATE TABLE IF NOT EXISTS revocations (
                    kind TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (kind, value));
                """
            )

    def _db(self) -> sqlite3.Connection:
        """One connection per process (statements are short; a lock serialises them)."""
        if self._conn is None or self._pid != os.getpid():
            try:
                self._conn = sqlite3.connect(self.path, timeout=5, isolation_level=None, check_same_thread=False)
            except sqlite3.Error as e:
                raise StoreError("sqlite store unavailable") from e
            self._pid = os.getpid()
        return self._conn

    def _run(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            with self._lock:
                return self._db().execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StoreError("sqlite store failed") from e

    def get(self, key: str) -> bytes | None:
        rows = self._run("SELECT v FROM kv WHERE k = ? AND exp > ?", (key, time.time()))
        return rows[0][0] if rows else None

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._run("INSERT OR REPLACE INTO kv (k, v, exp) VALUES (?, ?, ?)", (key, value, time.time() + ttl))
        if int(time.time()) % 60 == 0:  # sweep expired rows now and then, cheaply
            self._run("DELETE FROM kv WHERE exp <= ?", (time.time(),))

    def incr(self, key: str, ttl: float) -> int:
        now = time.time()
        rows = self._run(
            """
            INSERT INTO kv (k, v, exp) VALUES (?, 1, ?)
            ON CONFLICT(k) DO UPDATE SET
                v = CASE WHEN exp <= ? THEN 1 ELSE CAST(v AS INTEGER) + 1 END,
                exp = CASE WHEN exp <= ? THEN excluded.exp ELSE exp END
            RETURNING CAST(v AS INTEGER)
            """,
            (key, now + ttl, now, now),
        )
        return int(rows[0][0])

    def revoke(self, kind: str, value: str, at: float) -> None:
        self._run("INSERT OR REPLACE INTO revocations (kind, value, at) VALUES (?, ?, ?)", (kind, value, at))

    def revoked(self, checks: dict[str, str], issued_at: float) -> str | None:
        pairs = [(k, v) for k, v in checks.items() if v]
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
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class RedisStore:
    """Several machines share one Redis; every operation is one round trip."""

    def __init__(self, url: str) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = "fmr:"

    def _call(self, fn, *args):  # type: ignore[no-untyped-def]
        try:
            return fn(*args)
        except redis.RedisError as e:
            raise StoreError("redis store unavailable") from e

    def get(self, key: str) -> bytes | None:
        return self._call(self._redis.get, self._prefix + key)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        self._call(self._redis.set, self._prefix + key, value, None, max(1, int(ttl * 1000)))

    def incr(self, key: str, ttl: float) -> int:
        def run() -> int:
            pipe = self._redis.pipeline()
            pipe.set(self._prefix + key, 0, px=max(1, int(ttl * 1000)), nx=True)
            pipe.incr(self._prefix + key)
            return int(pipe.execute()[1])

        return self._call(run)

    def revoke(self, kind: str, value: str, at: float) -> None:
        if kind == ALL_BEFORE:
            # keep the latest cut-off only: a later "all before" covers every earlier one
            script = "local c = tonumber(redis.call('GET', KEYS[1]) or '0') " \
                     "if tonumber(ARGV[1]) > c then redis.call('SET', KEYS[1], ARGV[1]) end"
            self._call(self._redis.eval, script, 1, self._prefix + "rev:before", value)
        else:
            self._call(self._redis.set, f"{self._prefix}rev:{kind}:{value}", str(at))

    def revoked(self, checks: dict[str, str], issued_at: float) -> str | None:
        kinds = [k for k, v in checks.items() if v]
        keys = [f"{self._prefix}rev:{k}:{checks[k]}" for k in kinds] + [self._prefix + "rev:before"]
        values = self._call(self._redis.mget, keys)
        for kind, value in zip(kinds, values[:-1], strict=True):
            if value is not None:
                return kind
        before = values[-1]
        return ALL_BEFORE if before is not None and float(before) > issued_at else None

    def ping(self) -> None:
        self._call(self._redis.ping)

    def close(self) -> None:
        self._redis.close()


def open_store(url: str) -> Store:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///"):])
    if url.startswith(("redis://", "rediss://")):
        return RedisStore(url)
    raise ValueError("unsupported store URL")
