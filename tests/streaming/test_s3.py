"""s3 sources against real S3 protocol servers (moto's server mode on 127.0.0.1), in-process app.

`signed` verifies every SigV4 signature against the IAM key it holds, so a stream that works proves the
signing; `open_` has auth off and serves the presigned GETs (moto cannot check those with auth on).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from resolver import config, create_app
from resolver.access.signing import Link
from resolver.errors import BadRequest, ConfigError
from resolver.sources import upstream_url
from tests.support.env import RECORDING, SERVICE_KEY, WORKER, issue_links, new_token
from tests.support.moto_s3 import BUCKET, KEY, SID, SMALL, MotoS3, s3_toml

WRONG_SECRET = "wrong-secret-" + "Z" * 27
ESCAPES = ["../outside.wav", "..", "a/../../outside.wav", "%2e%2e/outside.wav", "..%2foutside.wav",
           "/outside.wav", "./x.wav", "x//y", "x\\..\\outside.wav", "x?y", "x#y", "X/../../recordingsX/evil.wav",
           "\u2025/outside.wav", "x%00", "x\r\n"]


def s3_sources(signed: MotoS3, open_: MotoS3) -> str:
    return (s3_toml("archive", signed.url, content_types=("audio/x-wav", "audio/mpeg"))
            + s3_toml("archive-wrong", signed.url, secret_env="ARCHIVE_WRONG", content_types=())
            + s3_toml("archive-chain", signed.url, secret_env=None)
            + s3_toml("archive-presign", open_.url, content_types=(), delivery="presign"))


@pytest.fixture
def s3_env(env: dict[str, str], signed: MotoS3, open_: MotoS3, no_aws_chain: None) -> dict[str, str]:
    path = Path(env["RESOLVER_SOURCES"])
    path.write_text(path.read_text() + s3_sources(signed, open_))
    return {**env, "ARCHIVE_KEY_ID": signed.key_id, "ARCHIVE_SECRET": signed.secret, "ARCHIVE_WRONG": WRONG_SECRET}


@pytest.fixture
def app(s3_env: dict[str, str]):  # type: ignore[no-untyped-def]
    app = create_app(config.from_env(s3_env))
    app.config["TESTING"] = True
    yield app
    app.extensions["resolver"].close()


def mint(app, source: str, key: str, life: int = 120) -> str:  # type: ignore[no-untyped-def]
    now = int(time.time())
    link = Link(source=source, key=key, type="VoiceRecording", task="WT" + "5" * 32)
    _, token = app.extensions["resolver"].signer.sign_grant(
        link, identity="sup@example.com", worker=WORKER, issued_at=now, expires_at=now + life)
    return f"/m/{token}"


def audit(s3_env: dict[str, str]) -> list[dict]:
    with open(s3_env["RESOLVER_AUDIT_LOG"]) as f:
        return [json.loads(line) for line in f]


def grants(s3_env: dict[str, str]) -> list[dict]:
    return [r for r in audit(s3_env) if r.get("event") == "grant" and r.get("outcome") != "started"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- stream delivery ---------------------------------------------------------------------------------------------
def test_resolved_grant_streams_the_object_byte_for_byte(client, twilio, s3_env):
    token = new_token(twilio, worker_sid=WORKER)
    [entry] = issue_links(client, [{"source": "archive", "key": SID, "type": "VoiceRecording", "title": "Call"}])
    body = client.post("/api/v1/resolve", json={"url": entry["url"]},
                       headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["mode"] == "stream"
    resp = client.get(body["url"].split("5000", 1)[1])
    assert resp.status_code == 200
    assert sha(resp.data) == sha(RECORDING)
    h = resp.headers
    assert h["Content-Type"] == "audio/x-wav" and h["Content-Length"] == str(len(RECORDING))
    assert h["Accept-Ranges"] == "bytes" and h["ETag"].startswith('"') and "Last-Modified" in h
    assert not [n for n in h.keys() if n.lower().startswith("x-amz")]  # the allowlist holds for S3 too
    assert h["Cache-Control"] == "no-store"
    resp.close()
    [served] = grants(s3_env)
    assert served["outcome"] == "served" and served["source"] == "archive" and served["key"] == SID
    assert served["bytes"] == len(RECORDING) and served["complete"] is True and served["status"] == 200


def test_ranged_read_is_the_slice_and_audited_with_its_bytes(client, app, s3_env):
    resp = client.get(mint(app, "archive", SID), headers={"Range": "bytes=1000-1999"})
    assert resp.status_code == 206 and resp.data == RECORDING[1000:2000]
    assert resp.headers["Content-Range"] == f"bytes 1000-1999/{len(RECORDING)}"
    resp.close()
    suffix = client.get(mint(app, "archive", SID), headers={"Range": "bytes=-10"})
    assert suffix.status_code == 206 and suffix.data == RECORDING[-10:]
    suffix.close()
    assert [r["bytes"] for r in grants(s3_env)] == [1000, 10]


def test_head_answers_the_object_headers_without_a_body(client, app):
    resp = client.head(mint(app, "archive", "calls/2026/short.wav"))
    assert resp.status_code == 200 and resp.data == b""
    assert resp.headers["Content-Length"] == str(len(SMALL)) and resp.headers["Content-Type"] == "audio/x-wav"
    full = client.get(mint(app, "archive", "calls/2026/short.wav"))
    assert full.data == SMALL and full.headers["ETag"] == resp.headers["ETag"]


def test_conditional_and_unsatisfiable_ranges(client, app):
    grant = mint(app, "archive", "calls/2026/short.wav")
    etag = client.head(grant).headers["ETag"]
    assert client.get(grant, headers={"If-None-Match": etag}).status_code == 304
    past = client.get(grant, headers={"Range": f"bytes={len(SMALL) + 10}-"})
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(SMALL)}"
    assert b"InvalidRange" not in past.data and b"<Error>" not in past.data


def test_missing_object_is_media_gone_without_s3_xml(client, app, s3_env):
    resp = client.get(mint(app, "archive", "RE" + "9" * 32))
    assert resp.status_code == 404
    assert resp.get_json()["error"]["code"] == "media_gone"
    assert b"NoSuchKey" not in resp.data and b"<" not in resp.data and BUCKET.encode() not in resp.data
    assert grants(s3_env)[-1]["outcome"] == "refused" and grants(s3_env)[-1]["reason"] == "media_gone"


def test_wrong_secret_is_502_with_a_log_line_naming_the_source_never_the_secret(client, app, s3_env, caplog):
    with caplog.at_level(logging.WARNING, logger="resolver"):
        resp = client.get(mint(app, "archive-wrong", SID))
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "upstream_error"
    assert b"Signature" not in resp.data and b"<" not in resp.data
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("resolver")]
    assert any("archive-wrong" in line and "SignatureDoesNotMatch" in line and "secret key does not match" in line
               for line in lines), lines
    text = "\n".join(lines) + resp.get_data(as_text=True) + Path(s3_env["RESOLVER_AUDIT_LOG"]).read_text()
    assert WRONG_SECRET not in text and s3_env["ARCHIVE_SECRET"] not in text


def test_standard_chain_credentials_sign_too(s3_env, signed, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", signed.key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", signed.secret)
    app = create_app(config.from_env(s3_env))
    try:
        resp = app.test_client().get(mint(app, "archive-chain", "calls/2026/short.wav"))
        assert resp.status_code == 200 and resp.data == SMALL
    finally:
        app.extensions["resolver"].close()


def test_no_credentials_anywhere_is_502_and_says_so(client, app, caplog):
    with caplog.at_level(logging.WARNING, logger="resolver"):
        resp = client.get(mint(app, "archive-chain", "calls/2026/short.wav"))
    assert resp.status_code == 502
    assert any("archive-chain" in r.getMessage() and "no AWS credentials" in r.getMessage() for r in caplog.records)


# --- keys stay under the prefix ----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ESCAPES)
def test_keys_that_leave_the_prefix_are_refused_everywhere(client, app, key, signed):
    source = app.extensions["resolver"].settings.sources["archive"]
    with pytest.raises(BadRequest):
        upstream_url(source, key)
    links = client.post("/api/v1/links", json={"task_sid": "WT" + "3" * 32, "media": [
        {"source": "archive", "key": key, "type": "VoiceRecording"}]},
        headers={"Authorization": f"Bearer {SERVICE_KEY}"})
    assert links.status_code == 400
    served = client.get(mint(app, "archive", key))  # a grant for it, as if signed by us: still refused
    assert served.status_code == 400 and served.get_json()["error"]["code"] == "bad_key"


def test_no_escape_reached_the_store(client, app, signed):
    for key in ESCAPES:
        client.get(mint(app, "archive", key))
    client.get(mint(app, "archive", "calls/2026/short.wav"))
    seen = _moto_paths(signed)
    assert f"/{BUCKET}/recordings/calls/2026/short.wav" in seen  # the log does show what we fetch
    assert not [p for p in seen if "outside" in p or "recordingsX" in p or ".." in p], seen


def _moto_paths(server: MotoS3) -> list[str]:
    """The paths of the GETs a moto server received (its werkzeug log: '"GET /bucket/key HTTP/1.1" 200 -')."""
    text = server.log_path.read_text(errors="replace")
    requests = [line.split('"')[1].split(" ") for line in text.splitlines() if line.count('"') >= 2]
    return [r[1] for r in requests if len(r) == 3 and r[0].endswith("GET")]


def test_prefix_is_applied_once_and_encoded_once(app):
    source = app.extensions["resolver"].settings.sources["archive"]
    assert upstream_url(source, SID) == f"{source.s3.endpoint_url}/{BUCKET}/recordings/{SID}"
    assert upstream_url(source, "a~b_c-d.e/f") == f"{source.s3.endpoint_url}/{BUCKET}/recordings/a~b_c-d.e/f"


# --- presign delivery --------------------------------------------------------------------------------------------
def test_presign_redirects_to_a_url_that_fetches_the_object(client, twilio, s3_env, open_):
    import requests

    token = new_token(twilio, worker_sid=WORKER)
    [entry] = issue_links(client, [{"source": "archive-presign", "key": SID, "type": "VoiceRecording"}])
    body = client.post("/api/v1/resolve", json={"url": entry["url"]},
                       headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["mode"] == "redirect"
    resp = client.get(body["url"].split("5000", 1)[1])
    assert resp.status_code == 302 and resp.data == b""
    location = resp.headers["Location"]
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}" == open_.url and parts.path == f"/{BUCKET}/{KEY}"
    query = parse_qs(parts.query)
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-SignedHeaders"] == ["host"]
    assert query["X-Amz-Credential"][0].startswith(s3_env["ARCHIVE_KEY_ID"] + "/")
    expires = int(query["X-Amz-Expires"][0])
    remaining = json_expiry(body) - time.time()
    assert 1 <= expires <= remaining + 1
    assert s3_env["ARCHIVE_SECRET"] not in location
    fetched = requests.get(location, timeout=10)
    assert fetched.status_code == 200 and sha(fetched.content) == sha(RECORDING)
    [record] = grants(s3_env)
    assert record["outcome"] == "redirected" and record["status"] == 302 and record["key"] == SID
    assert "X-Amz" not in json.dumps(record) and s3_env["ARCHIVE_SECRET"] not in json.dumps(record)


def json_expiry(body: dict) -> float:
    from datetime import datetime

    return datetime.strptime(body["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=__import__("datetime").UTC).timestamp()


@pytest.mark.parametrize("life", [1, 7, 300])
def test_presign_expiry_is_bounded_by_the_grant(client, app, life):
    started = time.time()
    resp = client.get(mint(app, "archive-presign", SID, life=life))
    assert resp.status_code == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    expires = int(query["X-Amz-Expires"][0])
    signed_at = time.mktime(time.strptime(query["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ")) - time.timezone
    assert 1 <= expires <= life
    assert signed_at + expires <= int(started) + life + 1  # never valid past the grant (1 s of clock rounding)


def test_presign_refuses_keys_outside_the_prefix_and_expired_grants(client, app):
    assert client.get(mint(app, "archive-presign", "../outside.wav")).status_code == 400
    assert client.get(mint(app, "archive-presign", SID, life=-5)).status_code == 403


# --- start-up errors ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("setting", "message"), [
    ('bucket = "Acme_Recordings"', "bucket must be an S3 bucket name"),
    ('region = "mars"', "region must be an AWS region name"),
    ('prefix = "../up/"', "prefix may use"),
    ('endpoint_url = "http://10.0.0.5:9000"', "endpoint_url must be https:// (http:// only on a loopback host)"),
    ('endpoint_url = "https://s3.example.com/bucket"', "endpoint_url is the store's origin only"),
    ('delivery = "proxy"', "delivery must be 'stream' or 'presign'"),
    ('credentials = { access_key_env = "NOPE_ID", secret_key_env = "NOPE_SECRET" }',
     "environment variable NOPE_ID (credentials.access_key_env) is not set"),
    ('credentials = { access_key = "AKIA", secret_key = "inline" }', "credentials must be"),
    ('endpoint = "https://s3.example.com"', "endpoint is not a setting of s3 sources"),
])
def test_configuration_errors_are_one_clear_line(tmp_path, env, setting, message):
    name = setting.split(" ", 1)[0]
    lines = {"bucket": f'bucket = "{BUCKET}"', "region": 'region = "us-east-1"'}
    lines[name] = setting
    path = tmp_path / "s3-sources.toml"
    path.write_text("[sources.archive]\nkind = \"s3\"\n" + "\n".join(lines.values()) + "\n")
    with pytest.raises(ConfigError) as err:
        config.from_env({**env, "RESOLVER_SOURCES": str(path)})
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith("sources.archive: ")
