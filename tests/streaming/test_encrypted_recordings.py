"""Twilio-encrypted recordings through /m/<grant>: the app in-process (Flask test client), the fake Twilio a real
HTTP server that encrypts exactly as Twilio does. The player must see the plaintext, ranges in plaintext terms,
and never a tampered file that looks complete."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest
from enc_fixtures import (
    ENCRYPTED,
    KEY_SID,
    PLAIN_WAV,
    PLAIN_WAV_BODY,
    PLAINTEXT,
    TAMPERED,
    TAMPERED_TAG,
    UNKNOWN_KEY,
    WRONG_KEY,
    encrypted_env,
    install,
    secrets_of,
)

from resolver import config, create_app
from resolver.streaming.upstream import StreamAborted
from tests.support.hostile import mint

SIZE = len(PLAINTEXT)


@pytest.fixture
def enc_env(tmp_path, env, twilio):
    install(twilio)
    return encrypted_env(tmp_path, env)


@pytest.fixture
def app(enc_env):
    app = create_app(config.from_env(enc_env))
    app.config["TESTING"] = True
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def grant(app):
    signer = app.extensions["resolver"].signer
    return lambda key: mint(signer, "recordings", key)


def grant_records(env) -> list[dict]:
    lines = Path(env["RESOLVER_AUDIT_LOG"]).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "grant"]


def media_ranges(twilio, sid: str) -> list[str | None]:
    return [r["range"] for r in twilio.media_requests if r["path"].endswith(f"/{sid}.wav")]


def test_reads_grow_only_for_a_client_that_took_grow_after_fast(monkeypatch):
    """An encrypted body's reads (read1's most): STREAM_CHUNK, and STREAM_FAST_CHUNK once the client took
    relay.GROW_AFTER bytes at relay.GROW_RATE or more; never for a slow one."""
    from resolver import policy
    from resolver.streaming import relay
    from resolver.streaming.upstream import Reads

    now = [0.0]
    monkeypatch.setattr(relay, "_clock", lambda: now[0])
    fast = Reads()
    fast.sent(relay.GROW_AFTER - 1)
    assert fast.size == policy.STREAM_CHUNK
    now[0] = 0.5  # 8 MiB in half a second
    fast.sent(relay.GROW_AFTER)
    assert fast.size == policy.STREAM_FAST_CHUNK
    slow = Reads()
    now[0] += 60.0  # 8 MiB in a minute: a player
    slow.sent(relay.GROW_AFTER)
    assert slow.size == policy.STREAM_CHUNK


def test_an_encrypted_body_tells_its_reads_what_the_client_took(client, grant, monkeypatch):
    from resolver.streaming import upstream

    told: list[int] = []
    real = upstream.Reads.sent
    monkeypatch.setattr(upstream.Reads, "sent", lambda self, total: (told.append(total), real(self, total))[1])
    resp = client.get(grant(ENCRYPTED))
    assert resp.data == PLAINTEXT
    resp.close()
    assert told and told[-1] == SIZE and told == sorted(told)


# --- the player sees an ordinary recording ----------------------------------------------------------------------
def test_full_get_is_the_plaintext(client, grant, enc_env):
    resp = client.get(grant(ENCRYPTED))
    assert resp.status_code == 200
    assert resp.data == PLAINTEXT
    assert resp.headers["Content-Length"] == str(SIZE) and "Content-Range" not in resp.headers
    assert resp.headers["Content-Type"] == "audio/x-wav" and resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Content-Disposition"].startswith(f'inline; filename="{ENCRYPTED}.wav"')
    resp.close()
    record = grant_records(enc_env)[-1]
    assert (record["outcome"], record["status"], record["bytes"], record["complete"]) == ("served", 200, SIZE, True)


def test_head_describes_the_plaintext_without_a_body(client, grant):
    resp = client.head(grant(ENCRYPTED))
    assert resp.status_code == 200 and resp.data == b""
    assert resp.headers["Content-Length"] == str(SIZE)
    part = client.head(grant(ENCRYPTED), headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes 100-199/{SIZE}"
    assert part.headers["Content-Length"] == "100"


RANGES = [
    ("bytes=0-0", 0, 0),  # one byte
    ("bytes=0-15", 0, 15),  # one block
    ("bytes=16-31", 16, 31),  # block-aligned
    ("bytes=5-20", 5, 20),  # across a block boundary, not aligned
    ("bytes=1000-300000", 1000, 300000),  # across stream chunks
    ("bytes=262143-262145", 262143, 262145),  # across the 256 KiB chunk boundary
    (f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1),  # the last byte
    (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
    (f"bytes={SIZE - 10}-{SIZE + 1000}", SIZE - 10, SIZE - 1),  # an end past the plaintext (into the tag)
    ("bytes=123457-", 123457, SIZE - 1),  # open-ended from an unaligned start
    ("bytes=-1", SIZE - 1, SIZE - 1),  # suffix: the last byte
    ("bytes=-17", SIZE - 17, SIZE - 1),
    ("bytes=-70000", SIZE - 70000, SIZE - 1),
    (f"bytes=-{SIZE}", 0, SIZE - 1),  # a suffix as long as the file
    (f"bytes=-{SIZE + 500}", 0, SIZE - 1),  # longer than the file
    ("bytes=0-", 0, SIZE - 1),  # what Chromium asks first
    (f"bytes=0-{SIZE - 1}", 0, SIZE - 1),
]


@pytest.mark.parametrize(("header", "first", "last"), RANGES)
def test_ranges_are_the_plaintexts_bytes(client, grant, header, first, last):
    resp = client.get(grant(ENCRYPTED), headers={"Range": header})
    assert resp.status_code == 206
    assert resp.headers["Content-Range"] == f"bytes {first}-{last}/{SIZE}"
    assert resp.headers["Content-Length"] == str(last - first + 1)
    assert resp.data == PLAINTEXT[first:last + 1]


def test_a_seek_fetches_only_the_blocks_it_needs(client, grant, twilio):
    resp = client.get(grant(ENCRYPTED), headers={"Range": "bytes=500005-500009"})
    assert resp.data == PLAINTEXT[500005:500010]
    assert media_ranges(twilio, ENCRYPTED)[-1] == "bytes=500000-500025"  # its block's start, up to 16 more
    resp = client.get(grant(ENCRYPTED), headers={"Range": "bytes=-100"})
    assert resp.data == PLAINTEXT[-100:]
    assert media_ranges(twilio, ENCRYPTED)[-1] == "bytes=-131"  # the tag and one block more, no length probe


@pytest.mark.parametrize("header", [f"bytes={SIZE}-", f"bytes={SIZE + 3}-{SIZE + 9}", "bytes=99999999-", "bytes=-0"])
def test_unsatisfiable_ranges_are_416_in_plaintext_terms(client, grant, header):
    """A start at or past the plaintext's end is 416, also inside the tag, which is never served as media."""
    resp = client.get(grant(ENCRYPTED), headers={"Range": header})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
    assert PLAINTEXT[-8:] not in resp.data


