"""`resolver check` against real local servers: a fake Twilio, a credentialed store, a bad TLS host."""

from __future__ import annotations

import subprocess

import pytest
from click.testing import CliRunner
from flask import Flask, request

from resolver import config
from resolver.cli import main
from resolver.demo.fake_twilio import FakeTwilio
from resolver.demo.server import ServerThread
from resolver.ops import checks

ACCOUNT = "AC" + "1" * 32
AUTH_TOKEN = "twilio-auth-token-for-tests-0123456789"
STORE_TOKEN = "store-bearer-token-for-tests-abcdef"


@pytest.fixture(scope="module")
def check_twilio():
    fake = FakeTwilio(account_sid=ACCOUNT, auth_token=AUTH_TOKEN)
    app = fake.app()
    with ServerThread(app) as server:
        yield fake, server.url


@pytest.fixture(scope="module")
def store_url():
    app = Flask("store")

    @app.route("/media/", methods=["GET", "HEAD"])
    def media():
        if request.headers.get("Authorization") != f"Bearer {STORE_TOKEN}":
            return "no", 401
        return "", 200

    with ServerThread(app) as server:
        yield server.url + "/media/"


@pytest.fixture(scope="module")
def tls_url(tmp_path_factory):
    """An HTTPS server whose self-signed certificate nobody trusts."""
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")],
                   check=True, capture_output=True)
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, Flask("tls"), ssl_context=(str(d / "cert.pem"), str(d / "key.pem")))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


def environment(tmp_path, twilio_url, sources: str, **extra) -> dict[str, str]:
    (tmp_path / "sources.toml").write_text(sources)
    return {
        "RESOLVER_SECRET_KEYS": "k" * 40,
        "RESOLVER_PUBLIC_URL": "http://127.0.0.1:9",
        "RESOLVER_SOURCES": str(tmp_path / "sources.toml"),
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_IAM_URL": twilio_url,
        "TWILIO_API_URL": twilio_url,
        "RESOLVER_STORE": f"sqlite:///{tmp_path / 'store.db'}",
        "RESOLVER_AUDIT_LOG": str(tmp_path / "audit.log"),
        "STORE_TOKEN": STORE_TOKEN,
        **extra,
    }


GOOD_SOURCES = """
[sources.recordings]
kind = "twilio-recording"

[sources.transcripts]
kind = "http"
base_url = "{store}"
auth = {{ type = "bearer", token_env = "STORE_TOKEN" }}
"""


def run_check(env: dict[str, str]):
    return CliRunner().invoke(main, ["check", "--timeout", "3"], env=env)


def test_healthy_deployment_passes(tmp_path, check_twilio, store_url):
    fake, url = check_twilio
    result = run_check(environment(tmp_path, url, GOOD_SOURCES.format(store=store_url)))
    assert result.exit_code == 0, result.output
    assert "ready: no problems, 0 warning(s)." in result.output
    assert "twilio iam" in result.output and "credentials were accepted" in result.output
    assert "resolver-check-not-a-token" in fake.validations
    for secret in (AUTH_TOKEN, STORE_TOKEN, "k" * 40):
        assert secret not in result.output


def test_wrong_twilio_credentials_are_named(tmp_path, check_twilio, store_url):
    _, url = check_twilio
    env = environment(tmp_path, url, GOOD_SOURCES.format(store=store_url),
                      TWILIO_AUTH_TOKEN="wrong-token-x" * 3)
    result = run_check(env)
    assert result.exit_code == 1
    assert "FAIL  twilio iam" in result.output and "Twilio rejected the credentials (401)" in result.output
    assert "FAIL  source recordings" in result.output and "check TWILIO_AUTH_TOKEN" in result.output
    assert "wrong-token-x" not in result.output


def test_wrong_store_token_dns_and_tls_failures(tmp_path, check_twilio, store_url, tls_url):
    _, url = check_twilio
    sources = GOOD_SOURCES.format(store=store_url) + f"""
[sources.nowhere]
kind = "http"
base_url = "https://media.resolver-check.invalid/"

[sources.selfsigned]
kind = "http"
base_url = "{tls_url}"
"""
    result = run_check(environment(tmp_path, url, sources, STORE_TOKEN="not-the-store-token"))
    assert result.exit_code == 1
    out = result.output
    assert "source transcripts" in out and "refused the credentials (401)" in out
    assert "DNS: cannot resolve media.resolver-check.invalid" in out
    assert "TLS: the certificate of 127.0.0.1:" in out and "is not valid" in out
    assert out.strip().endswith("3 problem(s) to fix, 0 warning(s).")


def test_unreachable_iam_and_store(tmp_path, store_url):
    env = environment(tmp_path, "http://127.0.0.1:9", GOOD_SOURCES.format(store=store_url),
                      RESOLVER_STORE="redis://127.0.0.1:9/15")
    result = run_check(env)
    assert result.exit_code == 1
    assert "FAIL  store" in result.output and "cannot connect to 127.0.0.1:9" in result.output


def test_bad_configuration_is_one_line(tmp_path, check_twilio, store_url):
    _, url = check_twilio
    env = environment(tmp_path, url, GOOD_SOURCES.format(store=store_url), RESOLVER_SECRET_KEYS="short")
    result = run_check(env)
    assert result.exit_code == 1
    assert result.output.startswith("FAIL  configuration") and "RESOLVER_SECRET_KEYS" in result.output


def test_unwritable_audit_log_fails(tmp_path, check_twilio, store_url):
    _, url = check_twilio
    settings = config.from_env(environment(tmp_path, url, GOOD_SOURCES.format(store=store_url),
                                           RESOLVER_AUDIT_LOG=str(tmp_path / "missing-dir" / "audit.log")))
    assert checks.check_audit_log(settings).level == checks.FAIL


def test_the_cas_outbound_tls_trusts_are_named_and_an_unreadable_name_is_flagged(tmp_path):
    import certifi

    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    assert checks.check_trust({}).level == checks.OK
    assert "certifi" in checks.check_trust({}).detail
    both = checks.check_trust({"REQUESTS_CA_BUNDLE": certifi.where(), "SSL_CERT_DIR": str(tmp_path)})
    assert both.level == checks.OK and both.detail.endswith("named by REQUESTS_CA_BUNDLE, SSL_CERT_DIR")
    one_bad = checks.check_trust({"SSL_CERT_FILE": certifi.where(), "REQUESTS_CA_BUNDLE": str(junk)})
    assert one_bad.level == checks.WARN and "REQUESTS_CA_BUNDLE name nothing readable" in one_bad.detail
    assert "named by SSL_CERT_FILE" in one_bad.detail
    none = checks.check_trust({"CURL_CA_BUNDLE": str(tmp_path / "missing.pem")})
    assert none.level == checks.FAIL and "every HTTPS call fails" in none.detail and "CURL_CA_BUNDLE" in none.detail
