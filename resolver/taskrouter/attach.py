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
  the recording routed through the resolver: one VoiceRecording (Insights plays only the first), any
  further recordings as Referenced entries.
* TaskRouter holds at most 4096 characters of attributes: an attach that would exceed them is refused
  (`409 attributes_too_large`) before anything is written, never truncated.
Twilio 5xx/429 and network errors are retried with backoff; a conditional write makes retrying a POST safe.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..access.links import MediaSpec, build_entry, check_task_sid, link_token_in
from ..access.signing import Link, Signer
from ..audit.log import AuditLog
from ..config import Settings
from ..errors import NotFound, ResolverError
from ..sources import Source
from .attributes import (
    RECORDING_IN_URL,
    call_sids,
    check_size,
    conversations,
    epoch_ms,
    flex_order,
    parse_attributes,
    plain,
    transcript_sid,
    with_media,
)
from .errors import NoRecordingSource, TaskConflict
from .rest import TwilioRest, check_workspace_sid

CONFLICT_ATTEMPTS = 5  # read-merge-write rounds before giving up on a task that keeps changing
UNPLAYABLE = frozenset({"absent", "failed", "deleted"})  # recording statuses with nothing to play
RECORDING_TITLE = "Call recording"
RECORDING_KINDS = ("twilio-recording", "s3")  # sources whose keys may be recording SIDs


@dataclass
class AttachResult:
    task_sid: str
    media: list[dict]  # conversations.media after the attach (for a dry run: as it would be)
    added: list[tuple[MediaSpec, dict]] = field(default_factory=list)
    written: bool = False
    attempts: int = 0

    def __post_init__(self) -> None:
        self.media = plain(self.media)  # type: ignore[assignment] - the answer holds ordinary JSON numbers


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
            # Insights shows only the first VoiceRecording: default recordings get that slot only when nobody
            # else (the task, or this request) has taken it; the others become Referenced entries.
            voice_taken = any(e.get("type") == "VoiceRecording" for e in media) or any(
                spec.type == "VoiceRecording" for spec, _ in requested)
            defaults = self._defaults(attrs, task_sid, listings, voice_taken) if keep_defaults else []
            if only_with_recordings and not any(spec.type != "ChatTranscript" for spec, _ in defaults):
                return AttachResult(task_sid, media, attempts=attempt)
            merged, added = self._merge(media, defaults + requested)
            if not added:
                return AttachResult(task_sid, media, attempts=attempt)
            merged = flex_order(merged)
            new_attributes = check_size(with_media(attrs, merged))  # refused before writing, dry run too
            if dry_run:
                return AttachResult(task_sid, merged, added, attempts=attempt)
            if self.rest.write_attributes(task, new_attributes):
                return AttachResult(task_sid, merged, added, written=True, attempts=attempt)
        raise TaskConflict()

    def _entry(self, spec: MediaSpec, task_sid: str) -> dict:
        return build_entry(spec, task_sid=task_sid, sources=self.settings.sources, signer=self.signer,
                           public_url=self.settings.public_url)

    def _our_link(self, url: object) -> Link | None:
        token = link_token_in(url, public_url=self.settings.public_url)
        try:
            return None if token is None else self.signer.load_link(token)
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

    def _defaults(self, attrs: dict, task_sid: str, listings: dict[str, list[dict]], voice_taken: bool
                  ) -> list[tuple[MediaSpec, dict]]:
        """Entries for what Flex shows when a task has no media list: its call recording(s) and transcript.

        One VoiceRecording at most (Insights plays only the first): the recording `segment_link` names (what
        Flex would have played), else the earliest; every other recording is a Referenced entry, which Flex
        opens in a new tab (`/d/`, resolved through the Flex tab)."""
        named: list[str] = []
        segment_link = conversations(attrs).get("segment_link")  # type: ignore[attr-defined]
        if isinstance(segment_link, str):
            named = list(dict.fromkeys(RECORDING_IN_URL.findall(segment_link)))
        found: dict[str, dict] = {}  # recording SID -> what Twilio lists for it
        for parent in call_sids(attrs):
            if parent not in listings:
                listings[parent] = self.rest.recordings(parent)
            for rec in listings[parent]:
                sid = rec.get("sid")
                if isinstance(sid, str) and rec.get("status") not in UNPLAYABLE:
                    found[sid] = {**found.get(sid, {}), **rec}
        listed = sorted((sid for sid in found if sid not in named),
                        key=lambda sid: (epoch_ms(found[sid].get("start_time")) is None,
                                         epoch_ms(found[sid].get("start_time")) or 0))
        ordered = named + listed
        specs: list[MediaSpec] = []
        if ordered:
            source = self._source_for_recordings()
            for i, sid in enumerate(ordered, start=1):
                rec = found.get(sid, {})
                channels = rec.get("channels") if source.kind == "twilio-recording" else None  # a bucket: one file
                voice = i == 1 and not voice_taken
                title = RECORDING_TITLE if len(ordered) == 1 else f"{RECORDING_TITLE} {i} of {len(ordered)}"
                specs.append(MediaSpec(type="VoiceRecording" if voice else "Referenced", source=source.name,
                                       key=sid, title=title, channels=channels if channels in (1, 2) else None,
                                       start_time=epoch_ms(rec.get("start_time")) if voice else None))
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
