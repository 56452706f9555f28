"""Flex token handling on /api/v1/resolve and /p: every bad token is refused, Twilio trouble fails closed."""

from __future__ import annotations

import time

import pytest

from resolver import config, create_app
from tests.support.env import RECORDING_SID, WORKER, basic, issue_links, new_token


@pytest.fixture
def link(client) -> dict:
    return issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])[0]


def resolve(client, link: dict, auth: str | None):
    headers = {"Authorization": auth} if auth is not None else {}
    return client.post("/api/v1/resolve", json={"url": link["url"]}, headers=headers)


@pytest.mark.parametrize("auth", [
    None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "Bearer " + "x" * 9000, "Bearer tok\u00e9n",
    "Bearer a.b", "Bearer a.b.c", "Bearer not-a-known-token",
])
def test_bad_or_unknown_token_is_401(client, link, auth):
    resp = resolve(client, link, auth)
    assert resp.status_code == 401
    assert resp.get_json()["error"]["code"] == "invalid_token"


def test_expired_token_is_401(client, link, twilio):
    tok = new_token(twilio, worker_sid=WORKER, expires_at=time.time() - 5)
    assert resolve(client, link, f"Bearer {tok}").status_code == 401


def test_flipped_character_in_valid_token_is_401(client, link, token):
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert resolve(client, link, f"Bearer {flipped}").status_code == 401


@pytest.mark.parametrize(("kwargs", "code"), [
    ({"roles": ["agent"], "worker_sid": WORKER}, "role_not_allowed"),
    ({"roles": ["supervisor"], "worker_sid": None}, "no_worker"),
    ({"roles": ["admin"], "worker_sid": WORKER, "account_sid": "AC" + "9" * 32}, "wrong_account"),
])
def test_valid_user_without_permission_is_403(client, link, twilio, kwargs, code):
    tok = new_token(twilio, **kwargs)
    resp = resolve(client, link, f"Bearer {tok}")
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == code


def test_grant_never_outlives_the_flex_token(client, link, twilio):
    tok = new_token(twilio, worker_sid=WORKER, expires_at=time.time() + 20)
    body = resolve(client, link, f"Bearer {tok}").get_json()
    from datetime import datetime
    assert datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00")).timestamp() <= time.time() + 20


@pytest.mark.parametrize("failure", ["status", "slow", "down"])
def test_twilio_trouble_fails_closed_with_503(env, twilio, failure, token):
    settings = config.from_env(env)
    if failure == "down":
        settings = config.from_env({**env, "TWILIO_IAM_URL": "http://127.0.0.1:9"})
    app = create_app(settings.__class__(**{**settings.__dict__, "validation_timeout": 0.5}))
    client = app.test_client()
    link = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])[0]
    try:
        if failure == "status":
            twilio.iam_status = 500
        if failure == "slow":
            twilio.iam_delay = 2.0
        resp = resolve(client, link, f"Bearer {token}")
        assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "validation_unavailable"
        assert "url" not in resp.get_json()
    finally:
        twilio.iam_status, twilio.iam_delay = None, 0.0
        app.extensions["resolver"].close()


def test_wrong_twilio_credentials_fail_closed(env):
    app = create_app(config.from_env({**env, "TWILIO_AUTH_TOKEN": "wrong-token-xxxxxxxxxxxxxxxx"}))
    client = app.test_client()
    link = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])[0]
    assert resolve(client, link, "Bearer whatever-token").status_code == 503
    app.extensions["resolver"].close()


@pytest.mark.parametrize("auth", ["Basic", "Basic !!!", "Basic dG9rZW4=", "Bearer x", "Basic dXNlcjp0b2s="])
def test_provider_bad_basic_auth_is_401(client, link, auth):
    resp = client.get(link["url_provider"].split("5000", 1)[1], headers={"Authorization": auth})
    assert resp.status_code == 401


def test_provider_preflight_for_flex_origin(client, link):
    resp = client.options(link["url_provider"].split("5000", 1)[1], headers={
        "Origin": "https://flex.twilio.com", "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert resp.status_code == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "https://flex.twilio.com"
    assert "Authorization" in resp.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize("origin", ["null", "https://flex.twilio.com.evil.example", "https://evil.example", "*"])
def test_foreign_origins_are_refused(client, link, token, origin):
    path = link["url_provider"].split("5000", 1)[1]
    pre = client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "GET"})
    assert pre.status_code == 403 and "Access-Control-Allow-Origin" not in pre.headers
    resp = client.get(path, headers={"Origin": origin, "Authorization": basic(token)})
    assert resp.status_code == 403 and "Access-Control-Allow-Origin" not in resp.headers


def test_link_from_elsewhere_is_400_and_unverified_link_404(client, token):
    ok = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/resolve", json={"url": "https://evil.example/d/x"}, headers=ok).status_code == 400
    assert client.post("/api/v1/resolve", json={"url": "http://127.0.0.1:5000/d/abc.def"},
                       headers=ok).status_code == 404
    assert client.post("/api/v1/resolve", data="not json", headers=ok).status_code == 400


def test_planted_validation_cache_entry_is_not_believed(client, link, twilio, app):
    """Whoever can write to the store cannot forge a 'valid' answer: entries are sealed with our key."""
    import hashlib
    import json

    store = app.extensions["resolver"].store
    forged = json.dumps({"identity": "mallory", "worker_sid": WORKER, "roles": ["admin"],
                         "expires_at": time.time() + 600, "account_sid": ""}).encode()
    for key in ("tok:" + hashlib.sha256(b"forged-token").hexdigest(),):
        store.put(key, b"0" * 64 + b"." + forged, 60)
    assert resolve(client, link, "Bearer forged-token").status_code == 401
    validator = app.extensions["resolver"].validator
    real_key = "tok:" + validator._mac(b"forged-token")
    store.put(real_key, b"0" * 64 + b"." + forged, 60)
    assert resolve(client, link, "Bearer forged-token").status_code == 401
