"""Production smoke test: the Procfile's exact command, from a wheel installed with no extras.

Run with the clean venv's python (`.ci/run` builds it). It starts the demo's fake Twilio (IAM and
recordings) in this process, starts `web:` from the Procfile under bash with that venv first on PATH,
issues a link with the service key, resolves it as a Flex supervisor and streams the grant. Any
ImportError, boot failure or wrong byte fails the run with the server's log.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from resolver.demo.fake_twilio import FakeTwilio, FlexUser
from resolver.demo.server import ServerThread

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT, AUTH, KEY = "AC" + "1" * 32, secrets.token_hex(16), secrets.token_urlsafe(32)
RECORDING, AUDIO = "RE" + "2" * 32, b"ID3" + secrets.token_bytes(200_000)
FLEX = "https://flex.twilio.com"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    twilio = FakeTwilio(account_sid=ACCOUNT, auth_token=AUTH, recordings={RECORDING: (AUDIO, "audio/mpeg")})
    token = "eyJ" + secrets.token_urlsafe(24)
    twilio.tokens[token] = FlexUser(realm_user_id="smoke@example.com", roles=["supervisor"])
    work, port = Path(tempfile.mkdtemp(prefix="resolver-smoke-")), free_port()
    (work / "sources.toml").write_text('[sources.recordings]\nkind = "twilio-recording"\nformat = "mp3"\n')
    with ServerThread(twilio.app()) as fake:
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "PORT": str(port), "HOST": "127.0.0.1",
               "WEB_CONCURRENCY": "2", "RESOLVER_SECRET_KEYS": secrets.token_urlsafe(32),
               "RESOLVER_PUBLIC_URL": f"http://127.0.0.1:{port}", "RESOLVER_SOURCES": str(work / "sources.toml"),
               "TWILIO_ACCOUNT_SID": ACCOUNT, "TWILIO_AUTH_TOKEN": AUTH, "TWILIO_IAM_URL": fake.url,
               "TWILIO_API_URL": fake.url, "TWILIO_TASKROUTER_URL": fake.url, "RESOLVER_API_KEYS": KEY,
               "RESOLVER_STORE": f"sqlite:///{work / 'store.db'}", "RESOLVER_AUDIT_LOG": str(work / "audit.jsonl")}
        command = (ROOT / "Procfile").read_text().split("web:", 1)[1].splitlines()[0].strip()
        log = work / "gunicorn.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(command, shell=True, cwd=work, env=env, stdout=out,  # noqa: S602 - our Procfile
                                      stderr=subprocess.STDOUT, executable="/bin/bash", start_new_session=True)
        try:
            check(f"http://127.0.0.1:{port}", token, server)
        except Exception as e:  # noqa: BLE001 - report anything with the server's log
            print(f"smoke: FAILED: {e}\n--- gunicorn log ---\n{log.read_text()}", file=sys.stderr)
            return 1
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    print(f"smoke: ok: {command!r} served {len(AUDIO)} bytes of a grant from a wheel with no extras")
    return 0


def check(base: str, token: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the Procfile command exited with {server.returncode}")
        try:
            if requests.get(f"{base}/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("no /healthz answer in 30 s")
        time.sleep(0.2)
    links = requests.post(f"{base}/api/v1/links", timeout=10, headers={"Authorization": f"Bearer {KEY}"},
                          json={"task_sid": "WT" + "3" * 32,
                                "media": [{"source": "recordings", "key": RECORDING, "type": "VoiceRecording"}]})
    links.raise_for_status()
    link = links.json()["media"][0]["url"]
    grant = requests.post(f"{base}/api/v1/resolve", json={"url": link}, timeout=10,
                          headers={"Authorization": f"Bearer {token}", "Origin": FLEX})
    grant.raise_for_status()
    media = requests.get(grant.json()["url"], timeout=30)
    media.raise_for_status()
    if media.content != AUDIO:
        raise RuntimeError(f"the grant streamed {len(media.content)} bytes, not the recording's {len(AUDIO)}")


if __name__ == "__main__":
    sys.exit(main())
