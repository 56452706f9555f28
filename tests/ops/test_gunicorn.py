"""The service as operators run it: gunicorn from the Procfile, over real HTTP, through docs/http-api.md's endpoints."""

from __future__ import annotations

import hashlib

import pytest
import requests

from tests.support.env import RECORDING, RECORDING_SID, SERVICE_KEY, TRANSCRIPT, basic

FLEX = "https://flex.twilio.com"


def links(base: str, media: list[dict]) -> list[dict]:
    resp = requests.post(f"{base}/api/v1/links", json={"task_sid": "WT" + "4" * 32, "media": media},
                         headers={"Authorization": f"Bearer {SERVICE_KEY}"}, timeout=5)
    assert resp.status_code == 200, resp.text
    return resp.json()["media"]


def resolve(base: str, url: str, token: str) -> requests.Response:
    return requests.post(f"{base}/api/v1/resolve", json={"url": url},
                         headers={"Authorization": f"Bearer {token}", "Origin": FLEX}, timeout=5)


def test_every_endpoint_under_gunicorn(gunicorn, token):
    base = gunicorn.url
    assert requests.get(f"{base}/healthz", timeout=5).json() == {"status": "ok"}
    rec, doc, crm = links(base, [
        {"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording", "title": "Call"},
        {"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw", "title": "Transcript"},
        {"source": "crm", "key": "T-1", "type": "Referenced"},
    ])
    assert rec["url"].startswith(base + "/d/") and rec["url_provider"].startswith(base + "/p/")

    # the Flex plugin resolves a drilldown link, then the browser streams the grant with a seek
    grant = resolve(base, rec["url"], token)
    assert grant.status_code == 200 and grant.headers["Access-Control-Allow-Origin"] == FLEX
    media_url = grant.json()["url"]
    full = requests.get(media_url, timeout=5)
    assert full.status_code == 200 and hashlib.sha256(full.content).digest() == hashlib.sha256(RECORDING).digest()
    part = requests.get(media_url, headers={"Range": "bytes=1000-1999"}, timeout=5)
    assert part.status_code == 206 and part.content == RECORDING[1000:2000]
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{len(RECORDING)}"
    head = requests.head(media_url, timeout=5)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(RECORDING)) and not head.content

    # the Insights player's url_provider, with its preflight
    pre = requests.options(rec["url_provider"], headers={"Origin": FLEX, "Access-Control-Request-Method": "GET",
                                                         "Access-Control-Request-Headers": "authorization"}, timeout=5)
    assert pre.status_code == 204 and pre.headers["Access-Control-Allow-Origin"] == FLEX
    provided = requests.get(rec["url_provider"], headers={"Authorization": basic(token), "Origin": FLEX}, timeout=5)
    assert provided.status_code == 200 and "X-Amz-Expires=" in provided.json()["media_url"]
    played = requests.get(provided.json()["media_url"], headers={"Origin": FLEX, "Range": "bytes=0-9"}, timeout=5)
    assert played.status_code == 206 and played.headers["Access-Control-Allow-Origin"] == FLEX

    doc_grant = resolve(base, doc["url"], token).json()["url"]
    assert requests.get(doc_grant, timeout=5).content == TRANSCRIPT
    crm_grant = resolve(base, crm["url"], token).json()
    assert crm_grant["mode"] == "redirect"
    moved = requests.get(crm_grant["url"], allow_redirects=False, timeout=5)
    assert moved.status_code == 302 and moved.headers["Location"] == "https://crm.example.com/tickets/T-1"

    bare = requests.get(rec["url"], headers={"Accept": "text/html"}, timeout=5)
    assert bare.status_code == 401 and "Flex" in bare.text and RECORDING[:64] not in bare.content
    assert requests.delete(f"{base}/healthz", timeout=5).status_code == 405
    assert requests.post(media_url, timeout=5).status_code == 405


@pytest.mark.parametrize("mangle", ["", "a.b", "a.b.c", "flip", "truncate", "junk", "link-as-grant"])
def test_bad_grants_are_403_under_gunicorn(gunicorn, token, mangle):
    rec = links(gunicorn.url, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])[0]
    good = resolve(gunicorn.url, rec["url"], token).json()["url"].rsplit("/", 1)[1]
    bad = {"": "", "a.b": "a.b", "a.b.c": "a.b.c", "flip": good[:5] + ("x" if good[5] != "x" else "y") + good[6:],
           "truncate": good[:-3], "junk": "j" * 5000, "link-as-grant": rec["url"].rsplit("/", 1)[1]}[mangle]
    resp = requests.get(f"{gunicorn.url}/m/{bad}", timeout=5)
    # an empty grant is no route (404); 5 KB of junk is over the request-line limit (414)
    assert resp.status_code == {"": 404, "junk": 414}.get(mangle, 403)
    assert RECORDING[:64] not in resp.content


def test_workers_are_fully_monkey_patched(gunicorn):
    """ssl imported before gevent patched it would leave HTTPS upstream reads blocking a whole worker."""
    requests.get(f"{gunicorn.url}/healthz", timeout=5)
    assert "MonkeyPatchWarning" not in gunicorn.log()


def test_access_log_never_holds_links_or_grants(gunicorn, token):
    rec = links(gunicorn.url, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])[0]
    grant = resolve(gunicorn.url, rec["url"], token).json()["url"]
    requests.get(grant + "?X-Amz-Expires=60", timeout=5)
    requests.get(rec["url"], timeout=5)
    log = gunicorn.log()
    assert "/m/<grant_token>" in log and "/api/v1/resolve" in log
    for secret in (rec["url"].rsplit("/", 1)[1], grant.rsplit("/", 1)[1], token, "X-Amz-Expires"):
        assert secret not in log
