"""`resolver check` on s3 sources, against moto's server verifying SigV4: each problem said in words."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from resolver.cli import main
from resolver.ops import checks
from resolver.sources import TwilioContext, _source
from tests.support.moto_s3 import BUCKET, MotoS3, s3_toml

WRONG = "wrong-secret-for-the-check-" + "Q" * 13
TWILIO = TwilioContext("https://api.twilio.com", "AC" + "0" * 32, ("AC", "x"))


def source(server: MotoS3, *, secret: str | None = None, bucket: str = BUCKET, chain: bool = False):  # type: ignore[no-untyped-def]
    raw = {"kind": "s3", "bucket": bucket, "region": "us-east-1", "prefix": "recordings/",
           "endpoint_url": server.url}
    if not chain:
        raw["credentials"] = {"access_key_env": "KEY_ID", "secret_key_env": "SECRET"}
    return _source("archive", raw, {"KEY_ID": server.key_id, "SECRET": secret or server.secret}, TWILIO)


def check(src) -> checks.Result:  # type: ignore[no-untyped-def]
    return checks.check_s3_source(src, checks.new_session(), 5.0)


def test_reachable_bucket_with_good_keys_is_ok(signed):
    result = check(source(signed))
    assert result.level == checks.OK and BUCKET in result.detail, result


def test_wrong_secret_says_so_without_the_secret(signed):
    result = check(source(signed, secret=WRONG))
    assert result.level == checks.FAIL
    assert "SignatureDoesNotMatch" in result.detail and "secret key does not match" in result.detail
    assert "credentials of sources.archive" in result.fix
    assert WRONG not in repr(result) and signed.secret not in repr(result)


def test_missing_bucket_says_so(signed):
    result = check(source(signed, bucket="no-such-bucket-here"))
    assert result.level == checks.FAIL and "bucket does not exist" in result.detail, result


def test_no_credentials_anywhere_says_so(signed, no_aws_chain):
    result = check(source(signed, chain=True))
    assert result.level == checks.FAIL and "no AWS credentials" in result.detail, result


def test_unreachable_store_says_which_host(signed, no_aws_chain, monkeypatch):
    from tests.support.env import free_port

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIA" + "X" * 16)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y" * 40)
    dead = MotoS3(url=f"http://127.0.0.1:{free_port()}", proc=signed.proc, log_path=signed.log_path)
    result = check(source(dead, chain=True))
    assert result.level == checks.FAIL and "cannot connect to 127.0.0.1" in result.detail, result


def test_resolver_check_prints_each_s3_source_and_never_a_secret(env, signed, no_aws_chain, tmp_path: Path):
    path = Path(env["RESOLVER_SOURCES"])
    path.write_text(path.read_text() + s3_toml("archive", signed.url, content_types=())
                    + s3_toml("archive-wrong", signed.url, secret_env="ARCHIVE_WRONG", prefix="", content_types=()))
    run_env = {**env, "ARCHIVE_KEY_ID": signed.key_id, "ARCHIVE_SECRET": signed.secret, "ARCHIVE_WRONG": WRONG}
    result = CliRunner().invoke(main, ["check"], env=run_env)
    out = result.output
    lines = {line.split()[2]: line for line in out.splitlines() if line.split()[1:2] == ["source"]}
    assert lines["archive"].startswith("ok") and "FAIL" in lines["archive-wrong"], out
    assert result.exit_code == 1
    assert signed.secret not in out and WRONG not in out


@pytest.mark.parametrize("status", [301, 400])
def test_wrong_region_is_named_from_the_store_answer(status):
    """moto signs for any region, so the store's wrong-region answers are served by a small fake here."""
    from flask import Flask

    from resolver.demo.server import ServerThread

    app = Flask("wrong-region")

    @app.get("/<path:_any>")
    def answer(_any: str):  # type: ignore[no-untyped-def]
        body = (b"<Error><Code>PermanentRedirect</Code></Error>" if status == 301 else
                b"<Error><Code>AuthorizationHeaderMalformed</Code><Region>eu-west-1</Region></Error>")
        return body, status, {"x-amz-bucket-region": "eu-west-1", "Content-Type": "application/xml"}

    with ServerThread(app) as server:
        fake = MotoS3(url=server.url, proc=None, log_path=Path("/dev/null"), key_id="AKIA" + "Z" * 16,  # type: ignore[arg-type]
                      secret="s" * 40)
        result = check(source(fake))
    assert result.level == checks.FAIL and "the bucket is in eu-west-1, not us-east-1" in result.detail, result
