"""Reading the audit trail: verify every writer's hash chain, and answer a reviewer's questions.

`verify` works on the lines alone: for each writer it recomputes every record's hash, checks that `seq`
runs 0, 1, 2... in file order without gaps or repeats and that each `prev` is the hash of the record
before; every break is reported with `file:line`. What it cannot see is written in `audit.py`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .log import CHAIN_EVENTS, GENESIS, record_hash


@dataclass
class Problem:
    where: str  # "file:line"
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass
class _Entry:
    seq: int
    prev: str
    hash: str
    where: str
    event: str
    pid: object = None


@dataclass
class Report:
    records: int = 0
    writers: int = 0
    problems: list[Problem] = field(default_factory=list)
    open_chains: list[str] = field(default_factory=list)  # writer ids without chain_end
    skipped: int = 0  # lines that are not audit records, with --mixed (an access log sharing stdout)
    unfinished: list[str] = field(default_factory=list)  # "file:line" of grants started without a served record

    @property
    def ok(self) -> bool:
        return not self.problems

    def text(self) -> str:
        lines = [str(p) for p in self.problems]
        lines += [f"note: chain of writer {w} has no chain_end (running, crashed, or its tail was cut)"
                  for w in self.open_chains]
        lines += [f"note: {where}: stream started with no served record (still running, or the worker died)"
                  for where in self.unfinished]
        verdict = "OK" if self.ok else "FAIL"
        lines.append(f"{verdict}: {self.records} records, {self.writers} writers, "
                     f"{len(self.problems)} problems, {len(self.open_chains)} open chains"
                     + (f", {self.skipped} other lines skipped" if self.skipped else ""))
        return "\n".join(lines)


def _lines(paths: Iterable[str]) -> Iterator[tuple[str, bytes]]:
    for path in paths:
        with open(path, "rb") as f:
            for number, line in enumerate(f, 1):
                yield f"{path}:{number}", line


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        rec = json.loads(line)
    except (UnicodeDecodeError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _chain_fields_ok(rec: dict[str, Any]) -> bool:
    return (isinstance(rec.get("writer"), str) and isinstance(rec.get("seq"), int)
            and isinstance(rec.get("prev"), str) and isinstance(rec.get("hash"), str))


def verify(paths: Iterable[str], *, mixed: bool = False) -> Report:
    """Check every writer's chain across the files (give rotated files oldest first).

    `mixed`: the files are a stream the audit records share with other lines (stdout with the access log,
    a log drain's export): a line that is not an audit record is counted and skipped. Nothing is lost by
    that: a record mangled into a foreign line leaves a gap in its writer's seq, which is still reported."""
    paths = list(paths)
    report = Report()
    chains: dict[str, list[_Entry]] = {}
    streams: dict[str, str] = {}  # request_id of a started grant -> where, until its served record
    for where, line in _lines(paths):
        if not line.strip():
            continue
        rec = _parse(line)
        if rec is None or not _chain_fields_ok(rec):
            if mixed:
                report.skipped += 1
            else:
                report.problems.append(Problem(where, "not an audit record (edited or foreign line)"))
            continue
        report.records += 1
        if record_hash(rec) != rec["hash"]:
            report.problems.append(Problem(
                where, f"writer {rec['writer']} seq {rec['seq']}: record edited (hash does not match it)"))
        entry = _Entry(rec["seq"], rec["prev"], rec["hash"], where, str(rec.get("event")), rec.get("pid"))
        chains.setdefault(rec["writer"], []).append(entry)
        if rec.get("event") == "grant" and rec.get("request_id"):
            if rec.get("outcome") == "started":
                streams[rec["request_id"]] = where
            else:
                streams.pop(rec["request_id"], None)
    report.writers = len(chains)
    report.unfinished = list(streams.values())
    for writer, entries in chains.items():
        _check_chain(writer, entries, report)
    files = {path: n for n, path in enumerate(dict.fromkeys(paths))}
    report.problems.sort(key=lambda p: (files.get(p.where.rsplit(":", 1)[0], 0), int(p.where.rsplit(":", 1)[1])))
    return report


def _check_chain(writer: str, entries: list[_Entry], report: Report) -> None:
    seen: dict[int, _Entry] = {}
    top = -1
    for e in entries:  # file order
        if e.seq in seen:
            report.problems.append(Problem(e.where, f"writer {writer}: seq {e.seq} duplicated "
                                                    f"(first at {seen[e.seq].where})"))
            continue
        if e.seq < top:
            report.problems.append(Problem(e.where, f"writer {writer}: seq {e.seq} out of order "
                                                    f"(comes after seq {top} at {seen[top].where})"))
        seen[e.seq] = e
        top = max(top, e.seq)
    ordered = [seen[s] for s in sorted(seen)]
    first = ordered[0]
    if first.seq != 0:
        report.problems.append(Problem(first.where, f"writer {writer}: chain starts at seq {first.seq}: "
                                                    f"records 0..{first.seq - 1} missing"))
    elif first.prev != GENESIS:
        report.problems.append(Problem(first.where, f"writer {writer}: seq 0 does not start a chain"))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.seq != a.seq + 1:
            missing = f"{a.seq + 1}" if b.seq == a.seq + 2 else f"{a.seq + 1}..{b.seq - 1}"
            report.problems.append(Problem(b.where, f"writer {writer}: records seq {missing} missing "
                                                    f"(deleted?) between {a.where} and here"))
        elif b.prev != a.hash:
            report.problems.append(Problem(b.where, f"writer {writer}: seq {b.seq} does not chain to "
                                                    f"seq {a.seq} at {a.where} (edited or replaced)"))
    ends = [e for e in ordered if e.event == "chain_end"]
    if not ends:
        report.open_chains.append(writer)
    elif ends[0] is not ordered[-1]:
        report.problems.append(Problem(ordered[-1].where, f"writer {writer}: records after its chain_end"))


def _when(value: str) -> datetime | None:
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (TypeError, ValueError, AttributeError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def query(
    paths: Iterable[str],
    *,
    subject: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    event: str | Iterable[str] | None = None,
) -> Iterator[dict[str, Any]]:
    """Records matching every filter given: subject is a Flex identity (either form: IAM's escaped `identity`
    or its `realm_user_id`) or worker SID; until is exclusive.

    Chain bookkeeping (`chain_start`, `chain_end`) is left out unless asked for by `event`."""
    events = {event} if isinstance(event, str) else set(event) if event is not None else None
    for _, line in _lines(paths):
        rec = _parse(line)
        if rec is None:
            continue
        name = rec.get("event")
        if events is not None and name not in events:
            continue
        if events is None and name in CHAIN_EVENTS:
            continue
        if subject is not None and subject not in (rec.get("identity"), rec.get("realm_user_id"),
                                                   rec.get("worker_sid")):
            continue
        if task is not None and rec.get("task_sid") != task:
            continue
        if since is not None or until is not None:
            when = _when(rec.get("time", ""))
            if when is None or (since is not None and when < since) or (until is not None and when >= until):
                continue
        yield rec


CSV_COLUMNS = (
    "time", "event", "outcome", "reason", "via", "identity", "realm_user_id", "worker_sid", "roles", "task_sid",
    "source", "key", "media_type", "mode", "method", "status", "bytes", "range", "duration_ms", "complete", "client",
    "request_id", "link_id", "grant_id", "expires_at", "count", "kind", "writer", "seq",
)


def _cell(value: object) -> str:
    """Spreadsheets run cells starting with = + - @ as formulas: defuse them (OWASP CSV injection)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """CSV text, header first, one string per row."""
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    yield buf.getvalue()
    for rec in records:
        buf.seek(0)
        buf.truncate()
        out.writerow([_cell(rec.get(c)) for c in CSV_COLUMNS])
        yield buf.getvalue()
