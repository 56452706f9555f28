"""The whole flow under gunicorn, then every line it wrote is searched for secrets and the trail verified.

Captured: gunicorn's stdout and stderr (access log, error log, the app's log lines) and the audit file.
Searched for: the Flex token (and its Basic form), both signing keys, every link and grant token, the
Twilio auth token, the storage token, the service key and the metrics token. None may appear.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import requests
from flask import Flask, Response

from resolver.demo.server import ServerThread
from tests.support.env import (
    AUTH_TOKEN,
    KEYS,
    RECORDING,
    RECORDING_SID,
    SERVICE_KEY,
    STORAGE_TOKEN,
    base_env,
    basic,
    process_env,
    start_gunicorn,
    stop_gunicorn,
)

METRICS_TOKEN = "metrics-" + "q" * 40
FLEX = "https://flex.twilio.com"
TASK = "WT" + "5" * 32


@pytest.fixture(scope="module")
def broken_store():
    """A store that promises 100000 bytes and delivers 1000: the stream must abort, loudly but cleanly."""
    app = Flask("broken")

    @app.get("/media/<path:key>")
    def media(key):
        return Response(iter([b"x" * 1000]), headers={"Content-Length": "100000"}, mimetype="audio/mpeg")

    with ServerThread(app) as server:
        yield server.url + "/media/"


def resolver_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from resolver.cli import main; main()", *args],
                          env=process_env(), capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def run(tmp_path_factory, twilio, storage, broken_store):
    """Run the flow once; hand the tests what was captured and which secrets were in play."""
    from tests.support.env import new_token

    tmp = tmp_path_factory.mktemp("secrets")
    env = base_env(tmp, twilio, storage)
    with open(env["RESOLVER_SOURCES"], "a") as f:
        f.write(f'\n[sources.broken]\nkind = "http"\nbase_url = "{broken_store}"\n'
                'content_types = ["audio/mpeg"]\n')
    env["RESOLVER_METRICS_TOKEN"] = METRICS_TOKEN
    server = start_gunicorn(env, tmp)
    base = server.url
    token = new_token(twilio, worker_sid="WK" + "2" * 32)
    secrets = {"flex token": token, "flex basic": basic(token).split()[1], "signing key 1": KEYS[0],
               "signing key 2": KEYS[1], "twilio auth token": AUTH_TOKEN, "storage token": STORAGE_TOKEN,
               "service key": SERVICE_KEY, "metrics token": METRICS_TOKEN}
    metrics_bodies = []
    try:
        entries = requests.post(f"{base}/api/v1/links", headers={"Authorization": f"Bearer {SERVICE_KEY}"},
                                json={"task_sid": TASK, "media": [
                                    {"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"},
                                    {"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"},
                                    {"source": "crm", "key": "T-1", "type": "Referenced"},
                                    {"source": "broken", "key": "b.mp3", "type": "Raw"},
                                ]}, timeout=5).json()["media"]
        grants = []
        for n, entry in enumerate(entries):
            secrets[f"link {n}"] = entry["url"].rsplit("/", 1)[1]
            resp = requests.post(f"{base}/api/v1/resolve", json={"url": entry["url"]},
                                 headers={"Authorization": f"Bearer {token}", "Origin": FLEX}, timeout=5)
            grants.append(resp.json()["url"])
        provided = requests.get(entries[0]["url_provider"], headers={"Authorization": basic(token), "Origin": FLEX},
                                timeout=5).json()["media_url"]
        grants.append(provided.split("?")[0])
        for n, grant in enumerate(grants):
            secrets[f"grant {n}"] = grant.rsplit("/", 1)[1]
        assert requests.get(grants[0], timeout=5).content == RECORDING
        assert requests.get(provided, headers={"Range": "bytes=0-99", "Origin": FLEX}, timeout=5).status_code == 206
        assert requests.head(grants[0], timeout=5).status_code == 200
        assert requests.get(grants[1], timeout=5).status_code == 200
        assert requests.get(grants[2], allow_redirects=False, timeout=5).status_code == 302
        with pytest.raises(requests.exceptions.ChunkedEncodingError):
            requests.get(grants[3], timeout=5).content  # noqa: B018 - the body is the point
        assert requests.get(grants[0] + "x", timeout=5).status_code == 403
        assert requests.get(grants[0], headers={"Origin": "null"}, timeout=5).status_code == 403
        assert requests.post(f"{base}/api/v1/resolve", json={"url": entries[0]["url"]},
                             headers={"Authorization": f"Bearer {token}x"}, timeout=5).status_code == 401
        assert requests.get(entries[0]["url"] + "?X-Amz-Expires=5", timeout=5).status_code == 401
        for _ in range(6):  # several workers: every answer must sum all of them
            resp = requests.get(f"{base}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=5)
            metrics_bodies.append(resp.text)
        assert requests.get(f"{base}/metrics", timeout=5).status_code == 401
    finally:
        stop_gunicorn(server)
    return {"log": server.log(), "audit": tmp / "audit.jsonl", "secrets": secrets, "metrics": metrics_bodies}


def test_no_secret_in_any_output(run):
    outputs = {"gunicorn stdout/stderr": run["log"], "audit trail": run["audit"].read_text()}
    assert len(outputs["gunicorn stdout/stderr"].splitlines()) > 20 and run["audit"].stat().st_size > 0
    leaks = [f"{what} in {where}" for where, text in outputs.items() for what, value in run["secrets"].items()
             if value in text]
    assert leaks == []


def test_logs_show_routes_and_request_ids_not_paths(run):
    log = run["log"]
    access = [line for line in log.splitlines() if '"GET /m/<grant_token>"' in line]
    assert len(access) >= 5 and all("rid=" in line and len(line.split("rid=")[1]) >= 16 for line in access)
    assert "X-Amz-Expires" not in log


def test_audit_trail_verifies_and_a_deleted_line_is_caught(run, tmp_path):
    records = [json.loads(line) for line in run["audit"].read_text().splitlines()]
    served = [r for r in records if r["event"] == "grant" and r.get("outcome") == "served"]
    assert {(r["status"], r["complete"]) for r in served} >= {(200, True), (206, True), (200, False)}
    assert all(r.get("request_id") for r in records if r["event"] not in ("chain_start", "chain_end"))
    ok = resolver_cli("audit", "verify", "--require-end", str(run["audit"]))  # workers closed their chains
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1].startswith("OK: "), ok.stdout + ok.stderr
    lines = run["audit"].read_text().splitlines()
    cut = next(i for i, r in enumerate(records) if r["event"] == "resolve" and r["outcome"] == "allowed")
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines[:cut] + lines[cut + 1:]) + "\n")
    bad = resolver_cli("audit", "verify", str(tampered))
    assert bad.returncode == 1
    # the gap shows at the writer's next record (workers interleave their lines); line numbers are 1-based
    writer = records[cut]["writer"]
    after = next(i for i in range(cut + 1, len(records)) if records[i]["writer"] == writer)
    seq = records[cut]["seq"]
    assert f"{tampered}:{after}: writer {writer}: records seq {seq} missing (deleted?)" in bad.stdout, bad.stdout


def test_metrics_sum_all_workers(run):
    def value(body: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines() if line.startswith(name + " ")
                   or line.startswith(name + "{"))

    totals = {value(body, "resolver_bytes_streamed_total") for body in run["metrics"]}
    assert len(totals) == 1 and totals.pop() >= len(RECORDING) + 100
    assert all(value(body, "resolver_grants_total") >= 6 for body in run["metrics"])



def test_settings_repr_shows_no_secret(settings):
    text = repr(settings)
    assert "account_sid=" in text
    for secret in (*KEYS, AUTH_TOKEN, SERVICE_KEY, STORAGE_TOKEN):
        assert secret not in text
