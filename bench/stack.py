"""Start and stop everything a benchmark talks to, all on 127.0.0.1, all state in one temp dir.

- the local upstream (`bench.upstream`, a child process), and a bare TCP relay to it (`bench.relay`),
- the same upstream over HTTPS (a CA and certificate made with openssl at start), and a bare relay that
  speaks TLS to it (the HTTPS floor),
- nginx serving real files as a second upstream, plain and HTTPS, with a bare relay to each (when a measure
  asks for it with `nginx_upstream_bytes` or `nginx_slow_bytes`, and nginx is installed),
- nginx `proxy_pass` to every upstream (the peer, `bench.nginx`), unless nginx is not installed,
- the fake Twilio IAM (`bench.fake_iam`, a child process),
- the resolver under gunicorn, started from the Procfile's `web:` command line (same config module, same
  worker class and count, config module) with only HOST/PORT and the settings below in its environment; the
  bench CA for the HTTPS upstreams is named in REQUESTS_CA_BUNDLE, as an operator names a private store's CA.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import nginx, procs
from .client import fetch
from .s3 import S3Store
from .upstream import expected

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
ACCOUNT_SID = "AC" + "be" * 16
TASK_SID = "WT" + "be" * 16


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def procfile_command(root: Path = ROOT) -> list[str]:
    """The Procfile's web command as argv, with `gunicorn` taken from this interpreter's venv."""
    for line in (root / "Procfile").read_text().splitlines():
        if line.startswith("web:"):
            argv = shlex.split(line[len("web:"):])
            if argv[0] == "gunicorn":
                argv[0] = str(Path(sys.executable).parent / "gunicorn")
            return argv
    raise SystemExit("Procfile has no web: line")


def _start_child(argv: list[str], log: Path, env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    """Start a child that prints `PORT <n>` first; return it and the port."""
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=open(log, "wb"),  # noqa: SIM115
                            env=env, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("PORT "):
        proc.kill()
        raise SystemExit(f"{argv[2]} did not start: see {log}")
    return proc, int(line.split()[1])


def make_cert(tmp: Path) -> tuple[str, str, str]:
    """A throw-away CA and a certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)  # noqa: S603,S607

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=bench CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "up.key", "-out", "up.csr", "-subj", "/CN=127.0.0.1")
    (tmp / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
                                 "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "up.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "up.pem",
        "-days", "2", "-extfile", "ext.cnf")
    return str(tmp / "ca.pem"), str(tmp / "up.pem"), str(tmp / "up.key")


def _http_source(name: str, base_url: str) -> str:
    """One `http` media source of the resolver's sources file, for audio/mpeg."""
    return f'[sources.{name}]\nkind = "http"\nbase_url = "{base_url}"\ncontent_types = ["audio/mpeg"]\n'


