"""The TaskRouter hook answers within Twilio's 15 seconds whatever Twilio's REST API does, then attaches.

Against the fake TaskRouter made slow (`delay`) or failing (`fail_next`): the hook's 204 comes back in well
under a second, the attach lands afterwards (or is audited as refused), within the job's bounded time, with
exactly one outcome record that joins the `accepted` record by request id.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from flask import Flask

from resolver import config, create_app
from resolver.demo.fake_taskrouter import FakeTaskRouter, recording
from resolver.taskrouter.background import HookJobs, HookPolicy
from resolver.taskrouter.signature import compute_signature
from tests.support.taskrouter import ACCOUNT, AUTH_TOKEN, PUBLIC_URL, WS, WT, env_for, settle, sid

HOOK = "/hooks/taskrouter"
RE1, CA1 = sid("RE", 1), sid("CA", 1)
FAST = HookPolicy(attempts=3, budget=6.0, backoff=(0.2,), rest_backoff=(0.05,), drain=5.0)


class HeldBack:
    """A spawn that runs nothing until the test says so: proof the request did not wait for the attach."""

    def __init__(self) -> None:
        self.jobs: list[Callable[[], None]] = []

    def __call__(self, fn: Callable[[], None]) -> None:
        self.jobs.append(fn)

    def run_all(self) -> None:
        while self.jobs:
            self.jobs.pop(0)()


def make(tr_server, tmp_path: Path, spawn=None) -> Flask:  # type: ignore[no-untyped-def]
    env = env_for(tr_server.url, tmp_path, RESOLVER_AUDIT_LOG=str(tmp_path / "audit.jsonl"))
    app = create_app(config.from_env(env), hook_spawn=spawn)
    app.extensions["resolver"].hooks.policy = FAST
    return app


@pytest.fixture
def app(tr_server, tmp_path) -> Iterator[Flask]:  # type: ignore[no-untyped-def]
    app = make(tr_server, tmp_path)
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def voice_task(tr_fake: FakeTaskRouter):  # type: ignore[no-untyped-def]
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1, channels=2)]
    return tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1}), status="wrapping")


def event(**fields: str) -> dict[str, str]:
    return {"EventType": "task.wrapup", "AccountSid": ACCOUNT, "WorkspaceSid": WS, "TaskSid": WT, **fields}


def timed_post(client, form: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    form = form or event()
    sig = compute_signature(AUTH_TOKEN, PUBLIC_URL + HOOK, form.items())
    start = time.monotonic()
    resp = client.post(HOOK, data=urlencode(form), content_type="application/x-www-form-urlencoded",
                       headers={"X-Twilio-Signature": sig, "X-Request-Id": "hook-req-0001"})
    return resp, time.monotonic() - start


def attaches(tmp_path: Path) -> list[dict]:
    path = tmp_path / "audit.jsonl"
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == "attach"]


def media(task) -> list[dict]:  # type: ignore[no-untyped-def]
    return json.loads(task.attributes).get("conversations", {}).get("media", [])


def test_the_hook_answers_before_the_attach_runs(tr_server, tr_fake, voice_task, tmp_path):
    held = HeldBack()
    app = make(tr_server, tmp_path, spawn=held)
    try:
        resp, _ = timed_post(app.test_client())
        assert resp.status_code == 204
        assert tr_fake.reads == [] and media(voice_task) == []  # Twilio not asked while the request was open
        assert [r["outcome"] for r in attaches(tmp_path)] == ["accepted"]
        held.run_all()
        assert [e["type"] for e in media(voice_task)] == ["VoiceRecording"]
        accepted, written = attaches(tmp_path)
        assert written["outcome"] == "written" and written["attempts"] == 1 and written["via"] == "hook"
        assert accepted["request_id"] == written["request_id"] == "hook-req-0001"
    finally:
        app.extensions["resolver"].close()


def test_a_slow_twilio_does_not_hold_the_answer_and_the_attach_still_lands(app, tr_fake, voice_task, tmp_path):
    tr_fake.delay = 1.5  # each of the attach's three Twilio calls: 4.5 s in all, what the hook used to wait
    resp, took = timed_post(app.test_client())
    assert resp.status_code == 204 and took < 1.0, took
    assert media(voice_task) == []
    settle(app)
    assert [e["type"] for e in media(voice_task)] == ["VoiceRecording"]
    outcome = attaches(tmp_path)[-1]
    assert outcome["outcome"] == "written" and outcome["duration_ms"] >= 4500


def test_twilio_failing_for_a_while_is_retried_until_it_lands(app, tr_fake, voice_task, tmp_path):
    tr_fake.fail_next = [503] * 4  # two whole attempts fail (2 tries per call with rest_backoff=(0.05,))
    resp, took = timed_post(app.test_client())
    assert resp.status_code == 204 and took < 1.0
    settle(app)
    assert [e["type"] for e in media(voice_task)] == ["VoiceRecording"]
    outcome = attaches(tmp_path)[-1]
    assert outcome["outcome"] == "written" and outcome["attempts"] == 3


def test_twilio_failing_throughout_is_audited_as_refused_after_bounded_attempts(app, tr_fake, voice_task,
                                                                                 tmp_path):
    tr_fake.fail_next = [503] * 1000
    resp, took = timed_post(app.test_client())
    assert resp.status_code == 204 and took < 1.0
    start = time.monotonic()
    settle(app)
    assert time.monotonic() - start < FAST.budget + 1
    assert media(voice_task) == [] and tr_fake.writes == []
    accepted, refused = attaches(tmp_path)
    assert accepted["outcome"] == "accepted"
    assert (refused["outcome"], refused["reason"], refused["attempts"]) == ("refused", "twilio_unavailable", 3)
    assert len(tr_fake.fail_next) == 1000 - 6  # 3 attempts x 2 tries of the first call: bounded


def test_a_hanging_twilio_is_cut_at_the_budget_and_audited(app, tr_fake, voice_task, tmp_path):
    tr_fake.delay_next = [FAST.budget + 4]  # the first call hangs beyond the job's whole budget
    resp, took = timed_post(app.test_client())
    assert resp.status_code == 204 and took < 1.0
    start = time.monotonic()
    settle(app, timeout=FAST.budget + 5)
    assert time.monotonic() - start < FAST.budget + 2
    outcome = attaches(tmp_path)[-1]
    # the hanging call's read timeout was cut to the budget left: no time for another try
    assert (outcome["outcome"], outcome["reason"], outcome["attempts"]) == ("refused", "twilio_timeout", 1)
    assert tr_fake.writes == []


def test_a_refusal_after_the_answer_is_audited_with_its_reason(app, tr_fake, tmp_path):
    tr_fake.recordings[CA1] = [recording(RE1, call_sid=CA1)]
    tr_fake.add_task(WS, WT, json.dumps({"call_sid": CA1, "filler": "x" * 3900}), status="wrapping")
    resp, _ = timed_post(app.test_client())
    assert resp.status_code == 204
    settle(app)
    assert [(r["outcome"], r.get("reason")) for r in attaches(tmp_path)] == [
        ("accepted", None), ("refused", "attributes_too_large")]
    assert tr_fake.writes == []


def test_a_bad_workspace_sid_is_refused_before_acknowledging(app, tr_fake, voice_task, tmp_path):
    resp, _ = timed_post(app.test_client(), event(WorkspaceSid="WS-nope"))
    assert resp.status_code == 400 and tr_fake.reads == []


def test_an_unexpected_error_in_the_job_is_still_audited(tr_server, tr_fake, voice_task, tmp_path):
    app = make(tr_server, tmp_path)
    jobs: HookJobs = app.extensions["resolver"].hooks

    def broken(deadline, policy):  # type: ignore[no-untyped-def]
        raise RuntimeError("a bug")

    jobs.attacher = broken
    try:
        assert timed_post(app.test_client())[0].status_code == 204
        settle(app)
        assert [(r["outcome"], r.get("reason")) for r in attaches(tmp_path)] == [
            ("accepted", None), ("refused", "internal_error")]
    finally:
        app.extensions["resolver"].close()


def test_closing_records_jobs_still_running_and_refuses_new_ones(tr_server, tr_fake, voice_task, tmp_path):
    app = make(tr_server, tmp_path)
    tr_fake.delay_next = [4.0]
    try:
        assert timed_post(app.test_client())[0].status_code == 204
        app.extensions["resolver"].hooks.close(timeout=0.5)
        assert [(r["outcome"], r.get("reason")) for r in attaches(tmp_path)] == [
            ("accepted", None), ("refused", "shutdown")]
        resp, _ = timed_post(app.test_client())
        assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "hook_busy"
    finally:
        app.extensions["resolver"].close()


def test_too_many_running_jobs_answer_503_and_are_audited(tr_server, tr_fake, voice_task, tmp_path):
    held = HeldBack()
    app = make(tr_server, tmp_path, spawn=held)
    app.extensions["resolver"].hooks.policy = HookPolicy(max_pending=1, budget=5)
    try:
        assert timed_post(app.test_client())[0].status_code == 204
        resp, _ = timed_post(app.test_client())
        assert resp.status_code == 503 and resp.get_json()["error"]["code"] == "hook_busy"
        assert [(r["outcome"], r.get("reason")) for r in attaches(tmp_path)] == [
            ("accepted", None), ("refused", "hook_busy")]
        held.run_all()
    finally:
        app.extensions["resolver"].close()


# ---- under gunicorn's gevent worker, as production runs it ----

def test_under_gunicorn_the_hook_answers_fast_while_twilio_hangs_and_the_attach_lands(
        tr_server, tr_fake, voice_task, tmp_path):
    import requests

    from tests.support.env import start_gunicorn, stop_gunicorn

    # the first Twilio call hangs 12 s: past its 10 s read timeout, so it is retried and the attach lands;
    # answering after the attach (as the hook used to) would have taken TaskRouter past its 15 s
    tr_fake.delay_next = [12.0]
    server = start_gunicorn(env_for(tr_server.url, tmp_path, RESOLVER_AUDIT_LOG=str(tmp_path / "audit.jsonl"),
                                    WEB_CONCURRENCY="1"), tmp_path)
    try:
        form = event()
        sig = compute_signature(AUTH_TOKEN, server.url + HOOK, form.items())
        start = time.monotonic()
        resp = requests.post(server.url + HOOK, data=form, headers={"X-Twilio-Signature": sig}, timeout=15)
        took = time.monotonic() - start
        assert resp.status_code == 204 and took < 1.0, (resp.status_code, took)
        # the same worker keeps answering while its greenlet waits on Twilio
        assert requests.get(server.url + "/healthz", timeout=2).status_code == 200
        deadline = time.monotonic() + 20
        while not media(voice_task) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [e["type"] for e in media(voice_task)] == ["VoiceRecording"]
        while len(attaches(tmp_path)) < 2 and time.monotonic() < deadline:  # the outcome follows the write
            time.sleep(0.1)
        accepted, written = attaches(tmp_path)
        assert (accepted["outcome"], written["outcome"]) == ("accepted", "written")
        assert accepted["request_id"] == written["request_id"] == resp.headers["X-Request-Id"]
        assert written["duration_ms"] >= 10_000
    finally:
        stop_gunicorn(server)


def test_default_spawn_is_a_greenlet_under_gevent_and_a_thread_otherwise():
    import subprocess
    import sys

    code = ("from gevent import monkey; monkey.patch_all()\n"
            "import gevent\nfrom resolver.taskrouter.background import default_spawn\n"
            "assert default_spawn() is gevent.spawn\nprint('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stderr
    import gevent

    from resolver.taskrouter.background import default_spawn
    assert default_spawn() is not gevent.spawn