def test_conditional_requests_are_304_as_for_a_plain_recording(client, grant):
    etag = client.head(grant(ENCRYPTED)).headers["ETag"]
    resp = client.get(grant(ENCRYPTED), headers={"If-None-Match": etag})
    assert resp.status_code == 304 and resp.data == b""
    assert "Content-Range" not in resp.headers


def test_if_range_with_a_stale_validator_serves_the_whole_plaintext(client, grant):
    resp = client.get(grant(ENCRYPTED), headers={"Range": "bytes=10-20", "If-Range": '"stale"'})
    assert resp.status_code == 200 and resp.data == PLAINTEXT


# --- integrity ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("sid", [TAMPERED, TAMPERED_TAG])
@pytest.mark.parametrize("header", [None, "bytes=0-"])
def test_a_tampered_recording_never_completes(client, grant, enc_env, caplog, sid, header):
    caplog.set_level(logging.WARNING)
    resp = client.get(grant(sid), headers={"Range": header} if header else {}, buffered=False)
    assert resp.status_code in (200, 206)
    assert resp.headers["Content-Length"] == str(SIZE)
    got = 0
    with pytest.raises(StreamAborted):
        for chunk in resp.response:
            got += len(chunk)
    resp.close()
    assert got < SIZE
    record = grant_records(enc_env)[-1]
    assert record["complete"] is False and record["reason"] == "tag_mismatch" and record["bytes"] == got
    assert any("integrity check" in r.getMessage() and sid in r.getMessage() for r in caplog.records)


def test_a_range_response_is_not_checked_against_the_tag(client, grant):
    """Documented in SECURITY.md: a part cannot be checked (the tag covers the whole file); bytes away from the
    flipped one still decrypt correctly, the flipped one comes out flipped."""
    mid = SIZE // 2
    resp = client.get(grant(TAMPERED), headers={"Range": f"bytes={mid - 4}-{mid + 4}"})
    assert resp.status_code == 206
    assert resp.data[:4] == PLAINTEXT[mid - 4:mid] and resp.data[5:] == PLAINTEXT[mid + 1:mid + 5]
    assert resp.data[4] == PLAINTEXT[mid] ^ 0x01


