"""The audit writer: records, the field allowlist, redaction of secrets, injection, write failures."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

import pytest

from resolver.access.signing import Link, Signer
from resolver.audit import log as audit
from resolver.audit import trail as audit_trail
from resolver.audit.log import AuditError, AuditLog

WK = "WK" + "a" * 32
WT = "WT" + "b" * 32


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_record_has_time_event_and_chain_fields(tmp_path):
    log = AuditLog.open(str(tmp_path / "a.log"))
    rec = log.record("resolve", outcome="allowed", identity="alice", worker_sid=WK, task_sid=WT)
    assert rec["time"].endswith("Z") and datetime.fromisoformat(rec["time"].replace("Z", "+00:00")).tzinfo
    assert rec["event"] == "resolve" and rec["seq"] == 1 and rec["writer"] == log.writer
    assert rec["hash"] == audit.record_hash(rec)
    written = [json.loads(x) for x in lines(tmp_path / "a.log")]
    assert [r["event"] for r in written] == ["chain_start", "resolve"]
    assert written[0]["pid"] == os.getpid() and written[1]["prev"] == written[0]["hash"]


def test_file_is_created_private(tmp_path):
    AuditLog.open(str(tmp_path / "a.log")).record("resolve")
    assert (tmp_path / "a.log").stat().st_mode & 0o077 == 0


def test_unknown_fields_are_dropped_not_written(tmp_path):
    log = AuditLog.open(str(tmp_path / "a.log"))
    rec = log.record("resolve", identity="alice", token="eyJsecret", authorization="Bearer xyz",
                     **{"Bad Name": 1})
    assert "token" not in rec and "authorization" not in rec and "Bad Name" not in rec
    assert rec["dropped"] == "token,authorization,?"
    text = (tmp_path / "a.log").read_text()
    assert "eyJsecret" not in text and "xyz" not in text


def test_chain_fields_cannot_be_forged_by_callers(tmp_path):
    log = AuditLog.open(str(tmp_path / "a.log"))
    rec = log.record("resolve", seq=99, hash="0", writer="evil", prev="x", time="1999")
    assert rec["seq"] == 1 and rec["writer"] == log.writer and rec["time"] != "1999"
    assert audit_trail.verify([str(tmp_path / "a.log")]).ok


@pytest.mark.parametrize("name,value,expected", [
    ("worker_sid", "WK123", audit.INVALID),
    ("task_sid", WT + "\n", audit.INVALID),
    ("bytes", "12", audit.INVALID),
    ("bytes", True, audit.INVALID),
    ("complete", 1, audit.INVALID),
    ("reason", "Invalid Token!", audit.INVALID),
    ("method", "GET", "GET"),
    ("roles", ("supervisor", "admin"), "admin,supervisor"),
])
def test_fields_are_checked_against_their_spec(tmp_path, name, value, expected):
    rec = AuditLog.open(str(tmp_path / "a.log")).record("resolve", **{name: value})
    assert rec[name] == expected


def test_token_shaped_and_configured_secrets_are_redacted(tmp_path):
    signer = Signer(["k" * 40])
    link = signer.sign_link(Link(source="recordings", key="RE1", type="VoiceRecording", task=WT))
    _, grant = signer.sign_grant(Link(source="recordings", key="RE1", type="VoiceRecording"),
                                 identity="alice", worker=WK, issued_at=1, expires_at=2)
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    log = AuditLog.open(str(tmp_path / "a.log"), secrets=["upstream-password-123", "short"])
    rec = log.record("resolve", identity=jwt, key=f"/m/{grant}", source=link,
                     reason="x", client="pw=upstream-password-123", range="short")
    assert rec["identity"] == rec["key"] == rec["source"] == rec["client"] == audit.REDACTED
    assert rec["range"] == "short"  # secrets shorter than MIN_SECRET_LENGTH are not matched
    text = (tmp_path / "a.log").read_text()
    for secret in (jwt, grant, link, "upstream-password-123"):
        assert secret not in text


def test_remembered_texts_are_recorded_as_first_checked_and_secrets_are_never_remembered(tmp_path, monkeypatch):
    """The writer remembers field texts it found clean (they repeat record after record); a repeat is
    recorded exactly as the first, a secret is redacted every time and never remembered, and what is
    remembered stays bounded."""
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlc2lnbmF0dXJl"
    log = AuditLog.open(str(tmp_path / "a.log"), secrets=["upstream-password-123"])
    fields = {"identity": "alice@example.com", "worker_sid": WK, "task_sid": WT + "x", "key": "x" * 600,
              "client": "pw=upstream-password-123", "range": jwt}
    first, again = log.record("resolve", **fields), log.record("resolve", **fields)
    fresh = AuditLog.open(str(tmp_path / "b.log"), secrets=["upstream-password-123"]).record("resolve", **fields)
    for rec in (first, again):
        assert {k: rec[k] for k in fields} == {k: fresh[k] for k in fields}
    assert again["task_sid"] == audit.INVALID and again["key"].endswith(audit.TRUNCATED)
    assert again["client"] == again["range"] == audit.REDACTED
    remembered = " ".join(f"{k} {v}" for k, v in log._clean_texts)
    assert "upstream-password-123" not in remembered and jwt not in remembered and "alice@example.com" in remembered
    monkeypatch.setattr(audit, "CLEAN_TEXTS", 8)
    for i in range(50):
        log.record("grant", identity=f"user{i}")
    assert len(log._clean_texts) <= 8


@pytest.mark.parametrize("identity, key", [
    ("heyJude.lennon@example.com", "calls/CA" + "0123456789abcdef" * 2 + ".RE" + "fedcba9876543210" * 2),
    ("user_40example_2Dcom", "RE" + "a" * 32),
    ("eyJane.doe@example.com", "exports/2026/q1/queue.support.escalations.transcript-000123456789.json"),
])
def test_real_identities_and_keys_stay_in_the_trail(tmp_path, identity, key):
    log = AuditLog.open(str(tmp_path / "a.log"))
    rec = log.record("grant", outcome="served", identity=identity, key=key)
    assert rec["identity"] == identity and rec["key"] == key


@pytest.mark.parametrize("evil", [
    'alice"}\n{"event":"resolve","outcome":"allowed"',
    "alice\r\nforged line",
    "alice\x00\x1b[31mred\x7f",
    "alice\u2028\u2029\u0085next",
    "x" * 1_000_000,
])
def test_injection_stays_on_one_bounded_line(tmp_path, evil):
    log = AuditLog.open(str(tmp_path / "a.log"))
    log.record("resolve", identity=evil, key=evil, outcome="denied", reason="forbidden")
    raw = (tmp_path / "a.log").read_bytes()
    assert raw.count(b"\n") == 2 and raw.isascii()
    rec = json.loads(raw.splitlines()[1])
    assert rec["outcome"] == "denied" and len(rec["identity"]) <= 256 + len(audit.TRUNCATED)
    assert evil.startswith(rec["identity"].removesuffix(audit.TRUNCATED))
    assert len(raw) < 4096
    assert audit_trail.verify([str(tmp_path / "a.log")]).ok


def test_write_failure_raises_and_keeps_the_chain(tmp_path):
    log = AuditLog.open("/dev/full")
    with pytest.raises(AuditError):
        log.record("resolve")
    assert log._seq == 0


def test_closed_log_refuses_records(tmp_path):
    log = AuditLog.open(str(tmp_path / "a.log"))
    log.record("resolve")
    log.close()
    with pytest.raises(AuditError):
        log.record("resolve")
    assert json.loads(lines(tmp_path / "a.log")[-1]) | {"event": "chain_end", "records": 2} == json.loads(
        lines(tmp_path / "a.log")[-1])

