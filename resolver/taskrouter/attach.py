"""Put resolver links into a TaskRouter task's `conversations.media` without losing anyone else's change.

The task's attributes belong to Flex and to other integrations; we own only the entries we add. So:
* every write is conditional (`If-Match` with the ETag of the read it was computed from); on 412 we read
  again and merge again, a bounded number of times, so a concurrent writer's change is never overwritten;
* attributes we cannot parse exactly (not a JSON object, duplicate keys, NaN, a `media` that is not a list
  of objects) are never rewritten;
* entries are de-duplicated by what they point at (the link's source and key, or the transcript SID), so
  attaching twice changes nothing and writes nothing;
* Flex's rules: a `Raw` entry is never first, `Embedded` is refused (by `links.build_entry`), and because a
  `media` list hides Flex's default recording and transcript, `keep_defaults` lists them explicitly, with
  the recording routed through the resolver.
Twilio 5xx/429 and network errors are retried with backoff; a conditional write makes retrying a POST safe.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from email.utils import parsedate_to_datetime

import requests

from ..access.links import CONVERSATION_SID, MediaSpec, build_entry, check_task_sid
from ..access.signing import Link, Signer
from ..audit.log import AuditLog
from ..config import Settings
from ..errors import BadRequest, NotFound, ResolverError
from ..sources import Source

WORKSPACE_SID = re.compile(r"WS[0-9a-f]{32}")
CALL_SID = re.compile(r"CA[0-9a-f]{32}")
CONFERENCE_SID = re.compile(r"CF[0-9a-f]{32}")
RECORDING_IN_URL = re.compile(r"/Recordings/(RE[0-9a-f]{32})")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
BACKOFF = (0.25, 0.5, 1.0)  # waits before the 2nd, 3rd and 4th try of a failing Twilio call
CONFLICT_ATTEMPTS = 5  # read-merge-write rounds before giving up on a task that keeps changing
TIMEOUT = (3.05, 10.0)  # TaskRouter waits at most 15 s for an event callback's answer
CLOSED = frozenset({"completed", "canceled"})
UNPLAYABLE = frozenset({"absent", "failed", "deleted"})  # recording statuses with nothing to play
CALL_KEYS = ("call_sid", "callSid")
TRANSCRIPT_KEYS = ("conversationSid", "conversation_sid", "channelSid", "channel_sid")
RECORDING_TITLE = "Call recording"


class TaskNotFound(NotFound):
    code = "task_not_found"
    message = ("TaskRouter has no such task in this workspace "
               "(tasks are deleted about 5 minutes after they complete).")


class TaskClosed(ResolverError):
    status, code = 409, "task_closed"
    message = "The task is completed or canceled and TaskRouter refused to update it."


class TaskConflict(ResolverError):
    status, code = 409, "task_conflict"
    message = "The task kept changing while links were being attached; nothing was overwritten. Try again."


class AttributesUnparseable(ResolverError):
    status, code = 409, "attributes_unparseable"
    message = ("The task's attributes are not a JSON object the resolver can merge into safely "
               "(or conversations.media is not a list of objects); they were left untouched.")


RECORDING_KINDS = ("twilio-recording", "s3")


class NoRecordingSource(ResolverError):
    status, code = 409, "no_recording_source"
    message = ("The task has a call recording, but RESOLVER_SOURCES defines no twilio-recording source (or "
               "single s3 source) for it.")


class TwilioAuthFailed(ResolverError):
    status, code = 502, "twilio_auth_failed"
    message = ("Twilio rejected the resolver's credentials "
               "(check TWILIO_ACCOUNT_SID and the auth token or API key).")


class TwilioUnavailable(ResolverError):
    status, code = 502, "twilio_unavailable"
    message = "TaskRouter kept failing; the task may not have been updated. Attaching again is safe."


class TwilioTimeout(ResolverError):
    status, code = 504, "twilio_timeout"
    message = "TaskRouter did not answer in time; the task may not be updated. Attaching again is safe."


class TwilioRefused(ResolverError):
    status, code = 502, "twilio_refused"
    message = "TaskRouter refused the request."


def check_workspace_sid(sid: object) -> str:
    if not isinstance(sid, str) or not WORKSPACE_SID.fullmatch(sid):
        raise BadRequest("workspace_sid must be a TaskRouter workspace SID (WS + 32 hex digits).",
                         code="bad_workspace_sid")
    return sid


@dataclass(frozen=True)
class Task:
    sid: str
    workspace_sid: str
    status: str
    attributes: str
    etag: str


class TwilioRest:
    """The few TaskRouter and REST calls attach needs, with retries; every failure is a domain error."""

    def __init__(self, settings: Settings, http: requests.Session, *,
                 sleep: Callable[[float], None] = time.sleep, backoff: Sequence[float] = BACKOFF) -> None:
        self.settings = settings
        self.http = http
        self.sleep = sleep
        self.backoff = tuple(backoff)

    def _call(self, method: str, url: str, **kwargs: object) -> requests.Response:
        for wait in (*self.backoff, None):
            cause: Exception | None = None
            try:
                resp = self.http.request(method, url, auth=self.settings.twilio_auth, timeout=TIMEOUT,
                                         allow_redirects=False, **kwargs)  # type: ignore[arg-type]
            except requests.Timeout as e:
                error: ResolverError = TwilioTimeout()
                cause = e
            except requests.RequestException as e:
                error, cause = TwilioUnavailable(), e
            else:
                if resp.status_code in (401, 403):
                    raise TwilioAuthFailed()
                if resp.status_code not in RETRY_STATUSES:
                    return resp
                error = TwilioUnavailable()
            if wait is None:
                raise error from cause
            self.sleep(wait)
        raise AssertionError("unreachable")

    def _task_url(self, workspace_sid: str, task_sid: str) -> str:
        return f"{self.settings.taskrouter_url}/v1/Workspaces/{workspace_sid}/Tasks/{task_sid}"

    def fetch_task(self, workspace_sid: str, task_sid: str) -> Task:
        resp = self._call("GET", self._task_url(workspace_sid, task_sid))
        if resp.status_code == 404:
            raise TaskNotFound()
        body = _json(resp) if resp.status_code == 200 else None
        etag = resp.headers.get("ETag")
        if not isinstance(body, dict) or not isinstance(body.get("attributes"), str) or not etag:
            raise TwilioRefused("TaskRouter's answer for the task was not a task with a version (ETag).")
        if body.get("sid") != task_sid or body.get("account_sid", self.settings.account_sid) != (
                self.settings.account_sid):
            raise TwilioRefused("TaskRouter answered with a different task or account.")
        return Task(sid=task_sid, workspace_sid=workspace_sid, status=str(body.get("assignment_status", "")),
                    attributes=body["attributes"], etag=etag)

    def write_attributes(self, task: Task, attributes: str) -> bool:
        """Write if the task is still the version we read; False when someone else wrote first (412)."""
        url = self._task_url(task.workspace_sid, task.sid)
        resp = self._call("POST", url, data={"Attributes": attributes}, headers={"If-Match": task.etag})
        if resp.status_code == 412:
            return False
        if resp.status_code == 404:
            raise TaskNotFound()
        if 400 <= resp.status_code < 500 and task.status in CLOSED:
            raise TaskClosed()
        if resp.status_code != 200:
            raise TwilioRefused(f"TaskRouter refused the update (HTTP {resp.status_code}).")
        return True

    def recordings(self, parent_sid: str) -> list[dict]:
        """Recordings of a call (CA...) or a conference (CF...), as Twilio lists them (first 100)."""
        kind = "Calls" if CALL_SID.fullmatch(parent_sid) else "Conferences"
        if not (CALL_SID.fullmatch(parent_sid) or CONFERENCE_SID.fullmatch(parent_sid)):
            raise BadRequest("Not a call or conference SID.", code="bad_call_sid")
        account = f"{self.settings.api_url}/2010-04-01/Accounts/{self.settings.account_sid}"
        url = f"{account}/{kind}/{parent_sid}/Recordings.json"
        resp = self._call("GET", url, params={"PageSize": 100})
        if resp.status_code == 404:
            return []
        body = _json(resp) if resp.status_code == 200 else None
        if not isinstance(body, dict) or not isinstance(body.get("recordings"), list):
            raise TwilioRefused(f"Twilio refused to list the call's recordings (HTTP {resp.status_code}).")
        return [r for r in body["recordings"] if isinstance(r, dict)]


def _json(resp: requests.Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return None


# ---- attributes: parse strictly, change only conversations.media ----

def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key")
        obj[key] = value
    return obj


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _reject(text: str) -> object:
    raise ValueError(f"{text} is not JSON")


def _conversations(attrs: Mapping) -> object:
    """attributes.conversations, where absent and null both mean "nothing there yet"."""
    value = attrs.get("conversations")
    return {} if value is None else value


def parse_attributes(raw: str) -> tuple[dict, list[dict]]:
    """The attributes and their current media list, or AttributesUnparseable if rewriting could lose data."""
    try:
        attrs = json.loads(raw or "{}", object_pairs_hook=_unique_keys, parse_float=_finite,
                           parse_constant=_reject)
    except (ValueError, RecursionError) as e:
        raise AttributesUnparseable() from e
    if not isinstance(attrs, dict):
        raise AttributesUnparseable()
    conversations = _conversations(attrs)
    if not isinstance(conversations, dict):
        raise AttributesUnparseable()
    media = conversations.get("media")
    media = [] if media is None else media
    if not isinstance(media, list) or not all(isinstance(e, dict) for e in media):
        raise AttributesUnparseable()
    return attrs, media


def with_media(attrs: dict, media: list[dict]) -> str:
    """The attributes with conversations.media replaced and nothing else changed."""
    updated = dict(attrs)
    updated["conversations"] = {**_conversations(attrs), "media": media}  # type: ignore[dict-item]
    return json.dumps(updated, separators=(",", ":"))


def flex_order(media: list[dict]) -> list[dict]:
    """A Raw entry first stops Flex's Conversation Screen opening: bring the first other entry forward."""
    if not media or media[0].get("type") != "Raw":
        return media
    for i, entry in enumerate(media):
        if entry.get("type") != "Raw":
            return [entry, *media[:i], *media[i + 1:]]
    raise BadRequest("A media list of only Raw entries would stop Flex's Conversation Screen from opening; "
                     "add a VoiceRecording, Referenced or ChatTranscript entry.", code="raw_only")


