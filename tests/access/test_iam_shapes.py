"""Twilio IAM's token validation answers in the shapes real Flex gets, and the odd ones that must fail closed.

Real shapes (see README, "IAM answers"): twilio-flex-token-validator's documented Token Result (valid, code 0,
message null, expiration with milliseconds and Z, realm_user_id, identity in Twilio's escaped form, roles,
worker_sid, no account_sid); newer answers also carry flex_user_sid and flex_instance_sid, and any field may
be null (a guest token has no worker). Every one is sent over HTTP by the fake IAM as it is written here.
"""

from __future__ import annotations

import json
import secrets

import pytest

from resolver import config, create_app
from resolver.access.flex_auth import TokenValidator
from resolver.demo.fake_twilio import escaped_identity
from resolver.errors import Forbidden, Unauthenticated, Unavailable
from resolver.streaming.upstream import new_session
from tests.support.env import RECORDING_SID, SERVICE_KEY, WORKER, issue_links, new_token

LATER = "2099-01-01T00:00:00.000Z"
# twilio-flex-token-validator's README, "Token Result" (with a worker SID of the right shape and a later date)
DOCUMENTED = {"valid": True, "code": 0, "message": None, "expiration": LATER, "realm_user_id": "user@example.com",
              "identity": "user_40example_2Dcom", "roles": ["agent"], "worker_sid": WORKER}


@pytest.fixture
def validator(env, store):  # type: ignore[no-untyped-def]
    http = new_session()
    yield TokenValidator(config.from_env(env), http, store)
    http.close()


def answered(twilio, answer: dict) -> str:  # type: ignore[no-untyped-def]
    token = "eyJiam-" + secrets.token_urlsafe(12)
    twilio.answers[token] = answer
    return token


def test_the_documented_token_result_is_a_user(validator, twilio):
    user = validator.validate(answered(twilio, DOCUMENTED))
    assert (user.identity, user.realm_user_id, user.roles, user.worker_sid, user.account_sid) == (
        "user_40example_2Dcom", "user@example.com", ("agent",), WORKER, "")
    assert user.expires_at == 4070908800.0


@pytest.mark.parametrize("realm, identity", [
    ("sam.supervisor@owlbank.example", None),  # an SSO email, escaped by the fake
    ("Sam.O'Neil+flex@owlbank.example", None),  # SSO emails carry +, ' and capitals
    ("+15551234567", None),  # a phone-number login
    ("ana.núñez@owlbank.example", None),  # non-ASCII: escaped byte by byte
    ("alice", "alice"),  # a plain Flex login: nothing to escape
    ("user@example.com", "user_40example_2Dcom"),  # the documented sample exactly
])
def test_real_identity_forms_are_accepted_as_sent(validator, twilio, realm, identity):
    token = new_token(twilio, worker_sid=WORKER, identity=realm)
    if identity is not None:
        twilio.tokens[token].identity = identity
    user = validator.validate(token)
    assert user.realm_user_id == realm
    assert user.identity == (identity or escaped_identity(realm))
    assert user.identity.isascii() and "@" not in user.identity


def test_the_fake_answers_in_the_real_shape(twilio, env):
    token = new_token(twilio, worker_sid=WORKER, identity="sam.supervisor@owlbank.example")
    http = new_session()
    try:
        resp = http.post(f"{env['TWILIO_IAM_URL']}/v1/Accounts/{env['TWILIO_ACCOUNT_SID']}/Tokens/validate",
                         json={"token": token}, auth=(env["TWILIO_ACCOUNT_SID"], env["TWILIO_AUTH_TOKEN"]))
    finally:
        http.close()
    body = resp.json()
    assert set(DOCUMENTED) <= set(body) and "account_sid" not in body
    assert body["identity"] == "sam_2Esupervisor_40owlbank_2Eexample"
    assert body["realm_user_id"] == "sam.supervisor@owlbank.example"
    assert body["code"] == 0 and body["message"] is None and body["expiration"].endswith("Z")
    assert len(body["expiration"]) == len("2026-01-01T00:00:00.000Z")


def test_newer_fields_and_nulls_are_accepted(validator, twilio):
    answer = {**DOCUMENTED, "flex_user_sid": "FU" + "1" * 32, "flex_instance_sid": "GO" + "2" * 32}
    assert validator.validate(answered(twilio, answer)).identity == "user_40example_2Dcom"
    no_realm = validator.validate(answered(twilio, {**DOCUMENTED, "realm_user_id": None}))
    assert no_realm.realm_user_id == "" and no_realm.identity == "user_40example_2Dcom"


