"""Verifying and querying the trail: every kind of tampering is named by file:line; chains span processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from itertools import count
from pathlib import Path

import pytest

from resolver.audit import log as audit
from resolver.audit import trail as audit_trail
from resolver.audit.log import AuditLog

WK = "WK" + "a" * 32
WT = "WT" + "b" * 32
ROOT = Path(__file__).resolve().parents[2]


def fixed_clock(start: int = 0):
    """One record an hour from 2026-01-01T00:00Z."""
    ticks = count(start)
    return lambda: datetime.fromtimestamp(1_767_225_600 + next(ticks) * 3600, UTC).isoformat().replace(
        "+00:00", "Z")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def write_trail(path: Path, n: int = 5, **kw) -> AuditLog:
    log = AuditLog.open(str(path), clock=fixed_clock(), **kw)
    for i in range(n):
        log.record("grant", outcome="served", identity=f"user{i}@example.com", worker_sid=WK,
                   task_sid=WT, source="recordings", key=f"RE{i}", status=206, bytes=1000 + i,
                   range="bytes=0-999", duration_ms=12, complete=True, client="203.0.113.9",
                   request_id=f"r{i}")
    log.close()
    return log


def test_intact_trail_verifies(tmp_path):
    write_trail(tmp_path / "a.log")
    report = audit_trail.verify([str(tmp_path / "a.log")])
    assert report.ok and report.records == 7 and report.writers == 1 and not report.open_chains
    assert report.text().endswith("OK: 7 records, 1 writers, 0 problems, 0 open chains")


def test_deleted_line_is_detected_with_its_place(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    kept = lines(path)
    del kept[3]
    path.write_text("\n".join(kept) + "\n")
    report = audit_trail.verify([str(path)])
    assert not report.ok
    writer = json.loads(kept[0])["writer"]
    assert [str(p) for p in report.problems] == [
        f"{path}:4: writer {writer}: records seq 3 missing (deleted?) between {path}:3 and here"
    ]


def test_edited_line_is_detected(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    text = lines(path)
    text[2] = text[2].replace("user1@example.com", "someone@example.com")
    path.write_text("\n".join(text) + "\n")
    report = audit_trail.verify([str(path)])
    assert [p.where for p in report.problems] == [f"{path}:3"]
    assert "record edited" in report.problems[0].message


def test_edited_line_with_recomputed_hash_breaks_the_next_link(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    text = lines(path)
    rec = json.loads(text[2])
    rec["identity"] = "someone@example.com"
    rec["hash"] = audit.record_hash(rec)
    text[2] = json.dumps(rec)
    path.write_text("\n".join(text) + "\n")
    report = audit_trail.verify([str(path)])
    assert [p.where for p in report.problems] == [f"{path}:4"]
    assert "does not chain to seq 2" in report.problems[0].message


def test_swapped_lines_are_detected(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    text = lines(path)
    text[2], text[3] = text[3], text[2]
    path.write_text("\n".join(text) + "\n")
    report = audit_trail.verify([str(path)])
    assert [p.where for p in report.problems] == [f"{path}:4"]
    assert "seq 2 out of order (comes after seq 3" in report.problems[0].message


def test_duplicated_and_foreign_lines_are_detected(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    text = lines(path)
    text.insert(4, text[2])
    text.insert(1, "GET /m/eyJ... 200")
    path.write_text("\n".join(text) + "\n")
    messages = [str(p) for p in audit_trail.verify([str(path)]).problems]
    assert messages[0] == f"{path}:2: not an audit record (edited or foreign line)"
    assert "seq 2 duplicated" in messages[1] and messages[1].startswith(f"{path}:6:")


def test_removed_head_and_cut_tail(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    text = lines(path)
    path.write_text("\n".join(text[2:-1]) + "\n")
    report = audit_trail.verify([str(path)])
    assert "chain starts at seq 2: records 0..1 missing" in report.problems[0].message
    assert len(report.problems) == 1 and report.open_chains == [json.loads(text[0])["writer"]]


def test_rotated_files_verify_as_one_chain(tmp_path):
    path = tmp_path / "a.log"
    write_trail(path)
    text = lines(path)
    (tmp_path / "a.log.1").write_text("\n".join(text[:3]) + "\n")
    path.write_text("\n".join(text[3:]) + "\n")
    assert audit_trail.verify([str(tmp_path / "a.log.1"), str(path)]).ok
    assert not audit_trail.verify([str(path), str(tmp_path / "a.log.1")]).ok


WRITER_SCRIPT = textwrap.dedent("""
    import os, sys, threading
    from resolver.audit.log import AuditLog
    log = AuditLog.open(sys.argv[1])
    log.record("resolve", identity="parent-before-fork")
    children = []
    for n in range(3):
        pid = os.fork()
        if pid == 0:
            def work(t):
                for i in range(100):
                    log.record("grant", identity=f"child{n}-thread{t}", bytes=i)
            threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            log.close()
            os._exit(0)
        children.append(pid)
    for i in range(200):
        log.record("resolve", identity="parent", bytes=i)
    for pid in children:
        assert os.waitpid(pid, 0)[1] == 0
