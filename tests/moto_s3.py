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
from dataclasses import dataclass, field
from pathlib import Path

import botocore.session
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