# --- errors ---------------------------------------------------------------------------------------------------------
def test_an_unknown_public_key_sid_is_502_recording_key_unknown(client, grant, enc_env):
    resp = client.get(grant(UNKNOWN_KEY))
    assert resp.status_code == 502
    assert resp.get_json()["error"]["code"] == "recording_key_unknown"
    record = grant_records(enc_env)[-1]
    assert (record["outcome"], record["reason"], record["status"]) == ("refused", "recording_key_unknown", 502)


def test_a_key_that_cannot_unwrap_is_502_with_its_own_code(client, grant):
    resp = client.get(grant(WRONG_KEY), headers={"Range": "bytes=0-99"})
    assert resp.status_code == 502
    assert resp.get_json()["error"]["code"] == "recording_unwrap_failed"


def test_corrupt_encryption_details_are_502(client, grant, twilio):
    sid = "RE" + "9" * 32
    install(twilio)
    body, ctype = twilio.recordings[ENCRYPTED]
    twilio.recordings[sid] = (body, ctype)
    try:
        for details in ({**twilio.encryption[ENCRYPTED], "iv": "AAAA"}, {"type": "rsa-aes"}, "junk",
                        {**twilio.encryption[ENCRYPTED], "type": "aes-only"}):
            twilio.encryption[sid] = details  # type: ignore[assignment]
            resp = client.get(grant(sid))
            assert resp.status_code == 502
            assert resp.get_json()["error"]["code"] == "recording_encryption_invalid"
        twilio.encryption[sid] = {**twilio.encryption[ENCRYPTED], "encrypted_cek": "AAAA" * 64}
        assert client.get(grant(sid)).get_json()["error"]["code"] == "recording_unwrap_failed"
    finally:
        twilio.recordings.pop(sid)
        twilio.encryption.pop(sid)


def test_a_plain_recording_on_the_same_source_is_served_as_it_is(client, grant):
    resp = client.get(grant(PLAIN_WAV))
    assert resp.status_code == 200 and resp.data == PLAIN_WAV_BODY
    part = client.get(grant(PLAIN_WAV), headers={"Range": "bytes=-16"})
    assert part.status_code == 206 and part.data == PLAIN_WAV_BODY[-16:]
    assert part.headers["Content-Range"] == f"bytes {len(PLAIN_WAV_BODY) - 16}-{len(PLAIN_WAV_BODY) - 1}/" \
                                            f"{len(PLAIN_WAV_BODY)}"


# --- cost and confidentiality of the metadata ---------------------------------------------------------------------
def test_the_recording_resource_is_read_once_per_grant(client, grant, twilio):
    one, other = grant(ENCRYPTED), grant(ENCRYPTED)
    before = twilio.resource_requests.count(ENCRYPTED)
    for header in ("bytes=0-99", "bytes=1000-2000", "bytes=-5", "bytes=70000-"):
        assert client.get(one, headers={"Range": header}).status_code == 206
    assert client.head(one).status_code == 200
    assert twilio.resource_requests.count(ENCRYPTED) == before + 1
    client.get(other, headers={"Range": "bytes=0-0"})
    assert twilio.resource_requests.count(ENCRYPTED) == before + 2


def test_the_store_holds_the_details_sealed_never_the_content_key(client, grant, twilio, enc_env):
    assert client.get(grant(ENCRYPTED), headers={"Range": "bytes=0-9"}).status_code == 206
    db = sqlite3.connect(enc_env["RESOLVER_STORE"].removeprefix("sqlite:///"))
    rows = db.execute("SELECT * FROM kv").fetchall()
    db.close()
    blob = b"".join(bytes(v) if isinstance(v, bytes | memoryview) else str(v).encode() for row in rows for v in row)
    assert any(str(row[0]).startswith("encd:") for row in rows)
    for secret in secrets_of(twilio, ENCRYPTED):
        assert secret.encode() not in blob
    assert bytes.fromhex(secrets_of(twilio, ENCRYPTED)[3]) not in blob  # the raw CEK


