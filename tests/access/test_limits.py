"""Rate limits (per identity, per address on failed auth and on /m) and max_uses, in-process."""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver import config
from resolver.access import limits
from resolver.access.limits import Rate, client_key, hit
from resolver.errors import ConfigError, RateLimited
from resolver.store import SQLiteStore
from tests.support.env import RECORDING_SID, WORKER, basic, issue_links, new_token

HOUR = 3600


@pytest.fixture
def frozen(monkeypatch) -> float:
    """Every limit decision inside one window: one second after the start of the current hour."""
    now = math.floor(time.time() / HOUR) * HOUR + 1
    monkeypatch.setattr(limits, "clock", lambda: now)
    return now


def audit_records(env: dict) -> list[dict]:
    with open(env["RESOLVER_AUDIT_LOG"]) as f:
        return [json.loads(line) for line in f]


def resolve(client, url: str, token: str, **kw):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/resolve", json={"url": url}, headers={"Authorization": f"Bearer {token}"},
                       **kw)


def local(url: str) -> str:
    return url.split("5000", 1)[1]


@pytest.mark.parametrize("text, expected", [("30/minute", Rate(30, 60)), ("1/second", Rate(1, 1)),
                                            ("1200/hour", Rate(1200, 3600))])
def test_rate_parse(text, expected):
    assert Rate.parse(text) == expected


def test_hit_allows_the_count_then_429_until_the_window_ends(store):
    rate, now = Rate(3, 60), 6010.0
    for _ in range(3):
        hit(store, "t", "sup@example.com", rate, now=now)
    with pytest.raises(RateLimited) as info:
        hit(store, "t", "sup@example.com", rate, now=now + 5)
    assert info.value.headers["Retry-After"] == "45"  # the window is 6000-6060
    hit(store, "t", "other@example.com", rate, now=now + 5)  # somebody else has their own budget
    hit(store, "t", "sup@example.com", rate, now=6060.0)  # the next window starts fresh


def test_small_limits_are_never_leased(store):
    """Below LEASE_SHARE every request is its own store increment, exactly as without leases."""
    rate, now, leases = Rate(limits.LEASE_SHARE - 1, 60), 6010.0, limits.Leases()
    for n in range(1, 4):
        hit(store, "t", "sup@example.com", rate, now=now, leases=leases)
        assert store.incr(limits._window("t", "sup@example.com", rate, now)[0], ttl=60, by=0) == n


def test_a_lease_is_one_store_write_per_block(store):
    rate, now, leases = Rate(100 * limits.LEASE_SHARE, 60), 6010.0, limits.Leases()
    block = limits.lease_size(rate)
    assert block == min(limits.LEASE_MAX, 100)
    key = limits._window("t", "sup@example.com", rate, now)[0]
    for _ in range(block + 1):
        hit(store, "t", "sup@example.com", rate, now=now, leases=leases)
    assert store.incr(key, ttl=60, by=0) == 2 * block  # two reservations for block + 1 requests
    hit(store, "t", "sup@example.com", rate, now=6060.0, leases=leases)  # a new window: a new reservation
    assert store.incr(limits._window("t", "sup@example.com", rate, 6060.0)[0], ttl=60, by=0) == block


