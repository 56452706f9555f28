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