# ---- attach ----

@dataclass
class AttachResult:
    task_sid: str
    media: list[dict]  # conversations.media after the attach (for a dry run: as it would be)
    added: list[tuple[MediaSpec, dict]] = field(default_factory=list)
    written: bool = False
    attempts: int = 0


class Attacher:
    def __init__(self, settings: Settings, signer: Signer, rest: TwilioRest, *,
                 recording_source: str | None = None) -> None:
        self.settings = settings
        self.signer = signer
        self.rest = rest
        self.recording_source = recording_source

    def attach(self, workspace_sid: str, task_sid: str, specs: Sequence[MediaSpec] = (), *,
               keep_defaults: bool = False, dry_run: bool = False, only_with_recordings: bool = False
               ) -> AttachResult:
        """Merge entries for `specs` (and, with keep_defaults, the task's own recording and transcript)."""
        check_workspace_sid(workspace_sid)
        check_task_sid(task_sid)
        # build (and so check) the requested entries before any I/O
        requested = [(spec, self._entry(spec, task_sid)) for spec in specs]
        listings: dict[str, list[dict]] = {}
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            task = self.rest.fetch_task(workspace_sid, task_sid)
            attrs, media = parse_attributes(task.attributes)
            defaults = self._defaults(attrs, task_sid, listings) if keep_defaults else []
            if only_with_recordings and not any(spec.type == "VoiceRecording" for spec, _ in defaults):
                return AttachResult(task_sid, media, attempts=attempt)
            merged, added = self._merge(media, defaults + requested)
            if not added:
                return AttachResult(task_sid, media, attempts=attempt)
            merged = flex_order(merged)
            if dry_run:
                return AttachResult(task_sid, merged, added, attempts=attempt)
            if self.rest.write_attributes(task, with_media(attrs, merged)):
                return AttachResult(task_sid, merged, added, written=True, attempts=attempt)
        raise TaskConflict()

    def _entry(self, spec: MediaSpec, task_sid: str) -> dict:
        return build_entry(spec, task_sid=task_sid, sources=self.settings.sources, signer=self.signer,
                           public_url=self.settings.public_url)

    def _our_link(self, url: object) -> Link | None:
        base = self.settings.public_url
        if not isinstance(url, str) or not url.startswith((base + "/d/", base + "/p/")):
            return None
        try:
            return self.signer.load_link(url[len(base) + 3:])
        except NotFound:
            return None

    def identity(self, entry: Mapping) -> tuple:
        """What an entry points at: equal identities are the same media, whatever the title or URL form."""
        if entry.get("type") == "ChatTranscript" and isinstance(entry.get("sid"), str):
            return ("transcript", entry["sid"])
        for name in ("url", "url_provider"):
            link = self._our_link(entry.get(name))
            if link is not None:
                return ("link", link.source, link.key)
        return ("entry", json.dumps(entry, sort_keys=True))

    def _merge(self, media: list[dict], candidates: list[tuple[MediaSpec, dict]]
               ) -> tuple[list[dict], list[tuple[MediaSpec, dict]]]:
        seen = {self.identity(e) for e in media}
        merged, added = list(media), []
        for spec, entry in candidates:
            ident = self.identity(entry)
            if ident not in seen:
                seen.add(ident)
                merged.append(entry)
                added.append((spec, entry))
        return merged, added

    def _source_for_recordings(self) -> Source:
        """The one asked for; else the first twilio-recording source; else the only s3 source (prefix + SID)."""
        sources = self.settings.sources
        if self.recording_source:
            source = sources.get(self.recording_source)
            if source is None or source.kind not in RECORDING_KINDS:
                raise NoRecordingSource(f"'{self.recording_source}' is not a twilio-recording or s3 source.")
            return source
        for source in sources.values():
            if source.kind == "twilio-recording":
                return source
        buckets = [s for s in sources.values() if s.kind == "s3"]
        if len(buckets) == 1:
            return buckets[0]
        raise NoRecordingSource()

    def _defaults(self, attrs: dict, task_sid: str, listings: dict[str, list[dict]]
                  ) -> list[tuple[MediaSpec, dict]]:
        """Entries for what Flex shows when a task has no media list: its call recording(s) and transcript."""
        found: dict[str, dict] = {}  # recording SID -> metadata, in order of discovery
        segment_link = _conversations(attrs).get("segment_link")  # type: ignore[attr-defined]
        if isinstance(segment_link, str):
            for sid in RECORDING_IN_URL.findall(segment_link):
                found.setdefault(sid, {})
        for parent in call_sids(attrs):
            if parent not in listings:
                listings[parent] = self.rest.recordings(parent)
            for rec in listings[parent]:
                sid = rec.get("sid")
                if isinstance(sid, str) and rec.get("status") not in UNPLAYABLE:
                    found[sid] = {**found.get(sid, {}), **rec}
        specs: list[MediaSpec] = []
        if found:
            source = self._source_for_recordings()
            numbered = len(found) > 1
            for i, (sid, rec) in enumerate(found.items(), start=1):
                channels = rec.get("channels") if source.kind == "twilio-recording" else None  # a bucket: one file
                specs.append(MediaSpec(type="VoiceRecording", source=source.name, key=sid,
                                       title=f"{RECORDING_TITLE} {i}" if numbered else RECORDING_TITLE,
                                       channels=channels if channels in (1, 2) else None,
                                       start_time=iso_time(rec.get("start_time"))))
        transcript = transcript_sid(attrs)
        if transcript:
            specs.append(MediaSpec(type="ChatTranscript", sid=transcript))
        return [(spec, self._entry(spec, task_sid)) for spec in specs]


