"""One suite, both real engines: SQLite (a temporary file) and Redis (127.0.0.1:6379, a test DB)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from resolver.store import ALL_BEFORE, TAKE_SLOT, RedisStore, SQLiteStore, StoreError, open_store
from tests.support.env import free_port, process_env

INCR_SCRIPT = (
    "import sys\n"
    "from resolver.store import open_store\n"
    "s = open_store(sys.argv[1])\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    s.incr('shared-counter', 60)\n"
)


def test_open_store_picks_the_backend(store_url, store):
    assert isinstance(store, SQLiteStore if store_url.startswith("sqlite") else RedisStore)


def test_unknown_store_url_is_refused():
    with pytest.raises(ValueError):
        open_store("memcached://127.0.0.1:11211")


def test_get_missing_key_is_none(store):
    assert store.get("nothing-here") is None


def test_put_then_get_round_trips_bytes(store):
    store.put("k", b"\x00\xff{json}", ttl=30)
    assert store.get("k") == b"\x00\xff{json}"
    store.put("k", b"second", ttl=30)
    assert store.get("k") == b"second"


def test_put_expires_after_ttl(store):
    store.put("short", b"v", ttl=0.15)
    assert store.get("short") == b"v"
    time.sleep(0.3)
    assert store.get("short") is None


def test_incr_counts_from_one_and_reads_back_with_get(store):
    assert [store.incr("c", ttl=30) for _ in range(3)] == [1, 2, 3]
    assert int(store.get("c")) == 3
    assert store.incr("other", ttl=30) == 1


def test_incr_expiry_runs_from_the_first_increment(store):
    store.incr("w", ttl=0.4)
    time.sleep(0.25)
    assert store.incr("w", ttl=0.4) == 2  # a later increment does not extend the window
    time.sleep(0.25)
    assert store.incr("w", ttl=0.4) == 1


def test_incr_is_atomic_across_processes(store_url, store):
    procs = [subprocess.Popen([sys.executable, "-c", INCR_SCRIPT, store_url, "200"], env=process_env())
             for _ in range(4)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0, 0]
    assert store.incr("shared-counter", ttl=60) == 801


@pytest.mark.parametrize("kind", ["link", "task", "subject"])
def test_revocation_matches_its_kind_and_value_only(store, kind):
    checks = {"link": "L1", "task": "WT1", "subject": "sup@example.com"}
    assert store.revoked(checks, issued_at=time.time()) is None
    store.revoke(kind, checks[kind], at=time.time())
    assert store.revoked(checks, issued_at=time.time()) == kind
    others = {k: v + "-other" for k, v in checks.items()}
    assert store.revoked(others, issued_at=time.time()) is None


def test_empty_check_values_never_match(store):
    store.revoke("task", "", at=time.time())
    assert store.revoked({"task": "", "link": "L"}, issued_at=time.time()) is None


def test_all_before_covers_earlier_issue_times_only(store):
    store.revoke(ALL_BEFORE, repr(1000.0), at=1000.0)
    assert store.revoked({"link": "L"}, issued_at=999) == ALL_BEFORE
    assert store.revoked({"link": "L"}, issued_at=1000.5) is None


def test_the_latest_all_before_wins(store):
    for cut in (100.0, 200.0, 150.0):
        store.revoke(ALL_BEFORE, repr(cut), at=cut)
    assert store.revoked({}, issued_at=180) == ALL_BEFORE
    assert store.revoked({}, issued_at=250) is None


def test_revocations_survive_reopening(store_url, store):
    store.revoke("link", "L-persist", at=time.time())
    store.close()
    again = open_store(store_url)
    try:
        assert again.revoked({"link": "L-persist"}, issued_at=time.time()) == "link"
    finally:
        again.close()


def test_ping_answers(store):
    store.ping()


def _broken(store_url: str, tmp_path) -> SQLiteStore | RedisStore:
    """A store whose engine stops answering: a SQLite file overwritten by junk, or nobody on the port."""
    if store_url.startswith("sqlite"):
        path = tmp_path / "broken.db"
        s = SQLiteStore(str(path))
        s.close()
        for suffix in ("", "-wal", "-shm"):
            (tmp_path / f"broken.db{suffix}").unlink(missing_ok=True)
        path.write_bytes(b"this is not a database" * 100)
        return s
    return RedisStore(f"redis://127.0.0.1:{free_port()}/14", timeout=0.5)


@pytest.mark.parametrize("call", [
    lambda s: s.get("k"),
    lambda s: s.put("k", b"v", 10),
    lambda s: s.incr("k", 10),
    lambda s: s.revoke("link", "L", 1.0),
    lambda s: s.revoked({"link": "L"}, 1.0),
    lambda s: s.ping(),
])
def test_an_unreachable_store_raises_store_error_as_503(store_url, tmp_path, call):
    s = _broken(store_url, tmp_path)
    with pytest.raises(StoreError) as info:
        call(s)
    assert info.value.status == 503 and info.value.code == "store_unavailable"
    assert "sqlite" not in info.value.message and "redis" not in info.value.message
    s.close()


def test_sqlite_writer_waits_for_another_process_lock_then_gives_up(tmp_path):
    path = tmp_path / "locked.db"
    s = SQLiteStore(str(path), busy_timeout=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another worker holding the write lock
    try:
        assert s.revoked({"link": "L"}, issued_at=1.0) is None  # WAL: readers are not blocked
        started = time.monotonic()
        with pytest.raises(StoreError):
            s.incr("k", 10)
        assert 0.15 < time.monotonic() - started < 2
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert s.incr("k", 10) == 1
    s.close()


def test_sqlite_uses_wal(tmp_path):
    path = tmp_path / "wal.db"
    SQLiteStore(str(path)).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_redis_store_waits_for_a_connection_under_a_burst(redis_url):
    """More concurrent callers than pooled connections wait their turn instead of failing (a 503)."""
    from concurrent.futures import ThreadPoolExecutor

    from resolver.store import RedisStore

    store = RedisStore(redis_url, max_connections=4)
    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(lambda i: store.incr("burst", 60), range(400)))
        assert sorted(results) == list(range(1, 401))
    finally:
        store.close()


def test_add_sets_only_what_is_absent_or_expired(store):
    assert store.add("lease", b"a", ttl=0.2) is True
    assert store.add("lease", b"b", ttl=30) is False
    assert store.get("lease") == b"a"
    time.sleep(0.3)
    assert store.add("lease", b"c", ttl=30) is True and store.get("lease") == b"c"
    store.delete("lease")
    assert store.get("lease") is None and store.add("lease", b"d", ttl=30) is True
    store.delete("never-there")  # deleting nothing is fine


ADD_SCRIPT = (
    "import sys\n"
    "from resolver.store import open_store\n"
    "s = open_store(sys.argv[1])\n"
    "won = sum(s.add(f'lease-{i}', b'x', 60) for i in range(int(sys.argv[2])))\n"
    "print(won)\n"
)


def test_add_gives_each_lease_to_exactly_one_process(store_url, store):
    procs = [subprocess.Popen([sys.executable, "-c", ADD_SCRIPT, store_url, "100"], env=process_env(),
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    won = [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(won) == 100


def take_one(store, group, member, ttl, bound):  # type: ignore[no-untyped-def]
    return store.take_slots([(group, bound)], member, ttl) is None


def test_take_slot_holds_at_most_the_bound_and_renews_when_full(store):
    assert [take_one(store, "g", f"m{i}", 60, 3) for i in range(5)] == [True, True, True, False, False]
    assert take_one(store, "g", "m1", 60, 3)  # a member already held renews, even in a full group
    assert take_one(store, "other", "m9", 60, 3)  # groups are separate
    store.drop_slots(["g"], "m0")
    assert take_one(store, "g", "m3", 60, 3) and not take_one(store, "g", "m4", 60, 3)


def test_dropping_a_streams_slots_is_one_write_on_sqlite(tmp_path):
    """Every stream end drops two slots (grant and identity): one statement, so one commit and one WAL write,
    not one per group."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    assert store.take_slots([("grant", 5), ("identity", 5)], "m", 60) is None
    statements: list[str] = []
    store._db().set_trace_callback(statements.append)
    store.drop_slots(["grant", "identity"], "m")
    store._db().set_trace_callback(None)
    assert len(statements) == 1 and statements[0].startswith("DELETE")
    assert take_one(store, "grant", "x", 60, 1) and take_one(store, "identity", "y", 60, 1)  # both freed


