"""Revocation before expiry: API and CLI, what each kind refuses, persistence, and a store that is down."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from resolver.access import revocation
from resolver.access.signing import Signer
from resolver.cli import main
from resolver.errors import BadRequest
from tests.support.env import KEYS, RECORDING_SID, SERVICE_KEY, WORKER, free_port, issue_links, new_token

TASK_A, TASK_B = "WT" + "a" * 32, "WT" + "b" * 32
SERVICE = {"Authorization": f"Bearer {SERVICE_KEY}"}


def local(url: str) -> str:
    return url.split("5000", 1)[1]


def resolve(client, url: str, token: str):  # type: ignore[no-untyped-def]
    return client.post("/api/v1/resolve", json={"url": url}, headers={"Authorization": f"Bearer {token}"})


def grant_path(client, url: str, token: str) -> str:  # type: ignore[no-untyped-def]
    resp = resolve(client, url, token)
    assert resp.status_code == 200, resp.get_json()
    return local(resp.get_json()["url"])


def code(resp) -> str:  # type: ignore[no-untyped-def]
    return resp.get_json()["error"]["code"]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def audit(env: dict, event: str = "revocation") -> list[dict]:
    with open(env["RESOLVER_AUDIT_LOG"]) as f:
        return [r for r in map(json.loads, f) if r["event"] == event]


@pytest.fixture
def two_tasks(make_client, twilio):  # type: ignore[no-untyped-def]
    """A client, two recordings' links in task A, one in task B, and two users."""
    client = make_client()
    a1, a2 = issue_links(client, [
        {"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"},
        {"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"},
    ], task=TASK_A)
    [b1] = issue_links(client, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}],
                       task=TASK_B)
    alice = new_token(twilio, worker_sid=WORKER, identity="alice@example.com")
    bob = new_token(twilio, worker_sid=WORKER, identity="bob@example.com")
    return client, a1, a2, b1, alice, bob


@pytest.mark.parametrize("field", ["url", "url_provider"])
def test_revoked_link_refuses_live_grants_and_new_resolves(two_tasks, field, env):
    client, a1, a2, _, alice, _ = two_tasks
    live = grant_path(client, a1["url"], alice)
    other = grant_path(client, a2["url"], alice)
    resp = client.post("/api/v1/revocations", json={"link": a1[field]}, headers=SERVICE)
    assert resp.status_code == 201, resp.get_json()
    link_id = Signer(KEYS).load_link(a1["url"].rsplit("/", 1)[1]).id
    rev = resp.get_json()["revocation"]
    assert rev["kind"] == "link" and rev["value"] == link_id and rev["at"].endswith("Z")
    refused = client.get(live)
    assert refused.status_code == 403 and code(refused) == "revoked"
    assert code(resolve(client, a1["url"], alice)) == "revoked"
    assert client.get(other).status_code == 200  # the same task's other media is untouched
    [rec] = audit(env)
    assert rec["outcome"] == "revoked" and rec["kind"] == "link" and rec["link_id"] == link_id
    assert rec["via"] == "api" and rec["task_sid"] == TASK_A and rec["client"] == "127.0.0.1"
    with open(env["RESOLVER_AUDIT_LOG"]) as f:
        assert a1["url"].rsplit("/", 1)[1] not in f.read()


def test_revoked_task_refuses_all_its_media_only(two_tasks):
    client, a1, a2, b1, alice, _ = two_tasks
    grants = [grant_path(client, e["url"], alice) for e in (a1, a2, b1)]
    assert client.post("/api/v1/revocations", json={"task_sid": TASK_A}, headers=SERVICE).status_code == 201
    assert [client.get(g).status_code for g in grants] == [403, 403, 200]
    assert resolve(client, a2["url"], alice).status_code == 403


def test_revoked_subject_refuses_that_user_only(two_tasks):
    client, a1, _, _, alice, bob = two_tasks
    alices, bobs = grant_path(client, a1["url"], alice), grant_path(client, a1["url"], bob)
    resp = client.post("/api/v1/revocations", json={"subject": "alice@example.com"}, headers=SERVICE)
    assert resp.status_code == 201
    assert code(client.get(alices)) == "revoked" and client.get(bobs).status_code == 200
    assert code(resolve(client, a1["url"], alice)) == "revoked"
    assert resolve(client, a1["url"], bob).status_code == 200


def test_all_before_refuses_grants_issued_before_the_cutoff(two_tasks):
    client, a1, _, _, _, _ = two_tasks
    signer, now = Signer(KEYS), time.time()
    link = signer.load_link(a1["url"].rsplit("/", 1)[1])

    def signed(issued_at: float) -> str:
        return "/m/" + signer.sign_grant(link, identity="alice@example.com", worker=WORKER,
                                         issued_at=int(issued_at), expires_at=int(now) + 60)[1]

    old, recent = signed(now - 30), signed(now)
    resp = client.post("/api/v1/revocations", json={"all_before": iso(now - 10)}, headers=SERVICE)
    assert resp.status_code == 201 and resp.get_json()["revocation"]["value"] == iso(now - 10)
    assert code(client.get(old)) == "revoked"
    assert client.get(recent).status_code == 200


