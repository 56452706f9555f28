"""Webhook signatures Twilio sends today, checked against the `twilio` package's own RequestValidator.

Requests are signed with RequestValidator (the auth token with HMAC-SHA1, or a shared key with HMAC-SHA256 or
HMAC-SHA1 and `X-Twilio-Webhooks-Signature-Settings`) and sent to the hook, which attaches against the fake
TaskRouter over HTTP. The `twilio` package is a test-only dependency.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from resolver import config, create_app
from resolver.demo.fake_taskrouter import recording
from resolver.errors import ConfigError
from resolver.taskrouter.signature import compute_signature, is_valid, parse_settings
from tests.support.taskrouter import ACCOUNT, AUTH_TOKEN, PUBLIC_URL, WS, WT, env_for, settle, sid

request_validator = pytest.importorskip("twilio.request_validator", reason="the test extra (twilio) is missing")
RequestValidator = request_validator.RequestValidator

HOOK = "/hooks/taskrouter"
URL = PUBLIC_URL + HOOK
KEY_ID, KEY_SECRET = "webhooks_sharedkey_1", "shared-secret-" + "q" * 30
OLD_ID, OLD_SECRET = "webhooks_sharedkey_0", "older-secret-" + "r" * 30
API_KEY_SID, API_SECRET = sid("SK", 1), "api-secret-" + "z" * 20
CA1, RE1 = sid("CA", 1), sid("RE", 1)


def event(**fields: str) -> dict[str, str]:
    return {"EventType": "task.wrapup", "AccountSid": ACCOUNT, "WorkspaceSid": WS, "TaskSid": WT,
            "ResourceType": "Task", "TaskAttributes": json.dumps({"call_sid": CA1}), **fields}


def twilio_signed(secret: str, form: dict[str, str], algorithm: str | None = None, url: str = URL) -> str:
    return RequestValidator(secret).compute_signature(url, form, algorithm)


def post(client, form: dict[str, str], signature: str, settings_header: str | None = None):  # type: ignore[no-untyped-def]
    headers = {"X-Twilio-Signature": signature}
    if settings_header is not None:
        headers["X-Twilio-Webhooks-Signature-Settings"] = settings_header
    resp = client.post(HOOK, data=urlencode(form), content_type="application/x-www-form-urlencoded",
                       headers=headers)
    settle(client)  # the attach runs after the answer
    return resp


def make_app(url: str, tmp_path, **extra: str) -> Flask:  # type: ignore[no-untyped-def]
    return create_app(config.from_env(env_for(url, tmp_path, **extra)))


@pytest.fixture
def app(tr_server, tmp_path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    app = make_app(tr_server.url, tmp_path,
                   TWILIO_WEBHOOK_SHARED_KEYS=f"{OLD_ID}:{OLD_SECRET},{KEY_ID}:{KEY_SECRET}")
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def voice_task(tr_fake):  # type: ignore[no-untyped-def]
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1, channels=2)]
    return tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}), status="wrapping")


def attached(task) -> bool:  # type: ignore[no-untyped-def]
    return "media" in json.loads(task.attributes).get("conversations", {})


# ---- our signature is the twilio package's ----

@settings(max_examples=200, deadline=None)
@given(secret=st.text(min_size=1, max_size=40),
       params=st.lists(st.tuples(st.text(max_size=12), st.text(max_size=20)), max_size=6),
       algorithm=st.sampled_from(["HMAC_SHA1", "HMAC_SHA256"]),
       query=st.sampled_from(["", "?site=eu", "?a=1&b=2"]))
def test_signature_is_computed_as_twilios_request_validator_does(secret, params, algorithm, query):
    url = URL + query
    multi = {}
    for name, value in params:
        multi.setdefault(name, []).append(value)

    class Multi(dict):  # RequestValidator reads repeated names through getall (Flask's MultiDict does too)
        def getall(self, name):  # type: ignore[no-untyped-def]
            return multi[name]

    theirs = RequestValidator(secret).compute_signature(url, Multi(multi), algorithm)
    assert compute_signature(secret, url, params, algorithm) == theirs
    assert is_valid(secret, url, params, theirs, algorithm)
    assert RequestValidator(secret).validate(url, Multi(multi), theirs, algorithm)


@pytest.mark.parametrize(("header", "parsed"), [
    (f"key={KEY_ID},algorithm=HMAC_SHA256", (KEY_ID, "HMAC_SHA256")),
    (f"algorithm=HMAC_SHA1, key={KEY_ID}", (KEY_ID, "HMAC_SHA1")),
    (f"key={KEY_ID}", None),
    ("algorithm=HMAC_SHA256", None),
    (f"key={KEY_ID},key=other,algorithm=HMAC_SHA256", None),
    ("", None),
    ("garbage", None),
])
def test_settings_header(header, parsed):
    assert parse_settings(header) == parsed


# ---- the hook ----

@pytest.mark.parametrize("algorithm", ["HMAC_SHA256", "HMAC_SHA1"])
def test_hook_accepts_a_shared_key_signature(app, tr_fake, voice_task, algorithm):
    form = event()
    resp = post(app.test_client(), form, twilio_signed(KEY_SECRET, form, algorithm),
                f"key={KEY_ID},algorithm={algorithm}")
    assert resp.status_code == 204 and attached(voice_task)


def test_hook_accepts_an_older_shared_key_while_keys_rotate(app, tr_fake, voice_task):
    form = event()
    resp = post(app.test_client(), form, twilio_signed(OLD_SECRET, form, "HMAC_SHA256"),
                f"key={OLD_ID},algorithm=HMAC_SHA256")
    assert resp.status_code == 204 and attached(voice_task)


def test_hook_still_accepts_the_auth_token_signature_without_the_settings_header(app, tr_fake, voice_task):
    form = event()
    assert post(app.test_client(), form, twilio_signed(AUTH_TOKEN, form)).status_code == 204
    assert attached(voice_task)


@pytest.mark.parametrize(("secret", "algorithm", "header"), [
    (KEY_SECRET, "HMAC_SHA256", "key=webhooks_sharedkey_9,algorithm=HMAC_SHA256"),  # unknown key id
    (KEY_SECRET, "HMAC_SHA256", f"key={OLD_ID},algorithm=HMAC_SHA256"),  # the other key's id
    (KEY_SECRET, "HMAC_SHA256", f"key={KEY_ID},algorithm=HMAC_SHA1"),  # algorithm says one thing, signed another
    (KEY_SECRET, "HMAC_SHA1", f"key={KEY_ID},algorithm=HMAC_MD5"),  # an algorithm we do not know
    (KEY_SECRET, "HMAC_SHA256", f"key={KEY_ID}"),  # no algorithm
    (AUTH_TOKEN, None, f"key={KEY_ID},algorithm=HMAC_SHA1"),  # auth token signature under a shared-key header
    (AUTH_TOKEN, None, ""),  # an empty settings header never falls back to the auth token
    (KEY_SECRET, "HMAC_SHA256", None),  # a shared-key signature without its header
])
def test_hook_refuses_what_does_not_verify(app, tr_fake, voice_task, secret, algorithm, header):
    form = event()
    resp = post(app.test_client(), form, twilio_signed(secret, form, algorithm), header)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "bad_signature"
    assert tr_fake.reads == [] and tr_fake.writes == []


def test_hook_signature_covers_every_parameter_with_sha256(app, tr_fake, voice_task):
    form = event()
    signature = twilio_signed(KEY_SECRET, form, "HMAC_SHA256")
    form["TaskSid"] = sid("WT", 2)
    assert post(app.test_client(), form, signature, f"key={KEY_ID},algorithm=HMAC_SHA256").status_code == 403


def test_api_key_only_deployments_can_use_the_hook_with_shared_keys(tr_fake, tr_server, tmp_path, voice_task):
    tr_fake.credentials.add((API_KEY_SID, API_SECRET))
    app = make_app(tr_server.url, tmp_path, TWILIO_AUTH_TOKEN="", TWILIO_API_KEY=API_KEY_SID,
                   TWILIO_API_SECRET=API_SECRET, TWILIO_WEBHOOK_SHARED_KEYS=f"{KEY_ID}:{KEY_SECRET}")
    client = app.test_client()
    form = event()
    # no auth token: a request without the settings header has nothing to verify against
    assert post(client, form, twilio_signed(AUTH_TOKEN, form)).status_code == 403
    resp = post(client, form, twilio_signed(KEY_SECRET, form, "HMAC_SHA256"), f"key={KEY_ID},algorithm=HMAC_SHA256")
    assert resp.status_code == 204 and attached(voice_task)
    app.extensions["resolver"].close()


def test_without_auth_token_or_shared_keys_the_hook_does_not_exist(tr_server, tmp_path):
    app = make_app(tr_server.url, tmp_path, TWILIO_AUTH_TOKEN="", TWILIO_API_KEY=API_KEY_SID,
                   TWILIO_API_SECRET=API_SECRET)
    form = event()
    assert post(app.test_client(), form, twilio_signed(KEY_SECRET, form, "HMAC_SHA256"),
                f"key={KEY_ID},algorithm=HMAC_SHA256").status_code == 404
    app.extensions["resolver"].close()


@pytest.mark.parametrize("value", ["nokey", ":secret-secret-secret", f"{KEY_ID}:short",
                                   f"{KEY_ID}:{KEY_SECRET},{KEY_ID}:{OLD_SECRET}", f"bad id:{KEY_SECRET}"])
def test_bad_shared_key_settings_stop_start_up(tmp_path, value):
    with pytest.raises(ConfigError, match="TWILIO_WEBHOOK_SHARED_KEYS"):
        config.from_env(env_for("http://127.0.0.1:9", tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=value))


def test_shared_secrets_stay_out_of_repr(tmp_path):
    s = config.from_env(env_for("http://127.0.0.1:9", tmp_path, TWILIO_WEBHOOK_SHARED_KEYS=f"{KEY_ID}:{KEY_SECRET}"))
    assert KEY_SECRET not in repr(s)