def test_take_slots_is_all_or_nothing_and_names_the_full_group(store):
    assert store.take_slots([("small", 1), ("big", 10)], "a", 60) is None
    assert store.take_slots([("big", 10), ("small", 1)], "b", 60) == "small"
    assert take_one(store, "big", "z", 60, 2)  # "b" took nothing in "big": a, z fill its two places
    assert not take_one(store, "big", "y", 60, 2)


def test_take_slot_members_expire_with_their_lease(store):
    assert take_one(store, "e", "a", 0.2, 1) and not take_one(store, "e", "b", 60, 1)
    time.sleep(0.3)
    assert take_one(store, "e", "b", 60, 1)  # the lapsed lease left room


SLOT_SCRIPT = (
    "import sys\n"
    "from resolver.store import open_store\n"
    "s = open_store(sys.argv[1])\n"
    "print(sum(s.take_slots([('crowd', 25)], f'{sys.argv[2]}-{i}', 60) is None for i in range(50)))\n"
)


def test_take_slot_bound_holds_across_processes(store_url, store):
    procs = [subprocess.Popen([sys.executable, "-c", SLOT_SCRIPT, store_url, str(n)], env=process_env(),
                              stdout=subprocess.PIPE, text=True) for n in range(4)]
    assert sum(int(p.communicate(timeout=60)[0]) for p in procs) == 25