@settings(max_examples=60, deadline=None)
@given(holders=st.integers(1, 4), order=st.lists(st.integers(0, 3), min_size=1, max_size=400))
def test_leases_never_pass_more_than_the_limit_and_strand_at_most_a_block_each(holders, order):
    """Several processes (one Leases each) on one store, taking turns in any order until every one is refused:
    never more than the limit passes, and what is refused early is at most a block per process."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "store.db"))
        try:
            passed, block, rate = _take_turns(store, holders, order)
        finally:
            store.close()
    assert block == 4
    assert rate.count - holders * (block - 1) <= passed <= rate.count


def _take_turns(store: SQLiteStore, holders: int, order: list[int]) -> tuple[int, int, Rate]:
    rate, now = Rate(4 * limits.LEASE_SHARE + 3, 60), 6010.0
    block = limits.lease_size(rate)
    procs = [limits.Leases() for _ in range(holders)]
    passed, refused = 0, set()
    turns = iter(order + list(range(holders)) * (rate.count + holders))  # then round robin to the end
    while len(refused) < holders:
        who = next(turns) % holders
        try:
            hit(store, "t", "sup@example.com", rate, now=now, leases=procs[who])
            passed += 1
        except RateLimited:
            refused.add(who)
    return passed, block, rate


def test_a_forked_child_spends_none_of_its_parents_lease():
    leases = limits.Leases()
    leases.keep("k", 5)
    assert leases.spend("k")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it could spend, and leave without running the parent's cleanup
        os.write(write, b"1" if leases.spend("k") else b"0")
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"0"
    assert all(leases.spend("k") for _ in range(4)) and not leases.spend("k")  # the parent keeps its four


def test_leases_past_the_bound_are_dropped_not_kept_forever():
    leases = limits.Leases()
    for i in range(limits.LEASES_HELD):
        leases.keep(f"k{i}", 1)
    leases.keep("one more", 1)
    assert not leases.spend("k0") and leases.spend("one more")


def test_iam_attempt_reserves_before_twilio_and_keeps_only_failures(store, frozen):
    from resolver.errors import Unauthenticated, Unavailable
    for _ in range(5):  # valid tokens and Twilio outages give their slot back
        with limits.iam_attempt(store, "2/minute", "203.0.113.9"):
            pass
    with pytest.raises(Unavailable), limits.iam_attempt(store, "2/minute", "203.0.113.9"):
        raise Unavailable()
    for _ in range(2):  # invalid tokens keep theirs
        with pytest.raises(Unauthenticated), limits.iam_attempt(store, "2/minute", "203.0.113.9"):
            raise Unauthenticated()
    entered = []
    with pytest.raises(RateLimited), limits.iam_attempt(store, "2/minute", "203.0.113.9"):
        entered.append(1)  # never: the budget is spent before Twilio would be asked
    assert entered == []
    with limits.iam_attempt(store, "2/minute", "198.51.100.1"):  # another address has its own budget
        pass


def test_iam_attempt_counts_in_flight_reservations(store, frozen):
    """Concurrent attempts each hold a slot while Twilio is asked: no more than the limit can be in flight."""
    held = [limits.iam_attempt(store, "3/minute", "203.0.113.9") for _ in range(3)]
    for cm in held:
        cm.__enter__()
    with pytest.raises(RateLimited), limits.iam_attempt(store, "3/minute", "203.0.113.9"):
        pass
    for cm in held:
        cm.__exit__(None, None, None)
    with limits.iam_attempt(store, "3/minute", "203.0.113.9"):
        pass


def test_incr_by_gives_back(store):
    assert store.incr("k", ttl=60) == 1 and store.incr("k", ttl=60, by=-1) == 0 and store.incr("k", ttl=60) == 1


def test_store_keys_hold_no_identity():
    key, _ = limits._window("identity", "sup@example.com", Rate(1, 60), 0.0)
    assert "sup" not in key and "example" not in key


@pytest.mark.parametrize("addr, expected", [
    ("203.0.113.7", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
    (None, "unknown"),
])
def test_client_key(addr, expected):
    assert client_key(addr) == expected


def test_resolve_limit_per_identity_shared_with_provider(make_client, twilio, frozen, env):
    client = make_client(RESOLVER_RESOLVE_LIMIT="3/hour")
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    tok = new_token(twilio, worker_sid=WORKER, identity="busy@example.com")
    assert [resolve(client, entry["url"], tok).status_code for _ in range(2)] == [200, 200]
    assert client.get(local(entry["url_provider"]), headers={"Authorization": basic(tok)}).status_code == 200
    over = resolve(client, entry["url"], tok)
    assert over.status_code == 429 and over.get_json()["error"]["code"] == "rate_limited"
    assert over.headers["Retry-After"] == str(HOUR - 1)
    assert client.get(local(entry["url_provider"]), headers={"Authorization": basic(tok)}).status_code == 429
    other = new_token(twilio, worker_sid=WORKER, identity="calm@example.com")
    assert resolve(client, entry["url"], other).status_code == 200
    denied = [r for r in audit_records(env) if r["event"] == "resolve" and r["reason"] == "rate_limited"]
    assert len(denied) == 2 and {r["realm_user_id"] for r in denied} == {"busy@example.com"}


def test_invalid_tokens_from_one_address_stop_reaching_twilio(make_client, twilio, frozen):
    client = make_client(RESOLVER_RESOLVE_LIMIT="3/hour")
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    before = len(twilio.validations)
    for i in range(3):
        assert resolve(client, entry["url"], f"eyJbad{i}").status_code == 401
    assert len(twilio.validations) == before + 3
    blocked = resolve(client, entry["url"], "eyJbad-more")
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    provider = client.get(local(entry["url_provider"]), headers={"Authorization": basic("eyJbad-p")})
    assert provider.status_code == 429
    assert len(twilio.validations) == before + 3  # Twilio's IAM was not asked again
    elsewhere = resolve(client, entry["url"], "eyJbad-x", environ_base={"REMOTE_ADDR": "198.51.100.4"})
    assert elsewhere.status_code == 401


def test_successful_colleagues_behind_one_address_are_not_limited(make_client, twilio, frozen):
    client = make_client(RESOLVER_RESOLVE_LIMIT="3/hour")
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    tokens = [new_token(twilio, worker_sid=WORKER, identity=f"agent{i}@example.com") for i in range(6)]
    assert {resolve(client, entry["url"], t).status_code for t in tokens} == {200}


def _media_path(client, twilio) -> str:  # type: ignore[no-untyped-def]
    [entry] = issue_links(client, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
    tok = new_token(twilio, worker_sid=WORKER)
    return local(resolve(client, entry["url"], tok).get_json()["url"])


def test_media_limit_per_address_ignores_forged_forwarded_for(make_client, twilio, frozen, env):
    client = make_client(RESOLVER_MEDIA_LIMIT="3/hour")
    path = _media_path(client, twilio)
    codes = [client.get(path, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    refused = [r for r in audit_records(env) if r["event"] == "grant" and r["outcome"] == "refused"]
    assert [r["reason"] for r in refused] == ["rate_limited", "rate_limited"]
    assert {r["client"] for r in refused} == {"127.0.0.1"}
    other = client.get(path, environ_base={"REMOTE_ADDR": "198.51.100.7"})
    assert other.status_code == 200


def test_media_limit_follows_forwarded_for_only_behind_a_trusted_proxy(make_client, twilio, frozen):
    client = make_client(RESOLVER_MEDIA_LIMIT="3/hour", RESOLVER_TRUSTED_PROXIES="1")
    path = _media_path(client, twilio)
    codes = {client.get(path, headers={"X-Forwarded-For": f"10.0.0.{i}"}).status_code for i in range(6)}
    assert codes == {200}
    same = [client.get(path, headers={"X-Forwarded-For": "10.9.9.9"}).status_code for _ in range(4)]
    assert same == [200, 200, 200, 429]


def test_redirect_grant_max_uses(make_client, env, twilio, tmp_path, frozen):
    sources = tmp_path / "sources.toml"
    sources.write_text(sources.read_text().replace("[sources.crm]\n", "[sources.crm]\nmax_uses = 2\n"))
    client = make_client(RESOLVER_SOURCES=str(sources))
    [entry] = issue_links(client, [{"source": "crm", "key": "T-1", "type": "Referenced"}])
    tok = new_token(twilio, worker_sid=WORKER)
    path = local(resolve(client, entry["url"], tok).get_json()["url"])
    codes = [client.get(path).status_code for _ in range(3)]
    assert codes == [302, 302, 403]
    assert client.get(path).get_json()["error"]["code"] == "grant_used_up"
    fresh = local(resolve(client, entry["url"], tok).get_json()["url"])
    assert client.get(fresh).status_code == 302


def test_redirect_grant_without_max_uses_is_unlimited(make_client, twilio, frozen):
    client = make_client()
    [entry] = issue_links(client, [{"source": "crm", "key": "T-1", "type": "Referenced"}])
    path = local(resolve(client, entry["url"], new_token(twilio, worker_sid=WORKER)).get_json()["url"])
    assert {client.get(path).status_code for _ in range(5)} == {302}


@pytest.mark.parametrize("source, line", [
    ("transcripts", "max_uses = 2"),  # a stream: refused
    ("crm", "max_uses = 0"),
    ("crm", "max_uses = true"),
    ("crm", 'max_uses = "2"'),
    ("crm", "max_uses = 100000"),
])
def test_bad_max_uses_is_a_config_error(env, tmp_path, source, line):
    path = tmp_path / "sources.toml"
    path.write_text(path.read_text().replace(f"[sources.{source}]\n", f"[sources.{source}]\n{line}\n"))
    with pytest.raises(ConfigError, match="max_uses"):
        config.from_env(env)
