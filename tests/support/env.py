"""What tests share: the test settings, tokens, the local storage fake, and starting gunicorn from the Procfile."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from flask import Flask, abort, request, send_file

from resolver.demo.fake_twilio import FakeTwilio, FlexUser

ACCOUNT_SID = "AC" + "a" * 32


AUTH_TOKEN = "test-auth-token-" + "b" * 16


KEYS = ("k" * 40, "n" * 40)  # oldest first; the last one signs


SERVICE_KEY = "s" * 40


STORAGE_TOKEN = "storage-secret-" + "c" * 20


RECORDING_SID = "RE" + "1" * 32


RECORDING = bytes(range(256)) * 4096  # 1 MiB of every byte value


TRANSCRIPT = json.dumps({"turns": [{"speaker": "agent", "text": "Hello"}]}).encode()


WORKER = "WK" + "2" * 32


ROOT = Path(__file__).resolve().parent.parent.parent


# hostile: real misbehaving upstreams for the streaming tests (hostile, public, tls_files);
# moto_s3: real S3 protocol servers (signed, open_, no_aws_chain)


@dataclass
class Storage:
    """A private media store: bearer auth, Range, conditional requests, like an S3 behind a token."""

    objects: dict[str, tuple[bytes, str]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)

    def app(self) -> Flask:
        app = Flask("storage")

        @app.get("/transcripts/<path:key>")
        def get(key: str):  # type: ignore[no-untyped-def]
            self.requests.append({"key": key, "auth": request.headers.get("Authorization"),
                                  "range": request.headers.get("Range")})
            if request.headers.get("Authorization") != f"Bearer {STORAGE_TOKEN}":
                abort(403)
            if key not in self.objects:
                abort(404)
            body, ctype = self.objects[key]
            return send_file(io.BytesIO(body), mimetype=ctype, conditional=True, etag=f"e-{len(body)}")

        return app


def new_token(twilio: FakeTwilio, roles: list[str] | None = None, **kw: object) -> str:
    token = "eyJ" + secrets.token_urlsafe(24)
    # `identity` here is the user's name (IAM's realm_user_id); IAM's `identity` is its escaped form
    twilio.tokens[token] = FlexUser(realm_user_id=kw.pop("identity", "sup@example.com"),  # type: ignore[arg-type]
                                    roles=roles or ["supervisor"], **kw)  # type: ignore[arg-type]
    return token


def sources_file(tmp_path: Path, storage_url: str) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(f"""
[sources.recordings]
kind = "twilio-recording"
format = "mp3"

[sources.transcripts]
kind = "http"
base_url = "{storage_url}/transcripts/"
auth = {{ type = "bearer", token_env = "TRANSCRIPTS_TOKEN" }}
content_types = ["application/json", "text/plain"]

[sources.crm]
kind = "redirect"
base_url = "https://crm.example.com/tickets/"
""")
    return path


def base_env(tmp_path: Path, twilio: FakeTwilio, storage: Storage) -> dict[str, str]:
    return {
        "RESOLVER_SECRET_KEYS": ",".join(KEYS),
        "RESOLVER_PUBLIC_URL": "http://127.0.0.1:5000",
        "RESOLVER_SOURCES": str(sources_file(tmp_path, storage.url)),  # type: ignore[attr-defined]
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_IAM_URL": twilio.url,  # type: ignore[attr-defined]
        "TWILIO_API_URL": twilio.url,  # type: ignore[attr-defined]
        "TWILIO_TASKROUTER_URL": twilio.url,  # type: ignore[attr-defined]
        "RESOLVER_API_KEYS": SERVICE_KEY,
        "RESOLVER_STORE": f"sqlite:///{tmp_path / 'store.db'}",
        "RESOLVER_AUDIT_LOG": str(tmp_path / "audit.jsonl"),
        "TRANSCRIPTS_TOKEN": STORAGE_TOKEN,
    }


def issue_links(client, media: list[dict], task: str = "WT" + "3" * 32) -> list[dict]:  # type: ignore[no-untyped-def]
    resp = client.post("/api/v1/links", json={"task_sid": task, "media": media},
                       headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert resp.status_code == 200, resp.get_json()
    return resp.get_json()["media"]


def basic(token: str) -> str:
    return "Basic " + base64.b64encode(f"token:{token}".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gunicorn:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def process_env(**extra: str) -> dict[str, str]:
    """The environment for a child process: this interpreter's scripts first on PATH (gunicorn, resolver)."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "PYTHONPATH": str(ROOT), **extra}


def start_gunicorn(env: dict[str, str], tmp_path: Path, name: str = "gunicorn", config_module: str = "") -> Gunicorn:
    """Start the service exactly as the Procfile does, on a free loopback port (`config_module`: another
    gunicorn config in place of the Procfile's, e.g. tests.support.gunicorn_policy)."""
    port = free_port()
    procfile = (ROOT / "Procfile").read_text().split(":", 1)[1].strip()
    if config_module:
        assert "python:resolver.ops.gunicorn_config" in procfile
        procfile = procfile.replace("python:resolver.ops.gunicorn_config", f"python:{config_module}")
    full_env = process_env(**{**env, "RESOLVER_PUBLIC_URL": f"http://127.0.0.1:{port}"}, PORT=str(port),
                           HOST="127.0.0.1")
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(  # noqa: S602 - the Procfile line is ours
            procfile, shell=True, cwd=tmp_path, env=full_env, stdout=out, stderr=subprocess.STDOUT,
            executable="/bin/bash", start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("gunicorn exited: " + log_path.read_text())
        try:
            if requests.get(url + "/healthz", timeout=1).status_code == 200:
                return Gunicorn(url=url, proc=proc, log_path=log_path)
        except (requests.ConnectionError, requests.Timeout):  # workers still booting
            time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    raise RuntimeError("gunicorn did not start: " + log_path.read_text())


def stop_gunicorn(server: Gunicorn) -> None:
    """Quick shutdown. A worker still booting misses the first SIGINT (gunicorn installs its handlers after
    loading the app), so repeat it each second rather than wait out the graceful timeout."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(server.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            break
        try:
            server.proc.wait(timeout=1)
            return
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(server.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.proc.wait(timeout=10)


PYTHON = sys.executable


REDIS_URL = os.environ.get("RESOLVER_TEST_REDIS", "redis://127.0.0.1:6379/14")  # a DB of its own, flushed