# Several processes open one new SQLite file at the same instant (gunicorn workers booting on a fresh store).
# Run in a fresh interpreter, so forking happens without the test session's server threads.
FRESH_BOOT_SCRIPT = r"""
import multiprocessing as mp, os, sys, tempfile
from resolver.store import SQLiteStore

def child(path, barrier, results):
    try:
        barrier.wait(timeout=30)
        store = SQLiteStore(path)
        store.incr("boot", 60)
        store.close()
        results.put("")
    except Exception as e:
        results.put(f"{type(e).__name__}: {e} ({e.__cause__!r})")

ctx = mp.get_context("fork")
processes, trials, failures = int(sys.argv[1]), int(sys.argv[2]), []
for trial in range(trials):
    path = os.path.join(tempfile.mkdtemp(dir=sys.argv[3]), "store.db")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=child, args=(path, barrier, results)) for _ in range(processes)]
    for c in children:
        c.start()
    errors = [e for e in (results.get(timeout=60) for _ in children) if e]
    for c in children:
        c.join()
    if errors or SQLiteStore(path).incr("boot", 60) != processes + 1:
        failures.append(f"trial {trial}: {errors}")
print(len(failures), failures[:3])
"""


def test_six_processes_opening_one_fresh_sqlite_store_at_once_never_fail(tmp_path):
    out = subprocess.run([sys.executable, "-c", FRESH_BOOT_SCRIPT, "6", "100", str(tmp_path)], env=process_env(),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("0 "), out.stdout


# A gevent worker whose store write waits for another process's lock must keep serving its other requests:
# SQLite's own busy handler sleeps in C and would freeze them all. Run in a fresh, monkey-patched interpreter.
YIELDING_WAIT_SCRIPT = r"""
from gevent import monkey; monkey.patch_all()
import sqlite3, sys, time, gevent
from resolver.store import SQLiteStore
store = SQLiteStore(sys.argv[1], busy_timeout=5.0)
other = sqlite3.connect(sys.argv[1], isolation_level=None, check_same_thread=False)
other.execute("BEGIN IMMEDIATE")  # another worker holds the write lock for 0.5 s
ticks = []
def beat():
    while True:
        gevent.sleep(0.01); ticks.append(time.monotonic())
def unlock():
    time.sleep(0.5); other.execute("ROLLBACK")
beater, unlocker = gevent.spawn(beat), gevent.spawn(unlock)
gevent.sleep(0)  # let both start
started = time.monotonic()
value = store.incr("k", 10)
waited = time.monotonic() - started
print(value, round(waited, 2), sum(1 for t in ticks if t >= started))
"""


def test_a_sqlite_write_waiting_for_a_lock_lets_the_workers_other_requests_run(tmp_path):
    out = subprocess.run([sys.executable, "-c", YIELDING_WAIT_SCRIPT, str(tmp_path / "s.db")], env=process_env(),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    value, waited, beats = out.stdout.split()
    assert value == "1" and 0.4 < float(waited) < 2.0  # it waited for the lock, then counted
    assert int(beats) >= 25  # ~50 beats of 10 ms in 0.5 s; a wait in C lets none through


def test_the_slot_count_reads_the_covering_index_only(tmp_path):
    """A stream start counts its identity's live slots: from the (k, exp) index alone, never row by row (at 300
    live streams of one identity the row-by-row count cost twice as much)."""
    store = SQLiteStore(str(tmp_path / "plan.db"))
    plan = store._guard(lambda db: db.execute("EXPLAIN QUERY PLAN " + TAKE_SLOT,
                                              ("g/m", 1.0, "g/m", 0.0, "g/", "g0", 0.0, 5)).fetchall())
    details = [row[-1] for row in plan]
    assert any("COVERING INDEX kv_k_exp (k>? AND k<?)" in d for d in details), details
