"""Operations in-process: request ids everywhere, an audit record for every outcome, metrics at /metrics."""

from __future__ import annotations

import json
import logging

import pytest
from prometheus_client import REGISTRY

from resolver import config, create_app
from resolver.audit import trail as audit_trail
from tests.support.env import RECORDING, RECORDING_SID, TRANSCRIPT, basic, issue_links

METRICS_TOKEN = "metrics-token-" + "m" * 30
FLEX = "https://flex.twilio.com"


@pytest.fixture
def app(env):
    app = create_app(config.from_env({**env, "RESOLVER_METRICS_TOKEN": METRICS_TOKEN}))
    app.config["TESTING"] = True
    yield app
    app.extensions["resolver"].close()


def records(env) -> list[dict]:
    with open(env["RESOLVER_AUDIT_LOG"]) as f:
        return [r for r in map(json.loads, f) if r["event"] not in ("chain_start", "chain_end")]


def path_of(url: str) -> str:
    return url.split("5000", 1)[1]


def fetch(client, url: str, method: str = "GET", **headers: str):
    """A media request read to the end and closed, as a server does (the 'served' record is written then)."""
    resp = client.open(path_of(url) if url.startswith("http") else url, method=method, headers=headers)
    resp.get_data()
    resp.close()
    return resp


def entries(client) -> list[dict]:
    return issue_links(client, [
        {"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording", "title": "Call"},
        {"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"},
        {"source": "crm", "key": "T-1", "type": "Referenced"},
    ])


def resolve(client, entry: dict, token: str, **headers: str):
    return client.post("/api/v1/resolve", json={"url": entry["url"]},
                       headers={"Authorization": f"Bearer {token}", **headers})


# --- request ids ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/healthz", "/nowhere", "/m/not-a-grant", "/d/whatever"])
def test_every_response_has_a_request_id(client, path):
    rid = client.get(path).headers["X-Request-Id"]
    assert len(rid) == 16 and int(rid, 16) >= 0


@pytest.mark.parametrize(("given", "kept"), [
    ("trace-0123456789abcdef", True),
    ("short", False),
    ("x" * 65, False),
    ("abc def ghi jkl", False),
    ("abcdefgh\u00e9", False),
    ("abcdefgh\" injected=1", False),
])
def test_client_request_id_only_when_strict(client, given, kept):
    rid = client.get("/healthz", headers={"X-Request-Id": given}).headers["X-Request-Id"]
    assert (rid == given) is kept


def test_request_id_is_in_audit_records_and_log_lines(client, env, token, twilio, capsys):
    entry = entries(client)[0]
    resp = resolve(client, entry, token, **{"X-Request-Id": "trace-resolve-0001"})
    assert resp.headers["X-Request-Id"] == "trace-resolve-0001"
    media = fetch(client, resp.get_json()["url"], **{"X-Request-Id": "trace-media-00002"})
    assert media.data == RECORDING
    twilio.iam_status = 500  # Twilio trouble: the resolver logs an error line for operators
    try:
        failed = resolve(client, entry, "eyJnot-cached-token", **{"X-Request-Id": "trace-failed-0003"})
    finally:
        twilio.iam_status = None
    assert failed.status_code == 503
    by_id = {r["request_id"]: r for r in records(env)}
    assert by_id["trace-resolve-0001"]["event"] == "resolve"
    assert by_id["trace-media-00002"]["event"] == "grant" and by_id["trace-media-00002"]["bytes"] == len(RECORDING)
    assert by_id["trace-failed-0003"]["reason"] == "validation_unavailable"
    assert all(len(r["request_id"]) >= 8 for r in records(env))
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "Twilio token validation answered HTTP 500" in x)
    assert "Z ERROR [trace-failed-0003] resolver.flex_auth:" in line


def test_log_lines_never_carry_tokens(client, capsys):
    logging.getLogger("resolver.test").warning("failed for /m/%s and %s", "eyJabcdefgh.sig", "Bearer eyJhb.c.d")
    err = capsys.readouterr().err
    assert "eyJ" not in err and "/m/[redacted]" in err


# --- audit records for every outcome --------------------------------------------------------------------

