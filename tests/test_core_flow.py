"""The whole flow in-process: links issued, resolved with a Flex token, served from each kind of source."""

from __future__ import annotations

import hashlib

from tests.support.env import RECORDING, RECORDING_SID, TRANSCRIPT, WORKER, basic, issue_links, new_token


def drill(entry: dict) -> str:
    return entry["url"]


def test_healthz(client):
    resp = client.get("/healthz")
    assert resp.status_code == 200 and resp.get_json() == {"status": "ok"}


def test_recording_resolves_and_streams_byte_for_byte(client, token, twilio):
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording",
                                     "title": "Call"}])
    assert entry["type"] == "VoiceRecording" and entry["url_provider"].split("/p/")[1] == entry["url"].split(
        "/d/")[1]
    resp = client.post("/api/v1/resolve", json={"url": drill(entry)}, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["mode"] == "stream" and body["type"] == "VoiceRecording" and body["title"] == "Call"
    media = client.get(body["url"].split("5000", 1)[1])
    assert media.status_code == 200
    assert hashlib.sha256(media.data).hexdigest() == hashlib.sha256(RECORDING).hexdigest()
    assert media.headers["Content-Type"] == "audio/mpeg"
    for name in ("Cache-Control", "Referrer-Policy", "X-Content-Type-Options", "Content-Security-Policy"):
        assert name in media.headers
    assert media.headers["Cache-Control"] == "no-store"


def test_transcript_from_http_source(client, token, storage):
    [entry] = issue_links(client, [{"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"}])
    body = client.post("/api/v1/resolve", json={"url": drill(entry)},
                       headers={"Authorization": f"Bearer {token}"}).get_json()
    media = client.get(body["url"].split("5000", 1)[1])
    assert media.status_code == 200 and media.data == TRANSCRIPT
    assert media.headers["Content-Type"].startswith("application/json")


def test_redirect_source_rebuilds_target(client, token):
    [entry] = issue_links(client, [{"source": "crm", "key": "T-1234", "type": "Referenced"}])
    body = client.post("/api/v1/resolve", json={"url": drill(entry)},
                       headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["mode"] == "redirect"
    resp = client.get(body["url"].split("5000", 1)[1])
    assert resp.status_code == 302 and resp.headers["Location"] == "https://crm.example.com/tickets/T-1234"


def test_provider_link_answers_media_url_with_expiry(client, token):
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    path = entry["url_provider"].split("5000", 1)[1]
    resp = client.get(path, headers={"Authorization": basic(token), "Origin": "https://flex.twilio.com"})
    assert resp.status_code == 200, resp.get_json()
    assert resp.headers["Access-Control-Allow-Origin"] == "https://flex.twilio.com"
    assert "?X-Amz-Expires=60" in resp.get_json()["media_url"]


def test_validation_is_cached_per_token(client, twilio):
    tok = new_token(twilio, worker_sid=WORKER)
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    for _ in range(3):
        assert client.post("/api/v1/resolve", json={"url": drill(entry)},
                           headers={"Authorization": f"Bearer {tok}"}).status_code == 200
    assert twilio.validations.count(tok) == 1


def test_drilldown_link_opened_directly_is_401_page(client):
    resp = client.get("/d/anything", headers={"Accept": "text/html"})
    assert resp.status_code == 401 and b"Flex" in resp.data and resp.mimetype == "text/html"


def test_stream_is_audited_when_it_ends(client, token, settings):
    import json

    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    body = client.post("/api/v1/resolve", json={"url": drill(entry)},
                       headers={"Authorization": f"Bearer {token}"}).get_json()
    media = client.get(body["url"].split("5000", 1)[1], headers={"Range": "bytes=0-99"})
    assert media.status_code == 206 and len(media.data) == 100
    media.close()
    with open(settings.audit_log) as f:
        records = [json.loads(line) for line in f]
    served = [r for r in records if r.get("event", "").startswith("grant") and r.get("status") == 206]
    assert served and served[-1]["bytes"] == 100 and served[-1]["complete"] is True


def test_refusal_by_role_names_the_user_in_the_audit(client, twilio, settings):
    import json

    tok = new_token(twilio, roles=["agent"], worker_sid=WORKER, identity="agent@example.com")
    [entry] = issue_links(client, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    assert client.post("/api/v1/resolve", json={"url": drill(entry)},
                       headers={"Authorization": f"Bearer {tok}"}).status_code == 403
    with open(settings.audit_log) as f:
        denied = [json.loads(line) for line in f if '"denied"' in line]
    assert denied[-1]["realm_user_id"] == "agent@example.com" and denied[-1]["reason"] == "role_not_allowed"