""")


def test_forked_and_separate_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(path)], env=env) for _ in range(2)]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    records = [json.loads(x) for x in lines(path)]
    # 2 scripts x (parent: start + 1 + 200 + end; 3 children: start + 400 + end)
    assert len(records) == 2 * (203 + 3 * 402)
    starts = [r for r in records if r["event"] == "chain_start"]
    assert len(starts) == 8 and sum("parent" in r for r in starts) == 6
    report = audit_trail.verify([str(path)])
    assert report.ok and report.writers == 8 and not report.open_chains, report.text()


def test_stdout_target_writes_whole_lines(tmp_path):
    script = "from resolver.audit.log import AuditLog\nlog = AuditLog.open('-')\n" \
             "[log.record('resolve', identity=f'u{i}') for i in range(50)]\n"
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, check=True, timeout=60).stdout
    (tmp_path / "out.log").write_bytes(out)
    report = audit_trail.verify([str(tmp_path / "out.log")])
    assert report.ok and report.records == 52, report.text()  # the at-exit chain_end closes the chain


# --- query ----------------------------------------------------------------------------------------------

@pytest.fixture
def trail(tmp_path):
    log = AuditLog.open(str(tmp_path / "q.log"), clock=fixed_clock())
    other = "WT" + "c" * 32
    log.record("link", task_sid=WT, source="recordings", key="RE1", count=1)
    log.record("resolve", outcome="allowed", identity="alice", worker_sid=WK, task_sid=WT)
    log.record("grant", outcome="served", identity="alice", worker_sid=WK, task_sid=WT, bytes=10)
    log.record("resolve", outcome="denied", reason="forbidden", identity="bob", task_sid=other)
    log.record("grant", outcome="served", identity="=HYPERLINK(1)", task_sid=other, bytes=5)
    log.close()
    return str(tmp_path / "q.log")


def idents(records):
    return [(r["event"], r.get("identity")) for r in records]


def test_query_filters(trail):
    alice = [("resolve", "alice"), ("grant", "alice")]
    assert idents(audit_trail.query([trail], subject="alice")) == alice
    assert idents(audit_trail.query([trail], subject=WK, event="grant")) == [("grant", "alice")]
    assert len(list(audit_trail.query([trail], task=WT))) == 3
    assert idents(audit_trail.query([trail], event=["resolve"])) == [("resolve", "alice"), ("resolve", "bob")]
    assert [r["event"] for r in audit_trail.query([trail])] == [
        "link", "resolve", "grant", "resolve", "grant"]
    assert len(list(audit_trail.query([trail], event="chain_start"))) == 1


def test_query_time_window(trail):
    # fixed_clock: hour 0 is chain_start, records follow an hour apart from 2026-01-01T01:00Z
    since = datetime(2026, 1, 1, 2, tzinfo=UTC)
    until = datetime(2026, 1, 1, 4, tzinfo=UTC)
    window = audit_trail.query([trail], since=since, until=until)
    assert idents(window) == [("resolve", "alice"), ("grant", "alice")]
