"""`resolver audit verify` and `resolver audit query` through the real click command."""

from __future__ import annotations

import csv
import io
import json

import pytest
from click.testing import CliRunner

from resolver.audit.log import AuditLog
from resolver.cli import main

WK = "WK" + "a" * 32
WT = "WT" + "b" * 32
OTHER = "WT" + "c" * 32


@pytest.fixture
def trail(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog.open(str(path))
    log.record("resolve", outcome="allowed", identity="alice", worker_sid=WK, task_sid=WT)
    log.record("grant", outcome="served", identity="alice", worker_sid=WK, task_sid=WT, bytes=10,
               range="bytes=0-9", status=206, complete=True)
    log.record("resolve", outcome="denied", reason="forbidden", identity="bob", task_sid=OTHER)
    log.record("grant", outcome="served", identity="=cmd|' /C calc'!A0", task_sid=OTHER, bytes=5)
    log.close()
    return path


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_verify_intact_exits_zero(trail):
    result = run("audit", "verify", str(trail))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "OK: 6 records, 1 writers, 0 problems, 0 open chains"


def _mixed(trail):
    """The records interleaved with gunicorn access-log and error lines, as on a shared stdout."""
    out = []
    for i, line in enumerate(trail.read_text().splitlines()):
        out += [f'127.0.0.1 "GET /m/<grant_token>" 206 1024 3ms rid=abc{i}', line]
    out.append("[2026-12-02 15:00:00 +0000] [42] [INFO] Shutting down: Master")
    trail.write_text("\n".join(out) + "\n")


def test_verify_mixed_skips_other_lines_with_a_count(trail):
    _mixed(trail)
    assert run("audit", "verify", str(trail)).exit_code == 1  # without --mixed a foreign line is a problem
    result = run("audit", "verify", "--mixed", str(trail))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "OK: 6 records, 1 writers, 0 problems, 0 open chains, 7 other lines skipped"


def test_verify_mixed_still_finds_a_record_mangled_into_a_foreign_line(trail):
    _mixed(trail)
    lines = trail.read_text().splitlines()
    lines[5] = "127.0.0.1 looks like an access log line now"  # was the third record
    trail.write_text("\n".join(lines) + "\n")
    result = run("audit", "verify", "--mixed", str(trail))
    assert result.exit_code == 1 and "missing" in result.output


def test_verify_names_the_line_of_a_deleted_record(trail):
    lines = trail.read_text().splitlines()
    del lines[2]
    trail.write_text("\n".join(lines) + "\n")
    result = run("audit", "verify", str(trail))
    assert result.exit_code == 1
    assert f"{trail}:3: writer " in result.output and "records seq 2 missing (deleted?)" in result.output
    assert result.output.strip().endswith("FAIL: 5 records, 1 writers, 1 problems, 0 open chains")


def test_verify_require_end_fails_on_a_cut_tail(trail):
    lines = trail.read_text().splitlines()
    trail.write_text("\n".join(lines[:-1]) + "\n")
    assert run("audit", "verify", str(trail)).exit_code == 0
    result = run("audit", "verify", "--require-end", str(trail))
    assert result.exit_code == 1 and "has no chain_end" in result.output


def test_query_json_by_task_and_event(trail):
    result = run("audit", "query", str(trail), "--task", WT, "--event", "grant")
    assert result.exit_code == 0, result.output
    records = [json.loads(x) for x in result.output.splitlines()]
    assert [(r["event"], r["identity"], r["bytes"]) for r in records] == [("grant", "alice", 10)]


def test_query_subject_since_relative(trail):
    result = run("audit", "query", str(trail), "--subject", "bob", "--since", "1h")
    assert [json.loads(x)["reason"] for x in result.output.splitlines()] == ["forbidden"]
    assert run("audit", "query", str(trail), "--until", "1h").output == ""


def test_query_csv_defuses_formulas(trail):
    result = run("audit", "query", str(trail), "--event", "grant", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [r["identity"] for r in rows] == ["alice", "'=cmd|' /C calc'!A0"]
    assert rows[0]["range"] == "bytes=0-9" and rows[0]["complete"] == "True" and rows[0]["task_sid"] == WT


def test_query_rejects_a_bad_time(trail):
    result = run("audit", "query", str(trail), "--since", "last tuesday")
    assert result.exit_code == 2 and "--since" in result.output


def test_verify_reports_a_stream_started_without_an_end(tmp_path):
    path = tmp_path / "audit.log"
    log = AuditLog.open(str(path))
    log.record("grant", outcome="started", identity="alice", request_id="r1", range="bytes=0-")
    log.record("grant", outcome="served", identity="alice", request_id="r1", bytes=10, complete=True)
    log.record("grant", outcome="started", identity="bob", request_id="r2", range="bytes=0-")  # then kill -9
    log.close()
    result = run("audit", "verify", str(path))
    assert result.exit_code == 0
    assert f"note: {path}:4: stream started with no served record" in result.output  # line 1 is chain_start
    assert "alice" not in result.output