def test_revocations_survive_a_restart(make_client, twilio):
    first = make_client()
    [entry] = issue_links(first, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    tok = new_token(twilio, worker_sid=WORKER)
    live = grant_path(first, entry["url"], tok)
    assert first.post("/api/v1/revocations", json={"link": entry["url"]}, headers=SERVICE).status_code == 201
    second = make_client()  # a new process over the same SQLite file
    assert code(second.get(live)) == "revoked"


def test_revocation_api_needs_a_service_key(make_client, two_tasks):
    client, a1, *_ = two_tasks
    assert client.post("/api/v1/revocations", json={"link": a1["url"]}).status_code == 401
    wrong = client.post("/api/v1/revocations", json={"link": a1["url"]},
                        headers={"Authorization": "Bearer " + "x" * 40})
    assert wrong.status_code == 401 and code(wrong) == "invalid_service_key"
    closed = make_client(RESOLVER_API_KEYS="")
    assert closed.post("/api/v1/revocations", json={"link": a1["url"]}, headers=SERVICE).status_code == 404


def _tampered(url: str) -> str:
    head, token = url.rsplit("/", 1)
    return f"{head}/{token[:-2]}{'A' if token[-2] != 'A' else 'B'}{token[-1]}"


@pytest.mark.parametrize("body, expected", [
    ({}, "bad_revocation"),
    ({"subject": "a", "task_sid": TASK_A}, "bad_revocation"),
    ({"subject": "a", "extra": 1}, "bad_revocation"),
    ({"link": "https://elsewhere.example/x/abc"}, "bad_link"),
    ({"link": 42}, "bad_link"),
    ({"link": "TAMPER"}, "bad_link"),
    ({"link": "http://127.0.0.1:5000/m/abc"}, "bad_link"),
    ({"task_sid": "WT123"}, "bad_task_sid"),
    ({"subject": ""}, "bad_subject"),
    ({"subject": "a\nb"}, "bad_subject"),
    ({"subject": "x" * 300}, "bad_subject"),
    ({"all_before": "2026-01-01T00:00:00"}, "bad_time"),
    ({"all_before": "yesterday"}, "bad_time"),
    ({"all_before": "2999-01-01T00:00:00Z"}, "bad_time"),
])
def test_bad_revocation_requests_are_400(two_tasks, body, expected):
    client, a1, *_ = two_tasks
    if body.get("link") == "TAMPER":
        body = {"link": _tampered(a1["url"])}
    resp = client.post("/api/v1/revocations", json=body, headers=SERVICE)
    assert resp.status_code == 400 and code(resp) == expected
    with pytest.raises(BadRequest):
        revocation.parse(body, Signer(KEYS))


def test_all_before_now_is_accepted():
    rev = revocation.parse({"all_before": "now"}, Signer(KEYS), now=1000.0)
    assert rev.kind == "before" and float(rev.value) == 1000.0


def test_store_down_fails_closed_without_asking_twilio(make_client, twilio, env):
    healthy = make_client()
    [entry] = issue_links(healthy, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    tok = new_token(twilio, worker_sid=WORKER)
    live = grant_path(healthy, entry["url"], tok)
    down = make_client(RESOLVER_STORE=f"redis://127.0.0.1:{free_port()}/14")
    fresh = new_token(twilio, worker_sid=WORKER)
    asked = len(twilio.validations)
    for resp in (resolve(down, entry["url"], fresh), down.get(live),
                 down.post("/api/v1/revocations", json={"link": entry["url"]}, headers=SERVICE)):
        assert resp.status_code == 503 and code(resp) == "store_unavailable"
        assert "redis" not in resp.get_data(as_text=True).lower()
    assert len(twilio.validations) == asked
    assert audit(env)[-1]["outcome"] == "failed"
    assert down.get("/healthz").status_code == 200


# ---- the command line -------------------------------------------------------------------------------

@pytest.fixture
def cli_env(env, monkeypatch) -> dict:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def test_cli_revokes_a_link_for_the_running_service(cli_env, make_client, twilio):
    client = make_client()
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    live = grant_path(client, entry["url"], new_token(twilio, worker_sid=WORKER))
    result = CliRunner().invoke(main, ["revoke", "--link", entry["url_provider"]])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("revoked link ")
    assert code(client.get(live)) == "revoked"
    rec = audit(cli_env)[-1]
    assert rec["via"] == "cli" and rec["operator"] and rec["kind"] == "link"


def test_cli_all_before_now(cli_env, make_client, twilio):
    client = make_client()
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    live = grant_path(client, entry["url"], new_token(twilio, worker_sid=WORKER))
    time.sleep(1.05)  # the grant's issue time has whole seconds; the cut-off must be past it
    result = CliRunner().invoke(main, ["revoke", "--all-before", "now"])
    assert result.exit_code == 0, result.output
    assert code(client.get(live)) == "revoked"


@pytest.mark.parametrize("args", [[], ["--task", TASK_A, "--subject", "a@example.com"]])
def test_cli_wants_exactly_one_target(cli_env, args):
    result = CliRunner().invoke(main, ["revoke", *args])
    assert result.exit_code == 2 and "exactly one" in result.output


def test_cli_refuses_bad_input_and_a_dead_store(cli_env, monkeypatch):
    bad = CliRunner().invoke(main, ["revoke", "--task", "WT1"])
    assert bad.exit_code == 1 and "task_sid" in bad.output
    monkeypatch.setenv("RESOLVER_STORE", f"redis://127.0.0.1:{free_port()}/14")
    down = CliRunner().invoke(main, ["revoke", "--subject", "a@example.com"])
    assert down.exit_code == 1 and "nothing was revoked" in down.output