@pytest.mark.parametrize("shape, code", [
    ({"worker_sid": None}, "no_worker"),  # a guest token: no worker, no media
    ({"roles": None}, "role_not_allowed"),
    ({"roles": []}, "role_not_allowed"),
    ({"roles": ["guest"], "worker_sid": None}, "no_worker"),
    ({"account_sid": "AC" + "9" * 32}, "wrong_account"),
])
def test_real_answers_for_users_without_access_are_403_not_errors(validator, twilio, shape, code):
    user = validator.validate(answered(twilio, {**DOCUMENTED, "roles": ["supervisor"], **shape}))
    with pytest.raises(Forbidden) as e:
        validator.authorize(user)
    assert e.value.code == code


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 500])
def test_valid_false_is_401_whatever_the_http_status(validator, twilio, status, monkeypatch):
    monkeypatch.setattr(twilio, "invalid_status", status)
    with pytest.raises(Unauthenticated):
        validator.validate("eyJunknown-" + secrets.token_urlsafe(8))


@pytest.mark.parametrize("status", [401, 403, 404, 500])
def test_an_error_without_a_verdict_is_still_503(validator, twilio, status, monkeypatch):
    # Twilio's error body ({code, message, status}, no verdict): our credentials are wrong, not the token
    monkeypatch.setattr(twilio, "iam_status", status)
    with pytest.raises(Unavailable):
        validator.validate(new_token(twilio, worker_sid=WORKER))


@pytest.mark.parametrize("odd", [
    {"code": 20101},  # "valid" with an error code: a contradiction
    {"code": "0"},
    {"code": False},
    {"identity": "sup@example.com\nfake log line"},
    {"identity": " user_40example_2Dcom"},
    {"identity": "u" * 300},
    {"realm_user_id": 42},
    {"realm_user_id": ["user@example.com"]},
    {"realm_user_id": "user@example.com\r\n"},
    {"expiration": None},
    {"expiration": "2099-01-01T00:00:00.000"},
])
def test_odd_real_looking_answers_fail_closed(validator, twilio, odd):
    with pytest.raises(Unavailable):
        validator.validate(answered(twilio, {**DOCUMENTED, **odd}))


@pytest.mark.parametrize("odd", [{"identity": None}, {"identity": ""}, {"expiration": "2001-01-01T00:00:00.000Z"}])
def test_answers_naming_no_one_or_expired_are_401(validator, twilio, odd):
    with pytest.raises(Unauthenticated):
        validator.validate(answered(twilio, {**DOCUMENTED, **odd}))


# ---- both names, end to end: audit, revocation, audit query ----

@pytest.fixture
def client(env):  # type: ignore[no-untyped-def]
    app = create_app(config.from_env(env))
    yield app.test_client()
    app.extensions["resolver"].close()


def resolve(client, url: str, token: str):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/resolve", json={"url": url}, headers={"Authorization": f"Bearer {token}"})


def records(env: dict, event: str) -> list[dict]:
    with open(env["RESOLVER_AUDIT_LOG"]) as f:
        return [r for r in map(json.loads, f) if r["event"] == event]


@pytest.mark.parametrize("subject", ["sam.supervisor@owlbank.example", "sam_2Esupervisor_40owlbank_2Eexample"])
def test_a_user_is_revoked_by_either_name(client, twilio, env, subject):
    [link] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    sam = new_token(twilio, worker_sid=WORKER, identity="sam.supervisor@owlbank.example")
    other = new_token(twilio, worker_sid=WORKER, identity="sam.supervisor@owlbank.example.org")
    granted = resolve(client, link["url"], sam)
    assert granted.status_code == 200
    grant_path = granted.get_json()["url"].split("5000", 1)[1]
    [allowed] = records(env, "resolve")
    assert allowed["identity"] == "sam_2Esupervisor_40owlbank_2Eexample"
    assert allowed["realm_user_id"] == "sam.supervisor@owlbank.example"
    resp = client.post("/api/v1/revocations", json={"subject": subject},
                       headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert resp.status_code == 201
    refused = client.get(grant_path)  # a grant issued before the revocation
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "revoked"
    assert resolve(client, link["url"], sam).get_json()["error"]["code"] == "revoked"
    assert resolve(client, link["url"], other).status_code == 200


@pytest.mark.parametrize("subject", ["sam.supervisor@owlbank.example", "sam_2Esupervisor_40owlbank_2Eexample"])
def test_audit_query_finds_a_user_by_either_name(client, twilio, env, subject):
    from click.testing import CliRunner

    from resolver.cli import main

    [link] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    sam = new_token(twilio, worker_sid=WORKER, identity="sam.supervisor@owlbank.example")
    bob = new_token(twilio, worker_sid=WORKER, identity="bob@owlbank.example")
    assert resolve(client, link["url"], sam).status_code == resolve(client, link["url"], bob).status_code == 200
    out = CliRunner().invoke(main, ["audit", "query", env["RESOLVER_AUDIT_LOG"], "--subject", subject])
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines() if line.startswith("{")]
    assert rows and {r["realm_user_id"] for r in rows} == {"sam.supervisor@owlbank.example"}
