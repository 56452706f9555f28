"""Real S3 protocol servers on 127.0.0.1: moto's server mode, each in a process of its own.

moto keeps its auth switch (`INITIAL_NO_AUTH_ACTION_COUNT`) and its buckets in module globals, so two servers
in one process would share both: each runs `ThreadedMotoServer` in a child process. `start_moto(auth=True)`
creates an IAM user with an access key and a read-only policy while auth is still off, then switches
SigV4 verification on (`/moto-api/reset-auth` 0): from then on every request must be signed with that key.
moto cannot check presigned URLs in that mode, so presigned GETs are fetched from a server with `auth=False`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
import pytest
import requests
from botocore.config import Config

REGION = "us-east-1"
BUCKET = "acme-recordings"
READ_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}
_SERVE = ("import sys; from moto.server import ThreadedMotoServer; "
          "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start(); "
          "print(s.get_host_and_port()[1], flush=True); sys.stdin.read(); s.stop()")


@dataclass
class MotoS3:
    url: str
    proc: subprocess.Popen
    log_path: Path
    key_id: str = "testing"
    secret: str = field(default="testing", repr=False)

    def client(self, service: str = "s3", key_id: str | None = None, secret: str | None = None):  # type: ignore[no-untyped-def]
        return botocore.session.Session().create_client(
            service, region_name=REGION, endpoint_url=self.url, aws_access_key_id=key_id or self.key_id,
            aws_secret_access_key=secret or self.secret, config=Config(s3={"addressing_style": "path"}))

    def put(self, key: str, body: bytes, content_type: str = "audio/x-wav", bucket: str = BUCKET) -> None:
        self.client().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)

    def stop(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe:
                pipe.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def s3_toml(name: str, endpoint: str, *, secret_env: str | None = "ARCHIVE_SECRET", prefix: str = "recordings/",  # noqa: S107 - the name of a variable
            content_types: tuple[str, ...] = ("audio/x-wav",), delivery: str = "") -> str:
    """One `s3` source for a sources file; `secret_env=None` leaves credentials to AWS's standard chain."""
    lines = [f"[sources.{name}]", 'kind = "s3"', f'bucket = "{BUCKET}"', f'region = "{REGION}"']
    lines += [f'prefix = "{prefix}"'] if prefix else []
    lines.append(f'endpoint_url = "{endpoint}"')
    if secret_env:
        lines.append(f'credentials = {{ access_key_env = "ARCHIVE_KEY_ID", secret_key_env = "{secret_env}" }}')
    if content_types:
        lines.append("content_types = [" + ", ".join(f'"{t}"' for t in content_types) + "]")
    lines += [f'delivery = "{delivery}"'] if delivery else []
    return "\n" + "\n".join(lines) + "\n"


def start_moto(log_path: Path, *, auth: bool, objects: dict[str, tuple[bytes, str]]) -> MotoS3:
    """A moto server holding BUCKET with `objects`; with `auth`, verifying SigV4 for its one IAM key."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-c", _SERVE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=log)
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    server = MotoS3(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    deadline = time.monotonic() + 20
    while True:
        try:
            requests.get(f"{server.url}/moto-api/", timeout=1)
            break
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    server.client().create_bucket(Bucket=BUCKET)
    for key, (body, ctype) in objects.items():
        server.put(key, body, ctype)
    if auth:
        iam = server.client("iam")
        iam.create_user(UserName="resolver")
        iam.put_user_policy(UserName="resolver", PolicyName="read", PolicyDocument=json.dumps(READ_POLICY))
        key = iam.create_access_key(UserName="resolver")["AccessKey"]
        server.key_id, server.secret = key["AccessKeyId"], key["SecretAccessKey"]
        requests.post(f"{server.url}/moto-api/reset-auth", data=b"0", timeout=5).raise_for_status()
    return server


SID = "RE" + "4" * 32
KEY = f"recordings/{SID}"  # the object key; the link key is the SID (prefix recordings/)
SMALL = b"RIFF....WAVE" + bytes(range(256)) * 8


def sample_objects() -> dict[str, tuple[bytes, str]]:
    from tests.support.env import RECORDING

    return {
        KEY: (RECORDING, "audio/x-wav"),
        "recordings/calls/2026/short.wav": (SMALL, "audio/x-wav"),
        "recordings/empty.wav": (b"", "audio/x-wav"),
        "outside.wav": (b"not under the prefix", "audio/x-wav"),
        "recordingsX/evil.wav": (b"a sibling of the prefix", "audio/x-wav"),
    }


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto server that verifies SigV4 (the IAM key is server.key_id / server.secret)."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "signed.log", auth=True, objects=sample_objects())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def open_(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    """A moto server without auth, holding the same objects: presigned URLs are fetched here."""
    server = start_moto(tmp_path_factory.mktemp("moto") / "open.log", auth=False, objects=sample_objects())
    yield server
    server.stop()


@pytest.fixture
def no_aws_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS's credential chain sees only what a test gives it: no profile files, no instance metadata."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
