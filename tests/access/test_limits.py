"""Rate limits (per identity, per address on failed auth and on /m) and max_uses, in-process."""

from __future__ import annotations

import json
import math
import os
import tempfile
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver import config
from resolver.access import limits
from resolver.access.limits import Rate, client_key, hit
from resolver.errors import ConfigError, RateLimited
from resolver.store import SQLiteStore, StoreError
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


def _count(store, budget: str, who: str, rate: Rate, now: float) -> int:
    """The store's counter of that window, unchanged (an increment by 0)."""
    return store.incr(limits._window(budget, who, rate, now)[0], ttl=60, by=0)


def test_limits_under_two_blocks_share_are_counted_one_by_one(store):
    """Below 2 x BLOCK_SHARE per window every request is its own store increment, exactly as without blocks."""
    rate, now, reserved = Rate(2 * limits.BLOCK_SHARE - 1, 60), 6010.0, limits.Reserved()
    assert limits.block_size(rate) == 1
    for n in range(1, 4):
        hit(store, "t", "sup@example.com", rate, now=now, reserved=reserved)
        assert _count(store, "t", "sup@example.com", rate, now) == n


def test_a_high_limit_costs_one_store_write_per_block(store):
    rate, now, reserved = Rate(100 * limits.BLOCK_SHARE, 60), 6010.0, limits.Reserved()
    block = limits.block_size(rate)
    assert block == min(limits.BLOCK_MAX, 100)
    for _ in range(block + 1):
        hit(store, "t", "sup@example.com", rate, now=now, reserved=reserved)
    assert _count(store, "t", "sup@example.com", rate, now) == 2 * block  # two reservations, block + 1 requests
    hit(store, "t", "sup@example.com", rate, now=6060.0, reserved=reserved)  # a new window: a new reservation
    assert _count(store, "t", "sup@example.com", rate, 6060.0) == block


@settings(max_examples=60, deadline=None)
@given(holders=st.integers(1, 4), order=st.lists(st.integers(0, 3), max_size=400))
def test_blocks_never_pass_more_than_the_limit_and_leave_at_most_a_block_unspent(holders, order):
    """Processes (one Reserved each) on one store take turns in any order and stop at any point; then the first
    goes on alone until refused. Never more than the limit passes, and what the others still hold (and so is
    refused to the first) is at most a block less one each."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(os.path.join(tmp, "store.db"))
        try:
            rate, now = Rate(4 * limits.BLOCK_SHARE + 3, 60), 6010.0  # the last block is cut to 3 units
            block = limits.block_size(rate)
            procs = [limits.Reserved() for _ in range(holders)]

            def turn(who: int) -> bool:
                try:
                    hit(store, "t", "sup@example.com", rate, now=now, reserved=procs[who])
                    return True
                except RateLimited:
                    return False

            passed = sum(turn(w % holders) for w in order)
            while turn(0):
                passed += 1
        finally:
            store.close()
    assert block == 4
    assert rate.count - (holders - 1) * (block - 1) <= passed <= rate.count


class GatedStore(SQLiteStore):
    """A real store whose block reservation waits until `singles` single-unit increments have landed, so the
    other requests surely arrive while it is in flight (no timing involved)."""

    def __init__(self, path: str, singles: int) -> None:
        super().__init__(path)
        self.singles, self.seen, self.counted = singles, 0, threading.Lock()
        self.all_in = threading.Event()

    def incr(self, key: str, ttl: float, by: int = 1) -> int:
        if by > 1:
            self.all_in.wait(10)
        value = super().incr(key, ttl, by)
        if by == 1:
            with self.counted:
                self.seen += 1
                if self.seen == self.singles:
                    self.all_in.set()
        return value


def test_one_block_in_flight_per_budget_others_count_alone(tmp_path):
    """Requests arriving while this process reserves a block count one unit each, so a burst cannot leave a
    block per request unspent in one process."""
    store = GatedStore(str(tmp_path / "store.db"), singles=19)
    rate, now, reserved = Rate(100 * limits.BLOCK_SHARE, 60), 6010.0, limits.Reserved()
    block = limits.block_size(rate)
    threads = [threading.Thread(target=hit, args=(store, "t", "sup@example.com", rate),
                                kwargs={"now": now, "reserved": reserved}) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert _count(store, "t", "sup@example.com", rate, now) == block + 19  # one block, 19 single units
    held = sum(reserved.spend(limits._window("t", "sup@example.com", rate, now)[0]) for _ in range(2 * block))
    assert held == block - 1
    store.close()


def test_no_second_block_while_units_are_held():
    """A thread whose `spend` found nothing may reach `begin` after another's reservation landed: it then counts
    its unit alone rather than reserving a second block."""
    reserved = limits.Reserved()
    assert reserved.begin("k", 0.0, 60.0)
    assert not reserved.begin("k", 0.0, 60.0)  # in flight
    reserved.end("k", 3)
    assert not reserved.begin("k", 0.0, 60.0)  # three held
    assert all(reserved.spend("k") for _ in range(3))
    assert reserved.begin("k", 0.0, 60.0)  # spent: the next block may be reserved


class FailingOnceStore(SQLiteStore):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.failed = False

    def incr(self, key: str, ttl: float, by: int = 1) -> int:
        if not self.failed:
            self.failed = True
            raise StoreError("sqlite store failed")
        return super().incr(key, ttl, by)


def test_a_store_failure_during_a_reservation_leaves_blocks_working(tmp_path):
    """The failed request is refused (503, fail closed) and the next one reserves a block again: a failure never
    leaves the budget stuck counting one by one."""
    store = FailingOnceStore(str(tmp_path / "store.db"))
    rate, now, reserved = Rate(100 * limits.BLOCK_SHARE, 60), 6010.0, limits.Reserved()
    with pytest.raises(StoreError):
        hit(store, "t", "sup@example.com", rate, now=now, reserved=reserved)
    hit(store, "t", "sup@example.com", rate, now=now, reserved=reserved)
    assert _count(store, "t", "sup@example.com", rate, now) == limits.block_size(rate)
    store.close()


def test_a_forked_child_spends_none_of_its_parents_units():
    reserved = limits.Reserved()
    assert reserved.begin("k", 0.0, 60.0)
    reserved.end("k", 5)
    assert reserved.spend("k")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it could spend, and leave without running the parent's cleanup
        try:
            os.write(write, b"1" if reserved.spend("k") else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"0"
    assert all(reserved.spend("k") for _ in range(4)) and not reserved.spend("k")  # the parent keeps its four


def test_past_the_bound_ended_windows_go_first_and_live_ones_are_never_dropped():
    """A flood of budgets (say, many addresses' junk grants) cannot make a process drop units it holds, or a
    reservation in flight: past RESERVED_KEYS live windows a new budget just counts one by one."""
    reserved = limits.Reserved()
    assert reserved.begin("in flight", 0.0, 30.0)  # its window ends first, but its reservation has not landed
    for i in range(limits.RESERVED_KEYS - 1):
        assert reserved.begin(f"k{i}", 0.0, 60.0)
        reserved.end(f"k{i}", 1)
    assert not reserved.begin("one more", 20.0, 90.0)  # all live: no room, nothing dropped
    assert reserved.spend("k0")
    assert reserved.begin("one more", 60.0, 120.0)  # the others' windows ended at 60: dropped to make room
    reserved.end("one more", 1)
    reserved.end("in flight", 2)  # kept through the drop
    assert reserved.spend("one more") and not reserved.spend("k1")
    assert reserved.spend("in flight") and reserved.spend("in flight")


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
