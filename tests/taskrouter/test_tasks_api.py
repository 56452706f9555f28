"""POST /api/v1/tasks/<WT>/media and POST /hooks/taskrouter, through the app against the fake TaskRouter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask

from resolver import config, create_app
from resolver.demo.fake_taskrouter import FakeTaskRouter, recording
from resolver.taskrouter.signature import compute_signature
from tests.support.taskrouter import ACCOUNT, AUTH_TOKEN, PUBLIC_URL, WS, WT, env_for, settle, sid

API_KEY = "svc_" + "x" * 40
RE1, CA1, CH1 = sid("RE", 1), sid("CA", 1), sid("CH", 1)
HOOK = "/hooks/taskrouter"
API_KEY_SID, API_SECRET = sid("SK", 1), "api-secret-" + "z" * 20


def make_app(url: str, tmp_path: Path, **extra: str) -> Iterator[Flask]:
    env = env_for(url, tmp_path, RESOLVER_AUDIT_LOG=str(tmp_path / "audit.jsonl"), **extra)
    app = create_app(config.from_env(env))
    app.config["TESTING"] = True
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def app(tr_server, tmp_path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    yield from make_app(tr_server.url, tmp_path, RESOLVER_API_KEYS=API_KEY)


@pytest.fixture
def client(app):  # type: ignore[no-untyped-def]
    return app.test_client()


def audit_lines(tmp_path: Path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def post_media(client, body: dict, key: str = API_KEY, task: str = WT):  # type: ignore[no-untyped-def]
    return client.post(f"/api/v1/tasks/{task}/media", json=body, headers={"Authorization": f"Bearer {key}"})


# ---- the attach API ----

def test_api_attaches_and_answers_the_media_list(client, tr_fake: FakeTaskRouter, tmp_path):
    task = tr_fake.add_task(WS, WT, json.dumps({"type": "inbound", "conversations": {"abandoned": "No"}}))
    resp = post_media(client, {"workspace_sid": WS, "media": [
        {"source": "recordings", "key": RE1, "title": "Call"},
        {"type": "Referenced", "source": "crm", "key": "T-1", "title": "Ticket"}]})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    after = json.loads(task.attributes)
    assert body["written"] is True and body["added"] == 2 and body["media"] == after["conversations"]["media"]
    assert after["type"] == "inbound" and after["conversations"]["abandoned"] == "No"
    assert body["media"][0]["url_provider"].startswith(PUBLIC_URL + "/p/")
    again = post_media(client, {"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1}]})
    assert again.get_json()["written"] is False and len(tr_fake.writes) == 1
    events = [(r["event"], r.get("outcome")) for r in audit_lines(tmp_path)]
    assert events.count(("link", "issued")) == 2
    assert ("attach", "written") in events and ("attach", "unchanged") in events
    assert "/d/" not in (tmp_path / "audit.jsonl").read_text()


def test_api_keep_defaults(client, tr_fake, tmp_path):
    task = tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "conversationSid": CH1}))
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1)]
    resp = post_media(client, {"workspace_sid": WS, "keep_defaults": True})
    assert resp.status_code == 200
    types = [e["type"] for e in json.loads(task.attributes)["conversations"]["media"]]
    assert types == ["VoiceRecording", "ChatTranscript"]


@pytest.mark.parametrize("key, status", [("", 401), ("wrong" * 10, 401), (API_KEY + "x", 401)])
def test_api_needs_a_service_key(client, tr_fake, key, status):
    tr_fake.add_task(WS, WT, "{}")
    resp = post_media(client, {"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1}]}, key=key)
    assert resp.status_code == status and tr_fake.reads == []


def test_api_is_404_without_service_keys(tr_server, tr_fake, tmp_path):
    for app in make_app(tr_server.url, tmp_path):
        resp = post_media(app.test_client(), {"workspace_sid": WS, "media": []})
        assert resp.status_code == 404 and tr_fake.reads == []


@pytest.mark.parametrize("body, code", [
    ({"media": [{"source": "recordings", "key": RE1}]}, "bad_workspace_sid"),
    ({"workspace_sid": "WS1", "media": [{"source": "recordings", "key": RE1}]}, "bad_workspace_sid"),
    ({"workspace_sid": WS, "media": []}, "bad_media"),
    ({"workspace_sid": WS, "media": "x"}, "bad_media"),
    ({"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1}] * 51}, "bad_media"),
    ({"workspace_sid": WS, "media": [{"type": "Embedded", "source": "crm", "key": "x"}]}, "embedded_refused"),
    ({"workspace_sid": WS, "media": [{"source": "recordings", "key": "../x"}]}, "bad_key"),
    ({"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1, "url": "https://x"}]}, "bad_media"),
    ({"workspace_sid": WS, "keep_defaults": "yes"}, "bad_request"),
])
def test_api_bad_requests_are_400(client, tr_fake, body, code):
    tr_fake.add_task(WS, WT, "{}")
    resp = post_media(client, body)
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (400, code)
    assert tr_fake.writes == []


def test_api_bad_task_sid_is_400(client, tr_fake):
    resp = post_media(client, {"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1}]}, task="WTx")
    assert resp.status_code == 400 and tr_fake.reads == []


@pytest.mark.parametrize("setup, status, code", [
    (lambda f: None, 404, "task_not_found"),
    (lambda f: f.add_task(WS, WT, "[not an object]"), 409, "attributes_unparseable"),
    (lambda f: f.credentials.clear(), 502, "twilio_auth_failed"),
])
def test_api_twilio_side_errors(client, tr_fake, tmp_path, setup, status, code):
    setup(tr_fake)
    resp = post_media(client, {"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1}]})
    assert (resp.status_code, resp.get_json()["error"]["code"]) == (status, code)
    assert AUTH_TOKEN not in resp.get_data(as_text=True)
    refused = [r for r in audit_lines(tmp_path) if r["event"] == "attach"]
    assert [(r["outcome"], r["reason"]) for r in refused] == [("refused", code)]


# ---- the event hook ----

def event(**fields: str) -> dict[str, str]:
    return {"EventType": "task.wrapup", "AccountSid": ACCOUNT, "WorkspaceSid": WS, "WorkspaceName": "Flex",
            "ResourceType": "Task", "ResourceSid": WT, "TaskSid": WT, "TaskAssignmentStatus": "wrapping",
            "TaskAttributes": json.dumps({"call_sid": CA1}), "Timestamp": "1767225600",
            "EventDescription": "Task wrapping", **fields}


def post_event(client, form: dict[str, str], *, url: str = PUBLIC_URL + HOOK, token: str = AUTH_TOKEN,  # type: ignore[no-untyped-def]
               signature: str | None = None, path: str = HOOK):
    sig = signature if signature is not None else compute_signature(token, url, form.items())
    resp = client.post(path, data=urlencode(form), content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": sig} if sig else {})
    settle(client)  # the attach runs after the answer
    return resp


@pytest.fixture
def voice_task(tr_fake):  # type: ignore[no-untyped-def]
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1, channels=2)]
    return tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "type": "inbound"}), status="wrapping")


@pytest.mark.parametrize("event_type", ["task.wrapup", "reservation.wrapup", "task.completed"])
def test_hook_attaches_the_call_recordings(client, tr_fake, voice_task, event_type):
    resp = post_event(client, event(EventType=event_type))
    assert resp.status_code == 204 and resp.mimetype == "application/json" and resp.data == b""
    after = json.loads(voice_task.attributes)
    assert after["type"] == "inbound"
    [entry] = after["conversations"]["media"]
    assert entry["type"] == "VoiceRecording" and entry["channels"] == ["customer", "others"]
    assert post_event(client, event()).status_code == 204 and len(tr_fake.writes) == 1  # idempotent


@pytest.mark.parametrize("signature", ["", "AAAAAAAAAAAAAAAAAAAAAAAAAAA=", compute_signature("other", PUBLIC_URL + HOOK,
                                                                                              event().items())])
def test_hook_refuses_a_missing_or_wrong_signature(client, tr_fake, voice_task, signature):
    form = event()
    if signature:
        resp = post_event(client, form, signature=signature)
    else:
        resp = client.post(HOOK, data=form)
    assert resp.status_code == 403 and resp.get_json()["error"]["code"] == "bad_signature"
    assert tr_fake.reads == [] and tr_fake.writes == []


def test_hook_checks_the_public_url_not_the_host_header(client, tr_fake, voice_task):
    form = event()
    forged = compute_signature(AUTH_TOKEN, "http://localhost" + HOOK, form.items())  # what the Host header says
    assert post_event(client, form, signature=forged).status_code == 403
    assert tr_fake.writes == []


def test_hook_signature_covers_every_parameter(client, tr_fake, voice_task):
    form = event()
    sig = compute_signature(AUTH_TOKEN, PUBLIC_URL + HOOK, form.items())
    form["TaskSid"] = sid("WT", 2)
    assert post_event(client, form, signature=sig).status_code == 403


def test_hook_signature_includes_the_query_string(client, tr_fake, voice_task):
    form = event()
    assert post_event(client, form, url=PUBLIC_URL + HOOK + "?site=eu", path=HOOK + "?site=eu").status_code == 204
    assert post_event(client, form, url=PUBLIC_URL + HOOK, path=HOOK + "?site=eu").status_code == 403


@pytest.mark.parametrize("fields", [
    {"EventType": "task.created"},
    {"EventType": "worker.activity.update", "TaskSid": ""},
    {"AccountSid": sid("AC", 9)},
])
def test_hook_ignores_other_events_and_accounts(client, tr_fake, voice_task, fields):
    assert post_event(client, event(**fields)).status_code == 204
    assert tr_fake.reads == [] and tr_fake.writes == []


def test_hook_leaves_a_task_without_a_recording_alone(client, tr_fake):
    task = tr_fake.add_task(WS, WT, json.dumps({"conversationSid": CH1}), status="wrapping")
    assert post_event(client, event()).status_code == 204
    assert tr_fake.writes == [] and task.attributes == json.dumps({"conversationSid": CH1})


def test_hook_audits_a_missing_task(client, tr_fake, tmp_path):
    resp = post_event(client, event())
    assert resp.status_code == 204  # answered before TaskRouter was asked; the refusal is in the audit trail
    attaches = [(r["outcome"], r.get("reason")) for r in audit_lines(tmp_path) if r["event"] == "attach"]
    assert attaches == [("accepted", None), ("refused", "task_not_found")]


def test_hook_is_404_with_api_key_credentials_only(tr_server, tr_fake, tmp_path, monkeypatch):
    tr_fake.credentials.add((API_KEY_SID, API_SECRET))
    for app in make_app(tr_server.url, tmp_path, TWILIO_AUTH_TOKEN="", TWILIO_API_KEY=API_KEY_SID,
                        TWILIO_API_SECRET=API_SECRET):
        assert app.extensions["resolver"].settings.auth_token is None
        resp = post_event(app.test_client(), event(), token=API_SECRET)
        assert resp.status_code == 404 and tr_fake.reads == []
