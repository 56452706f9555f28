"""TokenValidator against the fake IAM over HTTP and both real stores: coalescing, and Twilio's odd answers."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import replace

import pytest

from resolver import config
from resolver.access.flex_auth import TokenValidator
from resolver.errors import Unauthenticated, Unavailable
from resolver.streaming.upstream import new_session
from tests.support.env import WORKER, new_token

BURST = 16


@pytest.fixture
def validator(env, store):  # type: ignore[no-untyped-def]
    http = new_session()
    yield TokenValidator(config.from_env(env), http, store)
    http.close()


def burst(validator: TokenValidator, token: str, n: int = BURST) -> list[object]:
    """`n` validations of one token started at the same instant; each result or the exception it raised."""
    start, results = threading.Barrier(n), [None] * n

    def one(i: int) -> None:
        start.wait()
        try:
            results[i] = validator.validate(token)
        except Exception as e:  # noqa: BLE001 - the test inspects what each caller got
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


def test_a_burst_of_one_cold_token_costs_one_validation(validator, twilio):
    token = new_token(twilio, worker_sid=WORKER)
    twilio.iam_delay = 0.3  # the window in which every other caller arrives
    try:
        results = burst(validator, token)
    finally:
        twilio.iam_delay = 0.0
    assert twilio.validations.count(token) == 1
    assert all(getattr(r, "realm_user_id", None) == "sup@example.com" for r in results), results


def test_a_burst_of_one_invalid_token_costs_one_validation_and_all_get_401(validator, twilio):
    bogus = "eyJnot-valid-" + secrets.token_urlsafe(8)
    twilio.iam_delay = 0.3
    try:
        results = burst(validator, bogus)
    finally:
        twilio.iam_delay = 0.0
    assert twilio.validations.count(bogus) == 1
    assert all(isinstance(r, Unauthenticated) for r in results), results


def test_a_failed_validation_is_never_shared_as_a_success(validator, twilio):
    token = new_token(twilio, worker_sid=WORKER)
    twilio.iam_status = 500
    try:
        results = burst(validator, token, n=4)
    finally:
        twilio.iam_status = None
    assert all(isinstance(r, Unavailable) for r in results), results
    assert validator.validate(token).realm_user_id == "sup@example.com"  # nothing false was remembered


def test_waiters_fail_closed_when_the_answer_does_not_come_in_time(env, store, twilio):
    settings = replace(config.from_env(env), connect_timeout=0.2, validation_timeout=0.3)
    http = new_session()
    validator = TokenValidator(settings, http, store)
    token = new_token(twilio, worker_sid=WORKER)
    twilio.iam_delay = 1.5  # slower than the IAM timeout: the caller asking Twilio gives up too
    try:
        started = time.monotonic()
        results = burst(validator, token, n=4)
        took = time.monotonic() - started
    finally:
        twilio.iam_delay = 0.0
        http.close()
    assert all(isinstance(r, Unavailable) for r in results), results
    # bounded: the waiters gave up at the IAM timeout, and only a freed lease let one more caller ask Twilio
    assert took < 2.0 and 1 <= twilio.validations.count(token) <= 2


@pytest.mark.parametrize("valid", ["true", 1, "yes", [True], {"v": True}, None])
def test_valid_that_is_not_json_true_grants_nothing(validator, twilio, valid):
    token = new_token(twilio, worker_sid=WORKER, roles=["admin"])
    user = twilio.tokens[token]
    twilio.answers[token] = {"valid": valid, "identity": user.identity, "roles": ["admin"], "worker_sid": WORKER,
                             "expiration": "2099-01-01T00:00:00.000Z"}
    with pytest.raises(Unauthenticated):
        validator.validate(token)


@pytest.mark.parametrize("odd", [
    {"roles": {"admin": False}},  # an object's keys must not be read as roles
    {"roles": "admin"},
    {"roles": ["supervisor", 7]},
    {"identity": 12345},
    {"identity": ["sup@example.com"]},
    {"worker_sid": {"sid": WORKER}},
    {"expiration": "2099-01-01T00:00:00"},  # no zone: whose local time?
    {"expiration": 4102444800},
])
def test_odd_iam_answers_fail_closed_with_503(validator, twilio, odd):
    token = "eyJodd-" + secrets.token_urlsafe(8)
    twilio.answers[token] = {"valid": True, "identity": "sup@example.com", "roles": ["supervisor"],
                             "worker_sid": WORKER, "expiration": "2099-01-01T00:00:00.000Z", **odd}
    with pytest.raises(Unavailable):
        validator.validate(token)


def test_a_well_formed_answer_is_a_user(validator, twilio):
    token = "eyJwell-formed-" + secrets.token_urlsafe(8)
    twilio.answers[token] = {"valid": True, "identity": "sup@example.com", "roles": ["supervisor"],
                             "worker_sid": WORKER, "expiration": "2099-01-01T00:00:00.000+00:00"}
    user = validator.validate(token)
    assert (user.identity, user.roles, user.worker_sid) == ("sup@example.com", ("supervisor",), WORKER)


class CountingStore:
    """The real store, with the validation cache's reads and writes noted."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.store, self.reads, self.ttls = store, 0, []

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.store, name)

    def get(self, key: str):  # type: ignore[no-untyped-def]
        self.reads += key.startswith("tok:")
        return self.store.get(key)

    def put(self, key: str, value: bytes, ttl: float) -> None:
        if key.startswith("tok:"):
            self.ttls.append(ttl)
        self.store.put(key, value, ttl)