class Stack:
    def __init__(self, tokens: int = 16, store: str = "", rate: int = 64 * 1024, net_rate: int = 200 << 20,
                 keep_tmp: bool = False, recording_bytes: int = 0, s3_bytes: int = 0,
                 nginx_upstream_bytes: int = 0, nginx_slow_bytes: int = 0) -> None:
        self.keep_tmp = keep_tmp
        self.nginx_upstream_bytes = nginx_upstream_bytes  # measure 1: a file of this size served by nginx
        self.nginx_slow_bytes = nginx_slow_bytes  # measure 3: a file of this size served by nginx at `rate`
        self.ngx_url = self.ngx_tls_url = self.ngx_relay_url = self.ngx_tls_relay_url = ""
        self.recording_bytes = recording_bytes  # measure 6: a plain and an encrypted recording of this size
        self.s3_bytes = s3_bytes  # measure 7: an object of this size in a moto S3 server (bench.s3)
        self.s3: S3Store | None = None
        self.net_rate = net_rate
        self.tmp = Path(tempfile.mkdtemp(prefix="resolver-bench-"))
        self.rate = rate
        # One token for setting up grants, the others only for the resolve benchmark (so their validation
        # counts are that benchmark's alone).
        self.tokens = {secrets.token_urlsafe(24): f"supervisor-{i}" for i in range(tokens + 2)}
        self.ops_token, self.cold_token, *self.load_tokens = self.tokens  # cold: the burst test's, used once
        self.api_key = secrets.token_urlsafe(32)
        self.store = store or f"sqlite:///{self.tmp / 'resolver.db'}"
        self.children: list[subprocess.Popen] = []
        self.gunicorn: subprocess.Popen | None = None

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> Stack:
        py = sys.executable
        up, self.up_port = _start_child([py, "-m", "bench.upstream", "--rate", str(self.rate),
                                         "--net-rate", str(self.net_rate)],
                                        self.tmp / "upstream.log")
        self.children.append(up)
        self.upstream_pid = up.pid
        self.upstream_url = f"http://127.0.0.1:{self.up_port}"
        self.relay_pid, self.relay_url = self._relay(self.up_port, "relay")
        self.ca, cert, key = make_cert(self.tmp)
        tls_up, self.tls_port = _start_child([py, "-m", "bench.upstream", "--tls-cert", cert, "--tls-key", key],
                                             self.tmp / "upstream-tls.log")
        self.children.append(tls_up)
        self.tls_upstream_pid = tls_up.pid
        self.tls_relay_pid, self.tls_relay_url = self._relay(self.tls_port, "relay-tls", tls=True)
        ngx = self._nginx_upstream(cert, key)
        nginx_port = free_port()
        workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
        self.nginx = nginx.start(self.tmp, nginx_port, self.up_port, self.tls_port, self.ca, workers, ngx)
        if self.nginx is not None:
            self.children.append(self.nginx)
        self.nginx_url = f"http://127.0.0.1:{nginx_port}" if self.nginx else ""
        tokens_file = self.tmp / "tokens.json"
        tokens_file.write_text(json.dumps(self.tokens))
        auth_token = secrets.token_hex(16)
        recording_args, recording_env, recording_source = self._recording_key()
        iam, iam_port = _start_child([py, "-m", "bench.fake_iam", "--account-sid", ACCOUNT_SID,
                                      "--auth-token", auth_token, "--tokens", str(tokens_file),
                                      "--iam-delay", "0.2", *recording_args],
                                     self.tmp / "fake_iam.log")
        self.children.append(iam)
        self.iam_url = f"http://127.0.0.1:{iam_port}"
        s3_source, s3_env = self._s3_store()
        sources = self.tmp / "sources.toml"
        media = {"bench": f"{self.upstream_url}/media/", "slow": f"{self.upstream_url}/slow/",
                 "net": f"{self.upstream_url}/net/", "tls": f"https://127.0.0.1:{self.tls_port}/media/"}
        if self.ngx_url:
            media |= {"ngx": f"{self.ngx_url}/media/", "ngxtls": f"{self.ngx_tls_url}/media/",
                      "ngxslow": f"{self.ngx_url}/slow/"}
        sources.write_text("\n".join(_http_source(name, url) for name, url in media.items())
                           + recording_source + s3_source)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RESOLVER_", "TWILIO_"))}
        env.update({
            "HOST": "127.0.0.1",
            "PORT": str(self.port),
            "RESOLVER_SECRET_KEYS": secrets.token_urlsafe(48),
            "RESOLVER_PUBLIC_URL": self.url,
            "RESOLVER_SOURCES": str(sources),
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": auth_token,
            "TWILIO_IAM_URL": self.iam_url,
            "TWILIO_API_URL": self.iam_url,
            "TWILIO_TASKROUTER_URL": self.iam_url,
            "RESOLVER_GRANT_TTL": "3600",  # the bench outlives the default 60 s grants
            "RESOLVER_API_KEYS": self.api_key,
            # The per-identity and per-address limits would stop a load test after a few requests; they are
            # still counted (one store increment per request), only never reached.
            "RESOLVER_RESOLVE_LIMIT": "1000000/second",
            "RESOLVER_MEDIA_LIMIT": "1000000/second",
            "RESOLVER_STORE": self.store,
            "RESOLVER_AUDIT_LOG": str(self.tmp / "audit.log"),
            **recording_env,
            **s3_env,
            # The HTTPS upstreams' CA, named as an operator names a private store's (README, "Outbound TLS").
            "REQUESTS_CA_BUNDLE": self.ca,
        })
        self.command = procfile_command()
        self.gunicorn = subprocess.Popen(self.command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                         stdout=open(self.tmp / "gunicorn.log", "wb"),  # noqa: SIM115
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self._wait_ready()
        return self

    def _nginx_upstream(self, cert: str, key: str) -> tuple[int, int] | None:
        """For measures 1 and 3: nginx serving real files of nginx_upstream_bytes under /media/ and of
        nginx_slow_bytes under /slow/ (the Python upstream's bytes), plain and HTTPS, and a bare relay to each;
        its (plain, TLS) ports, or None without nginx or those measures."""
        files = {"media": self.nginx_upstream_bytes, "slow": self.nginx_slow_bytes}
        if not any(files.values()) or nginx.find() is None:
            return None
        for folder, size in files.items():
            if size:
                (self.tmp / "files" / folder).mkdir(parents=True)
                with open(self.tmp / "files" / folder / f"{size}.mp3", "wb") as f:
                    for offset in range(0, size, 4 * MiB):
                        f.write(expected(offset, min(4 * MiB, size - offset)))
        plain, tls = free_port(), free_port()
        proc = nginx.start_upstream(self.tmp, self.tmp / "files", plain, tls, cert, key, self.rate)
        if proc is None:
            return None
        self.children.append(proc)
        self.ngx_url, self.ngx_tls_url = f"http://127.0.0.1:{plain}", f"https://127.0.0.1:{tls}"
        self.ngx_relay_pid, self.ngx_relay_url = self._relay(plain, "relay-ngx")
        self.ngx_tls_relay_pid, self.ngx_tls_relay_url = self._relay(tls, "relay-ngx-tls", tls=True)
        return plain, tls

    def _relay(self, port: int, name: str, tls: bool = False) -> tuple[int, str]:
        """A bare relay (`bench.relay`, the floor) to the upstream on `port`, TLS to it trusting the bench CA:
        (its pid, its URL)."""
        argv = [sys.executable, "-m", "bench.relay", "--to", str(port), *(["--tls-ca", self.ca] if tls else [])]
        proc, relay_port = _start_child(argv, self.tmp / f"{name}.log")
        self.children.append(proc)
        return proc.pid, f"http://127.0.0.1:{relay_port}"

    def _recording_key(self) -> tuple[list[str], dict[str, str], str]:
        """For measure 6: a throwaway recording key pair, the fake Twilio's arguments, the env and the source."""
        if not self.recording_bytes:
            return [], {}, ""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key, sid = rsa.generate_private_key(public_exponent=65537, key_size=2048), "CR" + secrets.token_hex(16)
        public = self.tmp / "recording-public.pem"
        public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                         serialization.PublicFormat.SubjectPublicKeyInfo))
        private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()).decode()
        args = ["--recording-bytes", str(self.recording_bytes), "--recording-public-key", str(public),
                "--recording-key-sid", sid]
        source = (f'\n[sources.recordings]\nkind = "twilio-recording"\nformat = "wav"\n'
                  f'private_keys = {{ {sid} = "BENCH_RECORDING_KEY" }}\n')
        return args, {"BENCH_RECORDING_KEY": private}, source

    def _s3_store(self) -> tuple[str, dict[str, str]]:
        """For measure 7: moto's S3 server (a child) holding the object, SigV4 on; the source and its env."""
        if not self.s3_bytes:
            return "", {}
        moto, port = _start_child([sys.executable, "-m", "bench.s3"], self.tmp / "moto.log")
        self.children.append(moto)
        self.moto_pid = moto.pid
        self.s3 = S3Store(f"http://127.0.0.1:{port}", self.s3_bytes)
        return self.s3.source(), self.s3.env()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.gunicorn and self.gunicorn.poll() is not None:
                raise SystemExit(f"gunicorn exited: see {self.tmp / 'gunicorn.log'}\n" + self.log_tail())
            try:
                if fetch(self.url + "/healthz", timeout=2).status == 200 and self.workers():
                    time.sleep(1.0)  # let every worker finish booting
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("gunicorn did not answer /healthz in time\n" + self.log_tail())

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join((self.tmp / "gunicorn.log").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self) -> None:
        procs_ = ([self.gunicorn] if self.gunicorn else []) + self.children
        for proc in procs_:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is self.gunicorn else signal.SIGTERM)
        for proc in procs_:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what we started
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------------------------------
    @property
    def master(self) -> int:
        assert self.gunicorn is not None
        return self.gunicorn.pid

    def workers(self) -> list[int]:
        return procs.children(self.master)

    def _json(self, method: str, url: str, body: dict | None = None, headers: dict | None = None) -> dict:
        raw = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})} if raw is not None else headers
        resp = fetch(url, method=method, headers=hdrs, body=raw, keep=True, timeout=30)
        if resp.status != 200:
            raise SystemExit(f"{method} {url.split('?')[0][:60]} answered {resp.status}: {resp.body[:300]!r}")
        return json.loads(resp.body)

    def links(self, source: str, keys: list[str]) -> list[str]:
        """Drilldown links for keys of a source, from `POST /api/v1/links` with the service key."""
        media = [{"source": source, "key": k, "type": "VoiceRecording", "title": f"bench {k}"} for k in keys]
        answer = self._json("POST", self.url + "/api/v1/links", {"task_sid": TASK_SID, "media": media},
                            {"Authorization": f"Bearer {self.api_key}"})
        return [entry["url"] for entry in answer["media"]]

    def resolve(self, token: str, link: str) -> str:
        """A grant URL for a drilldown link, as the Flex plugin gets it."""
        return self._json("POST", self.url + "/api/v1/resolve", {"url": link},
                          {"Authorization": f"Bearer {token}"})["url"]

    def grant(self, source: str, key: str) -> str:
        return self.resolve(self.ops_token, self.links(source, [key])[0])

    def upstream_stats(self) -> dict:
        return self._json("GET", self.upstream_url + "/_stats")

    def upstream_reset(self) -> None:
        self._json("POST", self.upstream_url + "/_reset", {})

    def validations(self) -> dict[str, int]:
        return self._json("GET", self.iam_url + "/_bench/validations")
