"""Encrypted recordings in the customer's bucket (Twilio external storage with Voice Recording Encryption).

The ciphertext is an object in a moto server that verifies every SigV4 signature; the encryption details are on
the fake Twilio's recording resource, which (as with external storage) serves no media for these SIDs. The player
must see the plaintext wav, ranges in plaintext terms, and never a tampered file that looks complete.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from enc_fixtures import KEY_ENV, KEY_SID, OTHER_SID, PLAINTEXT, other_key, pem, private_key

from resolver import config, create_app
from resolver.errors import ConfigError
from resolver.streaming.upstream import StreamAborted
from tests.support.hostile import mint
from tests.support.moto_s3 import BUCKET, MotoS3, start_moto

SIZE = len(PLAINTEXT)
# SIDs of their own: the fake Twilio is shared by the session, and other tests use the round ones.
S3_ENC = "RE" + "51" * 16  # encrypted for KEY_SID, object recordings/<SID>
S3_TAMPERED = "RE" + "52" * 16  # one ciphertext byte flipped in the middle
S3_TAMPERED_TAG = "RE" + "53" * 16  # a tag byte flipped
S3_UNKNOWN = "RE" + "54" * 16  # encrypted for OTHER_SID, which the resolver has no key for
S3_PLAIN = "RE" + "56" * 16  # a recording resource without encryption_details: the object is served as it is
S3_NESTED = "RE" + "57" * 16  # object recordings/2026/<SID>.wav: a folder and an extension around the SID
PLAIN_BODY = b"RIFF" + bytes(range(256)) * 40


def _flip(body: bytes, at: int) -> bytes:
    data = bytearray(body)
    data[at] ^= 0x01
    return bytes(data)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory, twilio) -> Iterator[MotoS3]:  # type: ignore[no-untyped-def]
    """A SigV4-checking moto server holding the ciphertexts; the fake Twilio holds only their resources."""
    public = private_key().public_key()
    cipher = twilio.add_external(S3_ENC, PLAINTEXT, public, KEY_SID)
    tampered = _flip(twilio.add_external(S3_TAMPERED, PLAINTEXT, public, KEY_SID), SIZE // 2)
    tampered_tag = _flip(twilio.add_external(S3_TAMPERED_TAG, PLAINTEXT, public, KEY_SID), SIZE + 15)
    unknown = twilio.add_external(S3_UNKNOWN, PLAINTEXT, other_key().public_key(), OTHER_SID)
    nested = twilio.add_external(S3_NESTED, PLAINTEXT, public, KEY_SID)
    twilio.external.add(S3_PLAIN)
    wav = "audio/x-wav"
    server = start_moto(tmp_path_factory.mktemp("moto") / "encrypted.log", auth=True, objects={
        f"recordings/{S3_ENC}": (cipher, wav), f"recordings/{S3_TAMPERED}": (tampered, wav),
        f"recordings/{S3_TAMPERED_TAG}": (tampered_tag, wav), f"recordings/{S3_UNKNOWN}": (unknown, wav),
        f"recordings/{S3_PLAIN}": (PLAIN_BODY, wav), f"recordings/2026/{S3_NESTED}.wav": (nested, wav),
        "recordings/notes.txt": (b"not a recording", "text/plain"),
    })
    yield server
    server.stop()


def sources_toml(server: MotoS3, extra: str = "") -> str:
    return f"""