def test_a_worker_reads_a_cached_verdict_once_per_memo_window_and_trusts_it_no_longer_in_all(env, store, twilio):
    """Each process keeps a verdict it read from the store for MEMO_SECONDS; the store keeps it that much
    less than the 60 s, so the two together never trust Twilio's answer longer than the cache promises."""
    from resolver.access.flex_auth import MEMO_SECONDS

    now = [time.time()]
    counting = CountingStore(store)
    settings = config.from_env(env)
    http = new_session()
    try:
        validator = TokenValidator(settings, http, counting, clock=lambda: now[0])
        token = new_token(twilio, worker_sid=WORKER)
        validator.validate(token)  # Twilio's answer, stored
        assert counting.ttls and max(counting.ttls) <= settings.validation_cache_ttl - MEMO_SECONDS
        reads = counting.reads
        validator.validate(token)  # read from the store, then kept
        assert counting.reads == reads + 1
        for _ in range(5):
            validator.validate(token)
        assert counting.reads == reads + 1  # from the worker's memo
        now[0] += MEMO_SECONDS
        validator.validate(token)
        assert counting.reads == reads + 2  # the memo's time is up: the store again
        assert twilio.validations.count(token) == 1
    finally:
        http.close()


def test_the_memo_never_outlives_the_token(env, store, twilio):
    from datetime import UTC, datetime

    now = [time.time()]
    http = new_session()
    try:
        validator = TokenValidator(config.from_env(env), http, store, clock=lambda: now[0])
        token = "eyJshort-lived-" + secrets.token_urlsafe(8)
        expires = now[0] + 1.5
        twilio.answers[token] = {"valid": True, "identity": "sup@example.com", "roles": ["supervisor"],
                                 "worker_sid": WORKER,
                                 "expiration": datetime.fromtimestamp(expires, UTC).isoformat(timespec="milliseconds")}
        validator.validate(token)
        validator.validate(token)  # read back from the store: in the memo now, until the token's end at most
        now[0] = expires + 0.01
        with pytest.raises(Unauthenticated):  # neither memo nor store: Twilio, whose answer has expired
            validator.validate(token)
        assert twilio.validations.count(token) == 2
    finally:
        http.close()


def test_the_memo_holds_at_most_memo_entries_the_oldest_going_first(monkeypatch):
    from resolver.access import flex_auth

    monkeypatch.setattr(flex_auth, "MEMO_ENTRIES", 3)
    memo = flex_auth._Memo(lambda: 1000.0)
    user = flex_auth.FlexUser(identity="u", worker_sid=WORKER, roles=("agent",), expires_at=2000.0)
    for key in "abcd":
        memo.put(key, user)
    assert [memo.get(k) is not None for k in "abcd"] == [False, True, True, True]
    memo.put("b", user)  # a key already held takes no other's place
    assert all(memo.get(k) is not None for k in "bcd")
