"""Hostile load from one address beside a legitimate user, against the Procfile's gunicorn (2 workers).

Issue 16: a flood of bad tokens must not reach Twilio beyond the failed-authentication budget, nor lock out a
supervisor whose token already validated; a flood of junk grants must not stop a valid grant streaming.
"""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.ops.test_gunicorn import links, resolve
from tests.support.env import RECORDING, RECORDING_SID, base_env, new_token, start_gunicorn, stop_gunicorn

LIMIT = 30  # RESOLVER_RESOLVE_LIMIT's default count; per hour here, so no window boundary falls in a test
MEDIA_LIMIT = 100
WORKERS = 2


@pytest.fixture
def server(tmp_path, twilio, storage):
    twilio.recordings[RECORDING_SID] = (RECORDING, "audio/mpeg")
    env = {**base_env(tmp_path, twilio, storage), "WEB_CONCURRENCY": str(WORKERS),
           "RESOLVER_RESOLVE_LIMIT": f"{LIMIT}/hour", "RESOLVER_MEDIA_LIMIT": f"{MEDIA_LIMIT}/hour"}
    srv = start_gunicorn(env, tmp_path, name="flood")
    yield srv
    stop_gunicorn(srv)


def test_bad_token_flood_is_bounded_at_iam_and_spares_a_validated_supervisor(server, twilio):
    [entry] = links(server.url, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    supervisor = new_token(twilio)
    assert resolve(server.url, entry["url"], supervisor).status_code == 200  # validated before the flood
    bogus = ["eyJ" + secrets.token_urlsafe(24) for _ in range(200)]
    twilio.iam_delay = 0.05  # every bad token is in flight at once
    try:
        with ThreadPoolExecutor(max_workers=50) as pool:
            statuses = list(pool.map(lambda t: resolve(server.url, entry["url"], t).status_code, bogus))
    finally:
        twilio.iam_delay = 0.0
    asked = sum(twilio.validations.count(t) for t in bogus)
    assert asked <= LIMIT + WORKERS, asked  # without the reservation: 131 of 200 reached IAM
    assert set(statuses) <= {401, 429} and statuses.count(429) >= 200 - LIMIT - WORKERS
    for _ in range(5):  # the flood goes on; the supervisor keeps working
        assert resolve(server.url, entry["url"], "eyJ" + secrets.token_urlsafe(24)).status_code == 429
        assert resolve(server.url, entry["url"], supervisor).status_code == 200
    newcomer = new_token(twilio)  # not validated yet, from the flooded address: refused until the window ends
    assert resolve(server.url, entry["url"], newcomer).status_code == 429
    assert newcomer not in twilio.validations


def test_junk_grant_flood_does_not_stop_a_valid_grant(server, twilio):
    [entry] = links(server.url, [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}])
    grant = resolve(server.url, entry["url"], new_token(twilio)).json()["url"]
    junk = grant.rsplit("/", 1)[0] + "/"
    with requests.Session() as http:
        flood = MEDIA_LIMIT + 50
        statuses = [http.get(junk + secrets.token_urlsafe(40), timeout=5).status_code for _ in range(flood)]
        assert statuses.count(429) >= flood - MEDIA_LIMIT  # the junk budget ran out
        resp = http.get(grant, headers={"Range": "bytes=0-1023"}, timeout=5)
    assert resp.status_code == 206 and resp.content == RECORDING[:1024]