def attach_audited(attacher: Attacher, audit: AuditLog, workspace_sid: str, task_sid: str,
                   specs: Sequence[MediaSpec] = (), *, who: Mapping[str, object] | None = None,
                   **options: bool) -> AttachResult:
    """`Attacher.attach`, with its audit records: every link written into a task, and every refusal.

    The one path for the attach API, the TaskRouter hook and `resolver attach`; `who` says who asked."""
    common = {"task_sid": task_sid, "workspace_sid": workspace_sid, **(who or {})}
    try:
        result = attacher.attach(workspace_sid, task_sid, specs, **options)
    except ResolverError as e:
        audit.record("attach", outcome="refused", reason=e.code, **common)
        raise
    for spec, _entry in result.added:
        audit.record("link", outcome="issued", source=spec.source or None, key=spec.key or spec.sid,
                     media_type=spec.type, **common)
    if result.written:
        outcome = "written"
    else:
        outcome = "dry_run" if options.get("dry_run") and result.added else "unchanged"
    audit.record("attach", outcome=outcome, count=len(result.added), **common)
    return result


def call_sids(attrs: Mapping) -> list[str]:
    """Call and conference SIDs a Flex voice task names: call_sid and conference.sid / .participants."""
    candidates = [attrs.get(k) for k in CALL_KEYS]
    conference = attrs.get("conference")
    if isinstance(conference, dict):
        candidates.append(conference.get("sid"))
        participants = conference.get("participants")
        if isinstance(participants, dict):
            candidates.extend(participants.values())
    found: list[str] = []
    for value in candidates:
        if isinstance(value, str) and (CALL_SID.fullmatch(value) or CONFERENCE_SID.fullmatch(value)):
            if value not in found:
                found.append(value)
    return found


def transcript_sid(attrs: Mapping) -> str | None:
    for key in TRANSCRIPT_KEYS:
        value = attrs.get(key)
        if isinstance(value, str) and CONVERSATION_SID.fullmatch(value):
            return value
    return None


def iso_time(value: object) -> str:
    """Twilio's REST dates (RFC 2822) as the ISO 8601 UTC form Insights expects; '' when unknown."""
    if not isinstance(value, str) or not value:
        return ""
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return ""
    if parsed.tzinfo is None:
        return ""
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