def test_every_outcome_is_audited_and_the_trail_verifies(app, client, env, token):
    rec, doc, crm = entries(client)
    grant = resolve(client, rec, token).get_json()["url"]
    assert fetch(client, grant, Range="bytes=10-19").status_code == 206
    assert fetch(client, grant, "HEAD").status_code == 200
    assert fetch(client, resolve(client, doc, token).get_json()["url"]).data == TRANSCRIPT
    assert fetch(client, resolve(client, crm, token).get_json()["url"]).status_code == 302
    assert resolve(client, rec, "eyJunknown-token").status_code == 401
    assert client.get(rec["url_provider"].split("5000", 1)[1],
                      headers={"Authorization": basic(token), "Origin": FLEX}).status_code == 200
    assert client.get(path_of(grant)[:-4] + "AAAA").status_code == 403
    assert client.get(path_of(grant), headers={"Origin": "https://flex.twilio.com.evil.example"}).status_code == 403
    assert client.get(path_of(rec["url"]), headers={"Accept": "text/html"}).status_code == 401
    app.extensions["resolver"].audit.close()

    got = [(r["event"], r.get("outcome"), r.get("reason") or "") for r in records(env)]
    assert got == [
        ("link", "issued", ""), ("link", "issued", ""), ("link", "issued", ""),
        ("resolve", "allowed", ""), ("grant", "started", ""), ("grant", "served", ""),
        ("grant", "started", ""), ("grant", "served", ""),
        ("resolve", "allowed", ""), ("grant", "started", ""), ("grant", "served", ""),
        ("resolve", "allowed", ""), ("grant", "redirected", ""),
        ("resolve", "denied", "invalid_token"),
        ("resolve", "allowed", ""),
        ("grant", "refused", "invalid_grant"),
        ("grant", "refused", "origin_not_allowed"),
        ("drilldown", "refused", "open_in_flex"),
    ]
    trail = records(env)
    started, ranged = trail[4], trail[5]
    assert started | {"range": "bytes=10-19", "method": "GET", "realm_user_id": "sup@example.com",
                      "key": RECORDING_SID} == started
    assert ranged | {"status": 206, "bytes": 10, "range": "bytes=10-19", "complete": True, "method": "GET",
                     "realm_user_id": "sup@example.com", "task_sid": "WT" + "3" * 32, "key": RECORDING_SID} == ranged
    assert trail[7]["method"] == "HEAD" and trail[14]["via"] == "provider"
    assert all(r.get("client") == "127.0.0.1" for r in trail)
    report = audit_trail.verify([env["RESOLVER_AUDIT_LOG"]])
    assert report.ok and not report.open_chains, report.text()


# --- metrics --------------------------------------------------------------------------------------------

def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize("auth", [None, "Bearer wrong", f"Basic {METRICS_TOKEN}", f"Bearer {METRICS_TOKEN}x"])
def test_metrics_need_the_token(client, auth):
    resp = client.get("/metrics", headers={"Authorization": auth} if auth else {})
    assert resp.status_code == 401 and b"resolver_" not in resp.data


def test_metrics_are_404_without_a_configured_token(env):
    app = create_app(config.from_env(env))
    try:
        assert app.test_client().get("/metrics", headers={"Authorization": "Bearer "}).status_code == 404
    finally:
        app.extensions["resolver"].close()


def flow_counts() -> dict[str, float]:
    return {
        "allowed": sample("resolver_resolves_total", via="resolve", outcome="allowed"),
        "denied": sample("resolver_denials_total", event="resolve", reason="invalid_token"),
        "served": sample("resolver_grants_total", outcome="served"),
        "bytes": sample("resolver_bytes_streamed_total"),
        "hit": sample("resolver_validation_cache_total", result="hit"),
        "miss": sample("resolver_validation_cache_total", result="miss"),
        "upstream": sample("resolver_upstream_seconds_count", upstream="recordings"),
        "iam": sample("resolver_upstream_seconds_count", upstream="twilio_iam"),
    }


def test_metrics_count_the_flow(client, token):
    before = flow_counts()
    rec = entries(client)[0]
    for _ in range(2):
        grant = resolve(client, rec, token).get_json()["url"]
        assert fetch(client, grant).data == RECORDING
    assert resolve(client, rec, "eyJunknown-token").status_code == 401
    resp = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert resp.status_code == 200 and resp.mimetype == "text/plain"
    assert b"resolver_bytes_streamed_total" in resp.data
    after = {
        "allowed": 2, "denied": 1, "served": 2, "bytes": 2 * len(RECORDING), "hit": 1, "miss": 2,
        "upstream": 2, "iam": 2,
    }
    now = flow_counts()
    assert {k: now[k] - before[k] for k in now} == after

