"""Scale-out as operators run it: two gunicorn instances sharing Redis, and one with several workers on SQLite.

Revocations, rate limits and the validation cache must hold across processes, driven over real HTTP.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from tests.support.env import (
    REDIS_URL,
    SERVICE_KEY,
    WORKER,
    Gunicorn,
    base_env,
    new_token,
    process_env,
    start_gunicorn,
    stop_gunicorn,
)

HOUR = 3600


def fresh_window(margin: float = 20) -> None:
    """Limits count in clock-aligned hourly windows here: never start a count just before one ends."""
    left = HOUR - time.time() % HOUR
    if left < margin:
        time.sleep(left + 0.5)


def links(base: str, media: list[dict]) -> list[dict]:
    """Entries under a task of their own: links are deterministic, and a test may revoke its task's."""
    task = "WT" + secrets.token_hex(16)
    resp = requests.post(f"{base}/api/v1/links", json={"task_sid": task, "media": media},
                         headers={"Authorization": f"Bearer {SERVICE_KEY}"}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["media"]


def resolve(server: Gunicorn, drilldown: str, token: str) -> requests.Response:
    """Resolve through `server`: a drilldown link names the instance that issued it, so re-home it."""
    path = "/d/" + drilldown.rsplit("/d/", 1)[1]
    return requests.post(f"{server.url}/api/v1/resolve", json={"url": server.url + path},
                         headers={"Authorization": f"Bearer {token}"}, timeout=5)


def on(server: Gunicorn, url: str) -> str:
    """The same path on another instance."""
    return server.url + "/" + url.split("/", 3)[3]


def revoke(server: Gunicorn, body: dict) -> requests.Response:
    return requests.post(f"{server.url}/api/v1/revocations", json=body,
                         headers={"Authorization": f"Bearer {SERVICE_KEY}"}, timeout=5)


@pytest.fixture(scope="module")
def pair(tmp_path_factory, twilio, storage) -> Iterator[tuple[Gunicorn, Gunicorn, dict]]:
    """Instances A and B on different ports, two workers each, sharing the test DB of the real Redis."""
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    tmp = tmp_path_factory.mktemp("pair")
    env = {**base_env(tmp, twilio, storage), "RESOLVER_STORE": REDIS_URL, "RESOLVER_RESOLVE_LIMIT": "5/hour",
           "WEB_CONCURRENCY": "2"}
    servers = []
    try:
        for name in ("a", "b"):
            (tmp / name).mkdir()
            servers.append(start_gunicorn({**env, "RESOLVER_AUDIT_LOG": str(tmp / name / "audit.jsonl")},
                                          tmp / name, name))
        yield servers[0], servers[1], env
    finally:
        for server in servers:
            stop_gunicorn(server)
        client.flushdb()
        client.close()


def test_one_validation_per_token_across_instances(pair, twilio):
    a, b, _ = pair
    [entry] = links(a.url, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
    tok = new_token(twilio, worker_sid=WORKER, identity="cache@example.com")
    for server in (a, b, a, b):
        assert resolve(server, entry["url"], tok).status_code == 200
    assert twilio.validations.count(tok) == 1


def test_revoked_through_one_instance_is_refused_by_the_other_within_a_second(pair, twilio):
    a, b, _ = pair
    rec, doc = links(a.url, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"},
                             {"source": "crm", "key": "T-9", "type": "Referenced"}])
    tok = new_token(twilio, worker_sid=WORKER, identity="revoke@example.com")
    grant = resolve(b, rec["url"], tok).json()["url"]
    assert requests.get(on(a, grant), timeout=5).status_code == 200
    assert revoke(a, {"link": rec["url"]}).status_code == 201
    revoked_at = time.monotonic()
    refused = requests.get(on(b, grant), timeout=5)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "revoked"
    assert time.monotonic() - revoked_at < 1.0
    assert resolve(b, rec["url"], tok).json()["error"]["code"] == "revoked"
    assert resolve(b, doc["url"], tok).status_code == 200  # the other media of the task is untouched


def test_rate_limit_is_counted_across_instances(pair, twilio):
    a, b, _ = pair
    fresh_window()
    [entry] = links(a.url, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
    tok = new_token(twilio, worker_sid=WORKER, identity="limit@example.com")
    codes = [resolve(server, entry["url"], tok).status_code for server in (a, b, a, b, a)]
    assert codes == [200] * 5
    for server in (b, a):
        over = resolve(server, entry["url"], tok)
        assert over.status_code == 429 and int(over.headers["Retry-After"]) >= 1
    other = new_token(twilio, worker_sid=WORKER, identity="other@example.com")
    assert resolve(b, entry["url"], other).status_code == 200


def test_cli_revocation_reaches_both_instances(pair, twilio):
    a, b, env = pair
    [entry] = links(a.url, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
    tok = new_token(twilio, worker_sid=WORKER, identity="leaver@example.com")
    grant = resolve(a, entry["url"], tok).json()["url"]
    done = subprocess.run(
        [sys.executable, "-c", "from resolver.cli import main; main()", "revoke", "--subject", "leaver@example.com"],
        env=process_env(**env), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    for server in (a, b):
        assert requests.get(on(server, grant), timeout=5).json()["error"]["code"] == "revoked"


def test_sqlite_workers_share_limits_and_revocations_survive_a_restart(tmp_path: Path, twilio, storage):
    env = {**base_env(tmp_path, twilio, storage), "WEB_CONCURRENCY": "4", "RESOLVER_RESOLVE_LIMIT": "8/hour"}
    fresh_window()
    server = start_gunicorn(env, tmp_path, "sqlite-1")
    try:
        [entry] = links(server.url, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
        tok = new_token(twilio, worker_sid=WORKER, identity="workers@example.com")
        codes = [resolve(server, entry["url"], tok).status_code for _ in range(12)]
        assert codes == [200] * 8 + [429] * 4  # one exact count across four worker processes
        assert twilio.validations.count(tok) == 1
        other = new_token(twilio, worker_sid=WORKER, identity="kept@example.com")
        grant = resolve(server, entry["url"], other).json()["url"]
        assert revoke(server, {"link": entry["url"]}).status_code == 201
    finally:
        stop_gunicorn(server)
    again = start_gunicorn(env, tmp_path, "sqlite-2")
    try:
        refused = requests.get(on(again, grant), timeout=5)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "revoked"
    finally:
        stop_gunicorn(again)


def test_a_high_limit_is_reserved_in_blocks_and_still_never_exceeded(tmp_path: Path, twilio, storage):
    """Four workers on one SQLite store, a limit high enough for blocks (limits.BLOCK_SHARE): the store's count
    runs ahead of what passed (workers reserve blocks), yet across the four no more than the limit passes, and
    once the store refuses only units a worker had already reserved still pass."""
    from resolver.access import limits
    from resolver.demo.fake_twilio import escaped_identity
    from resolver.store import open_store
    count = 4 * limits.BLOCK_SHARE + 3  # the last block is cut to the 3 units left under the limit
    rate = limits.Rate(count, HOUR)
    block = limits.block_size(rate)
    assert block == 4
    env = {**base_env(tmp_path, twilio, storage), "WEB_CONCURRENCY": "4",
           "RESOLVER_RESOLVE_LIMIT": f"{count}/hour"}
    fresh_window(margin=60)
    server = start_gunicorn(env, tmp_path, "blocks")
    identity = "scripted@example.com"
    try:
        [entry] = links(server.url, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
        tok = new_token(twilio, worker_sid=WORKER, identity=identity)
        first = [resolve(server, entry["url"], tok).status_code for _ in range(10)]
        store = open_store(env["RESOLVER_STORE"])
        key = limits._window("identity", escaped_identity(identity), rate, time.time())[0]  # IAM's identity
        counted = store.incr(key, ttl=HOUR, by=0)
        store.close()
        codes = first + [resolve(server, entry["url"], tok).status_code for _ in range(count + 4 * 4 * block)]
    finally:
        stop_gunicorn(server)
    assert first == [200] * 10 and 10 < counted <= 10 + 4 * (block - 1)  # reserved ahead, in blocks
    assert set(codes) == {200, 429}
    assert count - 4 * (block - 1) <= codes.count(200) <= count
    late = codes[codes.index(429):].count(200)  # once the store refuses, only units already reserved pass
    assert late <= 4 * (block - 1)
