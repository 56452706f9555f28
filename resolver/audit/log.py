"""The audit trail: who got which media, one JSON object per line, hash-chained so edits show.

Writing. `AuditLog.open(target)` appends to a file (`O_APPEND`, one `write()` per line, so several
gunicorn workers can share it) or to stdout (`-`). `record(event, **fields)` accepts only the field names
in `FIELDS` (policy as data): anything else is dropped, text is bounded and checked against its pattern,
and a value shaped like a token (a JWT, a signed link or grant) or containing a configured secret is
replaced by `[redacted]`, so no code path can put a secret in the trail. JSON escaping with
`ensure_ascii` keeps every record on one line whatever the input holds.

Tamper evidence. Every process gets its own chain: a random `writer` id, a `seq` counting from 0, `prev`
(the hash of that writer's previous record) and `hash` (SHA-256 over the canonical JSON of the record
without `hash`). Deleting, editing, duplicating or reordering a line breaks the chain, and
`audit_trail.verify` names the file and line. A chain starts with a `chain_start` record and, on clean
exit, ends with `chain_end`.

What a hash chain cannot show (no key is involved, on purpose: a key on the same box protects nothing):
someone who can rewrite the file can rebuild a writer's chain from the edited record onward, and can cut
off a chain's tail or delete a whole chain of a writer. A missing `chain_end` is reported as an open
chain (still running, crashed, or truncated). The real defence is to ship the lines off the box as they
are written (stdout to the platform's log drain, or a forwarder tailing the file) and verify there.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import re
import secrets
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from .. import redact
from ..timefmt import utc_z

log = logging.getLogger("resolver.audit")  # the name in log lines, as before the move

GENESIS = "0" * 64
REDACTED = redact.REDACTED
INVALID = "[invalid]"
TRUNCATED = "...[truncated]"
CLEAN_TEXTS = 4096  # field texts a writer remembers as checked and cleaned (then it starts afresh)


@dataclass(frozen=True)
class Field:
    """What one audit field may hold: its type and, for text, a length bound and a pattern."""

    kind: type
    max_len: int = 256
    pattern: str | None = None
    _match: Callable[[str], object] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        if self.pattern:  # compiled once: records are written on every request
            object.__setattr__(self, "_match", re.compile(self.pattern).fullmatch)

    def clean(self, value: object) -> object:
        if self.kind is bool:
            return bool(value) if isinstance(value, bool) else INVALID
        if self.kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool)
            return value if ok else INVALID
        if isinstance(value, list | tuple | set | frozenset):
            value = ",".join(sorted(str(v) for v in value))
        text = value if isinstance(value, str) else str(value)
        if len(text) > self.max_len:
            text = text[: self.max_len] + TRUNCATED
        if self._match is not None and not self._match(text):
            return INVALID
        return text


_WORD = r"[a-z0-9_]{1,40}"
_SID = r"{}[0-9a-f]{{32}}"

# The only names a record may carry besides the writer's own (time and the chain fields). A new field is
# added here, with its bound, or it is dropped: that is what keeps tokens and credentials out.
FIELDS: dict[str, Field] = {
    "event": Field(str, 40, _WORD),
    "outcome": Field(str, 32, _WORD),  # issued, allowed, denied, served, redirected, refused, attached, ...
    "reason": Field(str, 64, r"[a-z0-9_]{0,40}"),  # the error code of a refusal (errors.ResolverError.code)
    "via": Field(str, 16, _WORD),  # resolve (the Flex plugin), provider (the Insights player), cli, api
    "request_id": Field(str, 64, r"[A-Za-z0-9._-]{1,64}"),
    "identity": Field(str, 256),  # the Flex identity, as Twilio's IAM reported it (escaped: user_40example_2Ecom)
    "realm_user_id": Field(str, 256),  # the same user as the identity provider names them (user@example.com)
    "worker_sid": Field(str, 34, _SID.format("WK")),
    "roles": Field(str, 128),  # comma-separated Flex roles
    "task_sid": Field(str, 34, _SID.format("WT")),
    "workspace_sid": Field(str, 34, _SID.format("WS")),
    "source": Field(str, 64),
    "key": Field(str, 512),  # the media key within its source (no URL, no credentials)
    "media_type": Field(str, 32),
    "link_id": Field(str, 32, r"[0-9a-f]{1,32}"),  # signing.Link.id
    "grant_id": Field(str, 16, r"[A-Za-z0-9_-]{1,16}"),  # signing.Grant.nonce: ties a grant to its resolve
    "expires_at": Field(int),  # of the grant, Unix seconds
    "mode": Field(str, 16, _WORD),
    "method": Field(str, 8, r"[A-Z]{1,8}"),
    "status": Field(int),
    "bytes": Field(int),
    "range": Field(str, 128),
    "duration_ms": Field(int),
    "complete": Field(bool),  # false: the stream was aborted (client gone, upstream failed mid-way)
    "client": Field(str, 64),  # the client address as the trusted proxy chain reports it
    "count": Field(int),
    "attempts": Field(int),  # whole attaches the TaskRouter hook's job made
    "kind": Field(str, 16, _WORD),  # what a revocation covers: link, task, subject, before
    "before": Field(str, 32, r"[0-9T:.+-]{10,30}Z?"),  # a revocation of everything issued before this time
    "operator": Field(str, 128),  # who ran a `resolver` command that writes records (the OS user)
    "pid": Field(int),
    "parent": Field(str, 32, r"[0-9a-f]{1,32}"),
    "records": Field(int),
    "dropped": Field(str, 256),
}

# The events and their outcomes (documentation for reviewers; the writer accepts any `_WORD` event name).
EVENTS: dict[str, str] = {
    "link": "a link for one media entry: issued or refused (POST /api/v1/links, the attach API and hook; "
            "resolver links/attach with via=cli and the operator)",
    "attach": "media entries for a TaskRouter task: written, unchanged (already there), dry_run (resolver attach "
              "--dry-run printed them) or refused; from the CLI with via=cli and the operator; the TaskRouter "
              "hook (via=hook) writes accepted before its 204, then one outcome with attempts and duration_ms",
    "drilldown": "a drilldown link opened outside Flex: refused (401 page), never served",
    "resolve": "a Flex user asked for a grant (via resolve or provider): allowed or denied, with the reason",
    "grant": "a grant used: started (before the first byte: who, what, range), then served (status, bytes, "
             "range, duration, complete); or redirected, or refused",
    "revocation": "a link, task, subject or everything-before-a-time revoked (or failed: store down)",
    "chain_start": "a writer (one process) began its chain; pid, and parent when forked",
    "chain_end": "a writer closed its chain cleanly; `records` counts the records before it",
}
CHAIN_EVENTS = frozenset({"chain_start", "chain_end"})


class AuditError(Exception):
    """The record could not be written; the caller must not hand out media it cannot account for."""


def canonical(record: dict[str, Any]) -> bytes:
    """The bytes that are hashed: sorted keys, no spaces, ASCII only, without the `hash` field."""
    body = {k: v for k, v in record.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def record_hash(record: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(record)).hexdigest()


def utc_now() -> str:
    return utc_z(timespec="milliseconds")


class _Sink:
    """One `write()` per line on a file descriptor, or a text stream when there is no descriptor."""

    def __init__(self, fd: int | None, stream: IO[str] | None, owned: bool) -> None:
        self.fd, self.stream, self.owned = fd, stream, owned

    def write(self, line: bytes) -> None:
        if self.fd is None:
            assert self.stream is not None  # noqa: S101 - one of the two is always set
            self.stream.write(line.decode("ascii"))
            self.stream.flush()
            return
        view = memoryview(line)
        while view:
            written = os.write(self.fd, view)
            view = view[written:]

    def close(self) -> None:
        if self.owned and self.fd is not None:
            os.close(self.fd)
            self.fd = None


_WRITERS: weakref.WeakSet[AuditLog] = weakref.WeakSet()


class AuditLog:
    """A thread- and fork-safe writer of one hash chain per process."""

    def __init__(
        self, sink: _Sink, *, secrets: Iterable[str] = (), clock: Callable[[], str] = utc_now
    ) -> None:
        self._sink = sink
        # Fields every record gets unless given (the request id); observers see each record once written.
        self.defaults: Callable[[], dict[str, object]] = dict
        self.observers: list[Callable[[dict[str, Any]], None]] = []
        known = redact.searchable_secrets(secrets)
        # One search for all of them (a literal alternation, so no backtracking): fields are checked per record.
        self._secret_in = re.compile("|".join(map(re.escape, known))).search if known else None
        self._clock = clock
        self._clean_texts: dict[tuple[str, str], object] = {}  # (field, text) -> cleaned, for texts without secrets
        self._new_chain(parent=None)
        self._closed = False
        _WRITERS.add(self)
        atexit.register(_close_quietly, weakref.ref(self))

    @classmethod
    def open(
        cls, target: str, *, secrets: Iterable[str] = (), clock: Callable[[], str] = utc_now,
        dash: IO[str] | None = None,
    ) -> AuditLog:
        """`-` is stdout (or the stream `dash` names); anything else a file opened for appending (created 0600)."""
        if target == "-":
            stream = dash or sys.stdout
            try:
                sink = _Sink(stream.fileno(), None, owned=False)
            except (AttributeError, OSError, ValueError):  # a replaced stream (tests, notebooks)
                sink = _Sink(None, stream, owned=False)
        else:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
            sink = _Sink(os.open(target, flags, 0o600), None, owned=True)
        return cls(sink, secrets=secrets, clock=clock)

    @property
    def writer(self) -> str:
        return self._writer

    def _new_chain(self, parent: str | None) -> None:
        self._lock = threading.Lock()
        self._writer = secrets.token_hex(8)
        self._seq = 0
        self._prev = GENESIS
        self._parent = parent

    def _after_fork(self) -> None:
        """A child continues nothing of its parent's chain: a new writer id, seq 0, a fresh lock."""
        self._new_chain(parent=self._writer)

    def record(self, event: str, **fields: object) -> dict[str, Any]:
        """Write one record and return it (as written). Raises AuditError when it cannot be written."""
        for name, value in self.defaults().items():
            if fields.get(name) is None:
                fields[name] = value
        with self._lock:
            if self._closed:
                raise AuditError("the audit log is closed")
            if self._seq == 0:
                start: dict[str, object] = {"pid": os.getpid()}
                if self._parent:
                    start["parent"] = self._parent
                self._write("chain_start", start)
            rec = self._write(event, fields)
        for observe in self.observers:
            try:
                observe(rec)
            except Exception:  # an observer (metrics) must never cost an audit record or a response
                log.exception("audit observer failed")
        return rec

    def close(self) -> None:
        """End the chain with `chain_end` (so a cut tail shows) and release the file."""
        with self._lock:
            if self._closed:
                return
            if self._seq > 0:
                self._write("chain_end", {"records": self._seq})
            self._closed = True
            self._sink.close()

    def _write(self, event: str, fields: dict[str, object]) -> dict[str, Any]:
        rec: dict[str, Any] = {"time": self._clock(), "event": FIELDS["event"].clean(event)}
        dropped = []
        for name, value in fields.items():
            spec = FIELDS.get(name)
            if spec is None or name in ("event", "dropped"):
                dropped.append(name if re.fullmatch(_WORD, name) else "?")
                continue
            if value is None:
                continue
            rec[name] = self._field(name, spec, value)
        if dropped:
            log.warning("audit: dropped fields not in the allowlist: %s", ",".join(dropped))
            rec["dropped"] = ",".join(dropped)
        rec.update(writer=self._writer, seq=self._seq, prev=self._prev)
        rec["hash"] = record_hash(rec)
        line = json.dumps(rec, separators=(",", ":"), ensure_ascii=True).encode() + b"\n"
        try:
            self._sink.write(line)
        except (OSError, ValueError) as e:
            raise AuditError("the audit record could not be written") from e
        self._seq += 1
        self._prev = rec["hash"]
        return rec

    def _field(self, name: str, spec: Field, value: object) -> object:
        """The value as recorded: [redacted], or cleaned. A text found to hold no secret is remembered with
        its cleaned form (identities, sources, keys and addresses repeat from record to record); one that
        holds a secret never is, so no token outlives its record here."""
        if type(value) is not str:
            return REDACTED if self._is_secret(value) else spec.clean(value)
        key = (name, value)
        cleaned = self._clean_texts.get(key)
        if cleaned is not None:
            return cleaned
        if self._is_secret(value):
            return REDACTED
        cleaned = spec.clean(value)
        if len(self._clean_texts) >= CLEAN_TEXTS:
            self._clean_texts.clear()
        self._clean_texts[key] = cleaned
        return cleaned

    def _is_secret(self, value: object) -> bool:
        """Checked on the whole value, before truncation could cut a token's shape off."""
        if isinstance(value, bool | int):
            return False
        text = value if isinstance(value, str) else str(value)
        return (self._secret_in is not None and self._secret_in(text) is not None) or redact.token_shaped(text)


def _close_quietly(ref: weakref.ref[AuditLog]) -> None:
    writer = ref()
    if writer is not None:
        try:
            writer.close()
        except (AuditError, OSError):
            pass


def _reset_after_fork() -> None:
    for writer in list(_WRITERS):
        writer._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