def test_no_key_material_in_any_output(client, grant, twilio, enc_env, caplog, capsys):
    caplog.set_level(logging.DEBUG)
    bodies = []
    for sid in (ENCRYPTED, UNKNOWN_KEY, WRONG_KEY, TAMPERED):
        resp = client.get(grant(sid), buffered=False)
        try:
            bodies.extend(resp.response)
        except StreamAborted:
            pass
        resp.close()
        bodies.append(repr(resp.headers).encode())
    app_ctx = client.application.extensions["resolver"]
    text = "\n".join([caplog.text, capsys.readouterr().err, Path(enc_env["RESOLVER_AUDIT_LOG"]).read_text(),
                      repr(app_ctx.settings), repr(app_ctx.settings.sources), repr(app_ctx.recordings.cache)])
    for b in bodies[-6:]:
        if len(b) < 2000:
            text += b.decode("latin-1")
    secrets = secrets_of(twilio, ENCRYPTED) + secrets_of(twilio, TAMPERED)
    for secret in secrets:
        assert secret not in text
    assert "PRIVATE KEY" not in text and KEY_SID in repr(app_ctx.settings.sources["recordings"].key_sids)


# --- a failed tag check is remembered -------------------------------------------------------------------------------
def _drain_aborted(client, path: str) -> int:  # type: ignore[no-untyped-def]
    resp = client.get(path, buffered=False)
    got = 0
    with pytest.raises(StreamAborted):
        for chunk in resp.response:
            got += len(chunk)
    resp.close()
    return got


def test_after_a_failed_tag_check_its_ranges_are_refused(client, grant, enc_env, app, caplog):
    caplog.set_level(logging.WARNING)
    assert client.get(grant(TAMPERED), headers={"Range": "bytes=100-199"}).status_code == 206  # not known yet
    assert _drain_aborted(client, grant(TAMPERED)) < SIZE
    for header in ("bytes=100-199", "bytes=-10", f"bytes={SIZE // 2}-", f"bytes=16-{SIZE - 2}"):
        resp = client.get(grant(TAMPERED), headers={"Range": header})  # new grants: the mark is the recording's
        assert resp.status_code == 502, header
        assert resp.get_json()["error"]["code"] == "recording_integrity_failed"
    record = grant_records(enc_env)[-1]
    assert (record["outcome"], record["reason"], record["status"]) == ("refused", "recording_integrity_failed", 502)
    assert any("failed its integrity check earlier" in r.getMessage() and TAMPERED in r.getMessage()
               for r in caplog.records)
    # The whole file is still checked (and still cut off), HEAD still answers, other recordings are untouched.
    assert _drain_aborted(client, grant(TAMPERED)) < SIZE
    assert client.head(grant(TAMPERED)).status_code == 200
    ok = client.get(grant(ENCRYPTED), headers={"Range": "bytes=100-199"})
    assert ok.status_code == 206 and ok.data == PLAINTEXT[100:200]
    # The mark is in the shared store: another instance on the same store refuses too.
    other = create_app(config.from_env(enc_env))
    try:
        other_path = mint(other.extensions["resolver"].signer, "recordings", TAMPERED)
        assert other.test_client().get(other_path, headers={"Range": "bytes=0-9"}).status_code == 502
    finally:
        other.extensions["resolver"].close()


def test_the_mark_is_sealed_and_cleared_by_a_whole_download_that_verifies(client, grant, app, twilio):
    from enc_fixtures import _flip

    failed = app.extensions["resolver"].recordings.failed
    source = app.extensions["resolver"].settings.sources["recordings"]
    store = app.extensions["resolver"].store
    _drain_aborted(client, grant(TAMPERED_TAG))
    name = failed.name(source, TAMPERED_TAG)
    raw = store.get(name)
    assert raw is not None and TAMPERED_TAG.encode() not in raw and TAMPERED_TAG not in name
    store.put(name, b"\x00" * 40, 60)  # a planted mark that does not open under the seal is ignored
    assert client.get(grant(TAMPERED_TAG), headers={"Range": "bytes=0-9"}).status_code == 206
    _drain_aborted(client, grant(TAMPERED_TAG))
    assert client.get(grant(TAMPERED_TAG), headers={"Range": "bytes=0-9"}).status_code == 502
    _flip(TAMPERED_TAG, twilio, len(PLAINTEXT) + 15)  # the operator restores the media
    try:
        whole = client.get(grant(TAMPERED_TAG))
        assert whole.status_code == 200 and whole.data == PLAINTEXT
        whole.close()
        again = client.get(grant(TAMPERED_TAG), headers={"Range": "bytes=0-9"})
        assert again.status_code == 206 and again.data == PLAINTEXT[:10]
    finally:
        _flip(TAMPERED_TAG, twilio, len(PLAINTEXT) + 15)
