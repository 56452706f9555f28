"""Measure 7: a 512 MiB object through an `s3` stream grant vs a direct signed GET of it, same server, same run.

The store is moto's S3 server (`moto[server]`, a child process on 127.0.0.1) with SigV4 verification on: the
resolver's source signs with an IAM key the server holds, and the baseline is a GET signed the same way by
botocore and read by the same bench client. The difference is the resolver's whole path (grant check, signing,
audit, streaming through gunicorn); the store's own speed is in both. CPU of the resolver's process tree per
GiB is reported. The issue sets no target for this row: it is reported.

`python -m bench.s3` runs the server child (it prints `PORT <n>`); `S3Store` fills and arms it from the parent.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys

from . import procs
from .client import fetch

MiB, GiB = 1 << 20, 1 << 30
SIZE = 512 * MiB
MIN_REPS = 3
BUCKET = "bench-recordings"
KEY = "recordings/RE" + "be" * 16
REGION = "us-east-1"
READ_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}


class S3Store:
    """The bucket with one SIZE-byte object, then SigV4 on; `key_id`/`secret` are the IAM key it checks."""

    def __init__(self, url: str, size: int) -> None:
        import botocore.session
        import requests
        from botocore.config import Config

        self.url, self.size = url, size
        _wait(url)
        self._session = botocore.session.Session()
        s3 = self._client("s3", "testing", "testing", Config(s3={"addressing_style": "path"}))
        s3.create_bucket(Bucket=BUCKET)
        self.body_sha = _fill(s3, size)
        iam = self._client("iam", "testing", "testing", None)
        iam.create_user(UserName="bench")
        iam.put_user_policy(UserName="bench", PolicyName="read", PolicyDocument=json.dumps(READ_POLICY))
        key = iam.create_access_key(UserName="bench")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], key["SecretAccessKey"]
        requests.post(f"{url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()

    def _client(self, service: str, key_id: str, secret: str, config):  # type: ignore[no-untyped-def]
        return self._session.create_client(service, region_name=REGION, endpoint_url=self.url,
                                           aws_access_key_id=key_id, aws_secret_access_key=secret, config=config)

    def source(self) -> str:
        return (f'\n[sources.archive]\nkind = "s3"\nbucket = "{BUCKET}"\nregion = "{REGION}"\n'
                f'prefix = "recordings/"\nendpoint_url = "{self.url}"\n'
                'credentials = { access_key_env = "BENCH_S3_KEY_ID", secret_key_env = "BENCH_S3_SECRET" }\n'
                'content_types = ["audio/x-wav"]\n')

    def env(self) -> dict[str, str]:
        return {"BENCH_S3_KEY_ID": self.key_id, "BENCH_S3_SECRET": self.secret}

    def signed_get(self) -> tuple[str, dict[str, str]]:
        """The object's URL and the headers of a GET signed for it (SigV4, by botocore), Host left to the client."""
        from botocore.auth import S3SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import ReadOnlyCredentials

        url = f"{self.url}/{BUCKET}/{KEY}"
        request = AWSRequest(method="GET", url=url, headers={"Accept-Encoding": "identity"})
        S3SigV4Auth(ReadOnlyCredentials(self.key_id, self.secret, None), "s3", REGION).add_auth(request)
        return url, {k: v for k, v in request.headers.items() if k.lower() != "host"}


def _wait(url: str, timeout: float = 20.0) -> None:
    import time

    import requests

    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(f"{url}/moto-api/", timeout=1)
            return
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _fill(s3, size: int) -> str:  # type: ignore[no-untyped-def]
    """Upload SIZE pseudo-random bytes (one put; moto keeps them in a spooled file)."""
    import hashlib

    body = os.urandom(size)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=body, ContentType="audio/x-wav")
    return hashlib.sha256(body).hexdigest()


def bench_s3(stack, report, reps: int) -> None:  # type: ignore[no-untyped-def]
    store: S3Store = stack.s3
    size = store.size
    grant = stack.grant("archive", KEY.removeprefix("recordings/"))
    runs = []
    for i in range(max(reps, MIN_REPS)):
        url, headers = store.signed_get()  # signed now: X-Amz-Date stays fresh
        d = fetch(url, headers=headers, timeout=600)
        c0 = procs.tree_cpu(stack.master)
        r = fetch(grant, timeout=600)
        c1 = procs.tree_cpu(stack.master)
        if d.status != 200 or r.status != 200 or d.received != size or r.received != size:
            raise SystemExit(f"s3: short download (direct {d.status} {d.received}, grant {r.status} {r.received})")
        cpu = sum(procs.cpu_delta(c0, c1).values()) / (size / GiB)
        runs.append({"direct_s": d.wall, "grant_s": r.wall, "ratio": r.wall / d.wall, "cpu_s_per_gib": cpu})
        print(f"  7. s3 rep {i + 1}: direct {d.wall:.3f}s grant {r.wall:.3f}s ratio {r.wall / d.wall:.2f}; "
              f"resolver CPU {cpu:.2f} s/GiB", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    report.details["7. s3"] = {"size_bytes": size, "runs": runs}
    mib = size / MiB
    report.add(f"7. s3 object {mib:.0f} MiB via stream grant vs direct signed GET (moto, SigV4 checked)",
               f"direct {med['direct_s']:.2f} s ({mib / med['direct_s']:.0f} MiB/s)",
               f"{med['grant_s']:.2f} s ({mib / med['grant_s']:.0f} MiB/s)",
               f"{med['ratio']:.2f}x direct", "reported", None)
    report.add("7. s3: server CPU", "", f"{med['cpu_s_per_gib']:.2f} s/GiB", "", "", None)


def main() -> None:
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        print("moto[server] is not installed (pip install -e '.[test]')", file=sys.stderr)
        raise SystemExit(1) from None
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"PORT {server.get_host_and_port()[1]}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.pause()


if __name__ == "__main__":
    main()
