"""TaskRouter's 4096-character limit on task attributes: the fake enforces it over HTTP as TaskRouter does,
and attach refuses an attach that would exceed it before writing anything (never truncates)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests
from flask import Flask

from resolver import config, create_app
from resolver.access.links import MediaSpec
from resolver.access.signing import Signer
from resolver.demo.fake_taskrouter import OVERSIZE_CODE, FakeTaskRouter
from resolver.taskrouter import ATTRIBUTES_LIMIT, Attacher, AttributesTooLarge, TwilioRest
from tests.support.taskrouter import ACCOUNT, AUTH_TOKEN, WS, WT, env_for, sid

API_KEY = "svc_" + "x" * 40
RE1, RE2 = sid("RE", 1), sid("RE", 2)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        s.trust_env = False
        yield s


@pytest.fixture
def attacher(tr_settings, session) -> Attacher:  # type: ignore[no-untyped-def]
    rest = TwilioRest(tr_settings, session, sleep=lambda _s: None)
    return Attacher(tr_settings, Signer(tr_settings.secret_keys), rest)


def padded(total: int) -> str:
    """Attributes of exactly `total` characters (compact JSON, as with_media writes them)."""
    base = {"type": "inbound", "pad": ""}
    base["pad"] = "x" * (total - len(json.dumps(base, separators=(",", ":"))))
    text = json.dumps(base, separators=(",", ":"))
    assert len(text) == total
    return text


def rec(key: str) -> MediaSpec:
    return MediaSpec(type="VoiceRecording", source="recordings", key=key, title="Call")


def task_url(server_url: str) -> str:
    return f"{server_url}/v1/Workspaces/{WS}/Tasks/{WT}"


# ---- the fake answers like TaskRouter ----

def test_fake_refuses_attributes_over_4096_characters_with_a_400(tr_fake: FakeTaskRouter, tr_server, session):
    task = tr_fake.add_task(WS, WT, "{}")
    url, auth = task_url(tr_server.url), (ACCOUNT, AUTH_TOKEN)
    over = session.post(url, data={"Attributes": padded(ATTRIBUTES_LIMIT + 1)}, auth=auth)
    assert over.status_code == 400
    assert over.json()["code"] == OVERSIZE_CODE and "4096" in over.json()["message"]
    assert task.attributes == "{}" and task.version == 0
    at_limit = session.post(url, data={"Attributes": padded(ATTRIBUTES_LIMIT)}, auth=auth)
    assert at_limit.status_code == 200 and len(task.attributes) == ATTRIBUTES_LIMIT
    with pytest.raises(ValueError, match="size limit"):
        tr_fake.add_task(WS, sid("WT", 2), padded(ATTRIBUTES_LIMIT + 1))


# ---- attach checks before writing ----

def test_attach_that_would_exceed_the_limit_is_refused_before_any_write(tr_fake, attacher):
    original = padded(ATTRIBUTES_LIMIT - 300)  # one VoiceRecording entry is well over 300 characters
    task = tr_fake.add_task(WS, WT, original)
    with pytest.raises(AttributesTooLarge) as caught:
        attacher.attach(WS, WT, [rec(RE1)])
    assert caught.value.status == 409 and caught.value.code == "attributes_too_large"
    assert "4096" in caught.value.message
    assert tr_fake.writes == [] and task.attributes == original
    with pytest.raises(AttributesTooLarge):  # a dry run says so too, rather than promising a write
        attacher.attach(WS, WT, [rec(RE1)], dry_run=True)


def test_attach_up_to_exactly_the_limit_is_written(tr_fake, attacher):
    probe = tr_fake.add_task(WS, WT, padded(1000))
    planned = attacher.attach(WS, WT, [rec(RE1)], dry_run=True)
    growth = len(json.dumps({**json.loads(probe.attributes), "conversations": {"media": planned.media}},
                            separators=(",", ":"))) - 1000
    task = tr_fake.add_task(WS, WT, padded(ATTRIBUTES_LIMIT - growth))
    result = attacher.attach(WS, WT, [rec(RE1)])
    assert result.written and len(task.attributes) == ATTRIBUTES_LIMIT
    with pytest.raises(AttributesTooLarge):  # one more entry no longer fits
        attacher.attach(WS, WT, [rec(RE2)])
    assert len(tr_fake.writes) == 1


def test_twilio_refusing_the_size_itself_is_the_same_error_not_twilio_refused(tr_fake, attacher):
    tr_fake.attributes_limit = 300  # TaskRouter counting differently than we do: its 400 is still clear
    tr_fake.add_task(WS, WT, '{"type":"inbound"}')
    with pytest.raises(AttributesTooLarge):
        attacher.attach(WS, WT, [rec(RE1)])
    assert [w["status"] for w in tr_fake.writes] == [400]


# ---- through the API and its audit trail ----

@pytest.fixture
def app(tr_server, tmp_path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    env = env_for(tr_server.url, tmp_path, RESOLVER_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
                  RESOLVER_API_KEYS=API_KEY)
    app = create_app(config.from_env(env))
    yield app
    app.extensions["resolver"].close()


def test_api_answers_409_attributes_too_large_and_audits_it(app, tr_fake, tmp_path):
    tr_fake.add_task(WS, WT, padded(ATTRIBUTES_LIMIT - 100))
    resp = app.test_client().post(f"/api/v1/tasks/{WT}/media", headers={"Authorization": f"Bearer {API_KEY}"},
                                  json={"workspace_sid": WS, "media": [{"source": "recordings", "key": RE1}]})
    assert resp.status_code == 409
    assert resp.get_json()["error"]["code"] == "attributes_too_large"
    assert tr_fake.writes == []
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert {"event": "attach", "outcome": "refused", "reason": "attributes_too_large"}.items() <= next(
        r for r in records if r["event"] == "attach").items()