[sources.vault]
kind = "s3"
bucket = "{BUCKET}"
region = "us-east-1"
prefix = "recordings/"
endpoint_url = "{server.url}"
credentials = {{ access_key_env = "VAULT_KEY_ID", secret_key_env = "VAULT_SECRET" }}
content_types = ["audio/x-wav"]
private_keys = {{ {KEY_SID} = "{KEY_ENV}" }}
{extra}
"""


@pytest.fixture
def enc_env(tmp_path: Path, env: dict[str, str], bucket: MotoS3, no_aws_chain: None) -> dict[str, str]:
    path = tmp_path / "s3-encrypted-sources.toml"
    path.write_text(sources_toml(bucket))
    return {**env, "RESOLVER_SOURCES": str(path), "VAULT_KEY_ID": bucket.key_id, "VAULT_SECRET": bucket.secret,
            KEY_ENV: pem(private_key())}


@pytest.fixture
def app(enc_env):  # type: ignore[no-untyped-def]
    app = create_app(config.from_env(enc_env))
    app.config["TESTING"] = True
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def grant(app):  # type: ignore[no-untyped-def]
    signer = app.extensions["resolver"].signer
    return lambda key: mint(signer, "vault", key)


def grant_records(env: dict[str, str]) -> list[dict]:
    lines = Path(env["RESOLVER_AUDIT_LOG"]).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "grant" and r["outcome"] != "started"]


def bucket_gets(server: MotoS3) -> list[str]:
    text = server.log_path.read_text(errors="replace")
    lines = [line.split('"')[1].split(" ") for line in text.splitlines() if line.count('"') >= 2]
    return [r[1] for r in lines if len(r) == 3 and r[0].endswith("GET")]


# --- the player sees an ordinary wav ----------------------------------------------------------------------------
def test_full_get_is_the_plaintext_from_the_bucket_with_details_from_twilio(client, grant, enc_env, twilio, bucket):
    before = len(twilio.resource_requests)
    resp = client.get(grant(S3_ENC))
    assert resp.status_code == 200 and resp.data == PLAINTEXT
    assert resp.headers["Content-Length"] == str(SIZE) and "Content-Range" not in resp.headers
    assert resp.headers["Content-Type"] == "audio/x-wav" and resp.headers["Accept-Ranges"] == "bytes"
    assert not [n for n in resp.headers.keys() if n.lower().startswith("x-amz")]
    resp.close()
    record = grant_records(enc_env)[-1]
    assert (record["outcome"], record["status"], record["bytes"], record["complete"]) == ("served", 200, SIZE, True)
    assert twilio.resource_requests[before:] == [S3_ENC]  # the details: Twilio's resource, read once
    assert not [r for r in twilio.media_requests if S3_ENC in r["path"] and not r["path"].endswith(".json")]
    assert f"/{BUCKET}/recordings/{S3_ENC}" in bucket_gets(bucket)  # the ciphertext: the bucket, signed


@pytest.mark.parametrize("header", [
    "bytes=0-0", "bytes=16-31", "bytes=15-16", "bytes=1000-200000", f"bytes={SIZE - 1}-", f"bytes={SIZE - 1}-{SIZE}",
    "bytes=-1", "bytes=-5000", f"bytes={SIZE // 2}-", f"bytes=262140-{262144 * 2 + 7}",
])
def test_ranges_are_the_plaintext_bytes(client, grant, header):
    resp = client.get(grant(S3_ENC), headers={"Range": header})
    assert resp.status_code == 206
    spec = header.removeprefix("bytes=")
    first, _, last = spec.partition("-")
    start = SIZE - int(last) if not first else int(first)
    end = SIZE - 1 if not first or not last else min(int(last), SIZE - 1)
    assert resp.data == PLAINTEXT[start:end + 1]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert resp.headers["Content-Length"] == str(end - start + 1)


def test_a_grant_reads_the_details_once_for_many_ranges(client, grant, twilio):
    path = grant(S3_ENC)
    before = len(twilio.resource_requests)
    for header in ("bytes=0-99", "bytes=5000-9000", "bytes=-10"):
        assert client.get(path, headers={"Range": header}).status_code == 206
    assert twilio.resource_requests[before:] == [S3_ENC]


def test_head_304_and_416_in_plaintext_terms(client, grant):
    path = grant(S3_ENC)
    head = client.head(path)
    assert head.status_code == 200 and head.data == b"" and head.headers["Content-Length"] == str(SIZE)
    assert client.get(path, headers={"If-None-Match": head.headers["ETag"]}).status_code == 304
    past = client.get(path, headers={"Range": f"bytes={SIZE}-"})  # the tag is never media
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{SIZE}"


def test_a_key_with_folders_and_an_extension_reads_the_details_of_its_sid(client, grant, twilio):
    before = len(twilio.resource_requests)
    resp = client.get(grant(f"2026/{S3_NESTED}.wav"))
    assert resp.status_code == 200 and resp.data == PLAINTEXT
    assert twilio.resource_requests[before:] == [S3_NESTED]


def test_keys_that_are_not_recording_sids_are_refused(client, grant, bucket):
    resp = client.get(grant("notes.txt"))
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "bad_key"
    assert "/acme-recordings/recordings/notes.txt" not in bucket_gets(bucket)


def test_a_recording_without_encryption_details_is_served_as_it_is(client, grant):
    resp = client.get(grant(S3_PLAIN))
    assert resp.status_code == 200 and resp.data == PLAIN_BODY


# --- integrity and errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("sid", [S3_TAMPERED, S3_TAMPERED_TAG])
@pytest.mark.parametrize("header", [None, "bytes=0-"])
def test_a_tampered_object_never_completes(client, grant, enc_env, caplog, sid, header):
    caplog.set_level(logging.WARNING)
    resp = client.get(grant(sid), headers={"Range": header} if header else {}, buffered=False)
    assert resp.status_code in (200, 206) and resp.headers["Content-Length"] == str(SIZE)
    got = 0
    with pytest.raises(StreamAborted):
        for chunk in resp.response:
            got += len(chunk)
    resp.close()
    assert got < SIZE
    record = grant_records(enc_env)[-1]
    assert record["complete"] is False and record["reason"] == "tag_mismatch" and record["bytes"] == got
    assert any("integrity check" in r.getMessage() and sid in r.getMessage() and "vault" in r.getMessage()
               for r in caplog.records)


def test_an_unknown_public_key_sid_is_502_recording_key_unknown(client, grant, enc_env, bucket):
    resp = client.get(grant(S3_UNKNOWN))
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "recording_key_unknown"
    record = grant_records(enc_env)[-1]
    assert record["outcome"] == "refused" and record["reason"] == "recording_key_unknown"
    assert f"/{BUCKET}/recordings/{S3_UNKNOWN}" not in bucket_gets(bucket)  # refused before any media moved


def test_a_sid_twilio_does_not_know_is_media_gone(client, grant):
    resp = client.get(grant("RE" + "58" * 16))
    assert resp.status_code == 404 and resp.get_json()["error"]["code"] == "media_gone"


def test_no_key_material_in_any_output(client, grant, enc_env, twilio, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bodies = []
    for sid in (S3_ENC, S3_TAMPERED, S3_UNKNOWN):
        resp = client.get(grant(sid), buffered=False)
        try:
            bodies.append(json.dumps(dict(resp.headers)))
            if resp.status_code >= 400:
                bodies.append(resp.get_data(as_text=True))
            else:
                for _ in resp.response:
                    pass
        except StreamAborted:
            pass
        resp.close()
    details = [twilio.encryption[s] for s in (S3_ENC, S3_TAMPERED, S3_UNKNOWN)]
    secrets = [d[f] for d in details for f in ("encrypted_cek", "iv")]
    secrets += [line for line in pem(private_key()).splitlines() if not line.startswith("-----")]
    secrets += [enc_env["VAULT_SECRET"]]
    out = capsys.readouterr()
    text = "\n".join([*(r.getMessage() for r in caplog.records), *bodies, out.out, out.err,
                      Path(enc_env["RESOLVER_AUDIT_LOG"]).read_text(),
                      repr(client.application.extensions["resolver"].settings.sources["vault"])])
    assert not [s for s in secrets if len(s) >= 16 and s in text]


# --- start-up ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "env_change", "message"), [
    ('delivery = "presign"', {}, 'sources.vault: private_keys needs delivery = "stream"'),
    ("", {KEY_ENV: ""}, f"sources.vault: private_keys.{KEY_SID}: environment variable {KEY_ENV} is not set"),
    ("", {KEY_ENV: "not a pem"}, f"sources.vault: private_keys.{KEY_SID}: {KEY_ENV} does not hold a readable"),
])
def test_configuration_errors_are_one_clear_line(tmp_path, enc_env, bucket, extra, env_change, message):
    path = tmp_path / "bad.toml"
    path.write_text(sources_toml(bucket, extra))
    with pytest.raises(ConfigError) as err:
        config.from_env({**enc_env, "RESOLVER_SOURCES": str(path), **env_change})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
    assert "BEGIN" not in str(err.value)


def test_private_keys_stay_refused_on_http_and_redirect_sources(tmp_path, enc_env):
    path = tmp_path / "bad.toml"
    path.write_text(f'[sources.crm]\nkind = "redirect"\nbase_url = "https://crm.example.com/"\n'
                    f'private_keys = {{ {KEY_SID} = "{KEY_ENV}" }}\n')
    with pytest.raises(ConfigError, match="private_keys is for twilio-recording and s3 sources"):
        config.from_env({**enc_env, "RESOLVER_SOURCES": str(path)})


def test_after_a_failed_tag_check_ranges_of_the_object_are_refused(client, grant, enc_env):
    assert client.get(grant(S3_TAMPERED), headers={"Range": "bytes=0-99"}).status_code == 206
    resp = client.get(grant(S3_TAMPERED), buffered=False)
    with pytest.raises(StreamAborted):
        for _ in resp.response:
            pass
    resp.close()
    refused = client.get(grant(S3_TAMPERED), headers={"Range": "bytes=0-99"})
    assert refused.status_code == 502 and refused.get_json()["error"]["code"] == "recording_integrity_failed"
    assert grant_records(enc_env)[-1]["reason"] == "recording_integrity_failed"
    assert client.get(grant(S3_ENC), headers={"Range": "bytes=0-99"}).status_code == 206
