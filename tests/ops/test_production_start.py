"""Production start as operators do it: the Procfile line as written, many workers, a fresh store, a burst."""

from __future__ import annotations

import threading
import time

import pytest
import requests

from tests.ops.test_gunicorn import FLEX
from tests.support.env import RECORDING_SID, SERVICE_KEY, WORKER, base_env, new_token, start_gunicorn, stop_gunicorn

LINKS = {"task_sid": "WT" + "4" * 32,
         "media": [{"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"}]}


@pytest.mark.parametrize("boot", [1, 2])
def test_eight_workers_boot_on_a_fresh_sqlite_store(tmp_path, twilio, storage, boot):
    env = {**base_env(tmp_path, twilio, storage), "WEB_CONCURRENCY": "8",
           "RESOLVER_STORE": f"sqlite:///{tmp_path / f'fresh-{boot}' / 'store.db'}"}
    server = start_gunicorn(env, tmp_path)
    try:
        deadline = time.monotonic() + 30
        while server.log().count("Booting worker") < 8 and time.monotonic() < deadline:
            time.sleep(0.1)
        settle = time.monotonic() + 2  # every worker builds its app (and opens the store) after booting
        while time.monotonic() < settle:
            assert requests.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert server.proc.poll() is None, server.log()  # a worker that failed to boot stops the master
        resp = requests.post(f"{server.url}/api/v1/links", timeout=5, json=LINKS,
                             headers={"Authorization": f"Bearer {SERVICE_KEY}"})
        assert resp.status_code == 200
        log = server.log()  # read before stopping: gevent prints SystemExit noise when the group is interrupted
    finally:
        stop_gunicorn(server)
    assert log.count("Booting worker") == 8, log
    assert "Traceback" not in log and "failed to boot" not in log.lower() and "locked" not in log, log


def test_sixteen_cold_concurrent_resolves_of_one_token_cost_one_validation(gunicorn, twilio):
    """Two workers, one token nobody has validated yet, sixteen resolves at the same instant."""
    [entry] = requests.post(f"{gunicorn.url}/api/v1/links", timeout=5, json=LINKS,
                            headers={"Authorization": f"Bearer {SERVICE_KEY}"}).json()["media"]
    token = new_token(twilio, worker_sid=WORKER)
    start, statuses = threading.Barrier(16), []

    def resolve() -> None:
        start.wait()
        statuses.append(requests.post(f"{gunicorn.url}/api/v1/resolve", json={"url": entry["url"]}, timeout=20,
                                      headers={"Authorization": f"Bearer {token}", "Origin": FLEX}).status_code)

    twilio.iam_delay = 0.3  # Twilio's answer takes a while: every resolve arrives before it
    try:
        threads = [threading.Thread(target=resolve) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        twilio.iam_delay = 0.0
    assert statuses == [200] * 16
    assert twilio.validations.count(token) == 1
