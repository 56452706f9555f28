"""Media entries for `conversations.media`: the only place that decides what a link-bearing entry looks like."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from ..audit.log import AuditLog
from ..errors import BadRequest, NotFound, ResolverError
from ..sources import Source, check_key
from ..twilio_ids import CONVERSATION_SID, TASK_SID
from .signing import Link, Signer

TYPES = ("VoiceRecording", "Raw", "Referenced", "ChatTranscript")
MAX_TITLE = 200
MAX_ENTRIES = 50  # media entries per request or task attach
MAX_URL = 4096


def link_token_in(url: object, *, public_url: str | None, kinds: tuple[str, ...] = ("d", "p")) -> str | None:
    """The token of one of our link URLs, `<public_url>/<kind>/<token>` with nothing after the token (no
    further path, query or fragment); None for anything else. With `public_url=None` any origin and path
    prefix is accepted (revocation: an operator may paste a link from another instance; the signature
    decides). The one parser of link URLs: resolve, revocation and attach all call it."""
    if not isinstance(url, str) or len(url) > MAX_URL or "?" in url or "#" in url:
        return None
    if public_url is None:
        segments = urlsplit(url).path.split("/")
        if len(segments) < 3 or segments[-2] not in kinds:
            return None
        token = segments[-1]
    else:
        token = next((url[len(p):] for p in (f"{public_url}/{k}/" for k in kinds) if url.startswith(p)), "")
    return token if token and "/" not in token else None
MAX_EPOCH_MS = 253402300799999  # 9999-12-31T23:59:59.999Z


@dataclass(frozen=True)
class MediaSpec:
    """One requested entry, as given to `resolver links`, the links API or attach."""

    type: str
    source: str = ""
    key: str = ""
    title: str = ""
    channels: int | None = None
    sid: str = ""  # ChatTranscript only
    start_time: int | None = None  # milliseconds since the epoch, as Insights reads it

    @classmethod
    def parse(cls, raw: object) -> MediaSpec:
        if not isinstance(raw, Mapping):
            raise BadRequest("Each media entry must be a JSON object.", code="bad_media")
        allowed = {"type", "source", "key", "title", "channels", "sid", "start_time"}
        if set(raw) - allowed:
            raise BadRequest("A media entry has unknown fields.", code="bad_media")
        values = {k: raw[k] for k in allowed if k in raw}
        if "type" not in values:
            raise BadRequest("Each media entry needs a 'type'.", code="bad_media")
        for name in ("type", "source", "key", "title", "sid"):
            if name in values and not isinstance(values[name], str):
                raise BadRequest(f"The media field '{name}' must be a string.", code="bad_media")
        channels = values.get("channels")
        if channels is not None and channels not in (1, 2):
            raise BadRequest("channels must be 1 or 2.", code="bad_media")
        if "start_time" in values:
            values["start_time"] = start_time_ms(values["start_time"])
        return cls(**values)


def start_time_ms(value: object) -> int | None:
    """start_time as Insights reads it (milliseconds since the epoch); an ISO 8601 time is converted."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_EPOCH_MS:
        return value
    if isinstance(value, str) and len(value) <= 40:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return int(parsed.timestamp() * 1000)
    raise BadRequest("start_time must be milliseconds since the epoch, or an ISO 8601 time with its offset.",
                     code="bad_media")


def check_task_sid(task_sid: object) -> str:
    if not isinstance(task_sid, str) or not TASK_SID.fullmatch(task_sid):
        raise BadRequest("task_sid must be a TaskRouter task SID (WT + 32 hex digits).", code="bad_task_sid")
    return task_sid


def build_entry(
    spec: MediaSpec, *, task_sid: str, sources: Mapping[str, Source], signer: Signer, public_url: str
) -> dict:
    """Turn a spec into a Flex media entry whose URLs are links that carry no authority."""
    if spec.type == "Embedded":
        raise BadRequest(
            "Embedded media cannot be secured: an iframe inside Insights cannot carry the user's token.",
            code="embedded_refused",
        )
    if spec.type not in TYPES:
        raise BadRequest(f"type must be one of {', '.join(TYPES)}.", code="bad_media")
    if spec.type == "ChatTranscript":
        if not CONVERSATION_SID.fullmatch(spec.sid):
            raise BadRequest("A ChatTranscript entry needs the conversation 'sid'.", code="bad_media")
        return {"type": "ChatTranscript", "sid": spec.sid}
    source = sources.get(spec.source)
    if source is None:
        raise NotFound("No source of that name is configured.", code="unknown_source")
    check_key(source, spec.key)
    if len(spec.title) > MAX_TITLE:
        raise BadRequest("title is too long.", code="bad_media")
    link = Link(
        source=source.name,
        key=spec.key,
        type=spec.type,
        title=spec.title,
        task=task_sid,
        channels=spec.channels,
    )
    token = signer.sign_link(link)
    # Only what Flex reads (task attributes hold 4096 characters): the Insights player plays `url_provider`
    # and falls back to `url`; `channels` is Twilio's documented ["customer", "others"] for a dual-channel
    # recording (customer on the first channel) and left out for a mono one, where no one has a channel.
    entry: dict = {"type": spec.type, "url": f"{public_url}/d/{token}"}
    if spec.title:
        entry["title"] = spec.title
    if spec.type == "VoiceRecording":
        entry["url_provider"] = f"{public_url}/p/{token}"
        if spec.channels == 2:
            entry["channels"] = ["customer", "others"]
        if spec.start_time is not None:
            entry["start_time"] = spec.start_time
    return entry


def issue_entries(
    specs: list[MediaSpec], *, task_sid: str, sources: Mapping[str, Source], signer: Signer, public_url: str,
    audit: AuditLog, **who: object,
) -> list[dict]:
    """Entries for `specs`, in order, each link issued (or refused) leaving its `link` audit record.

    The one path for `POST /api/v1/links` and `resolver links`, so a link made from a shell is in the trail
    like one made by a back-end job; `who` says who asked (the CLI: `via` and `operator`)."""
    entries = []
    for spec in specs:
        try:
            entries.append(build_entry(spec, task_sid=task_sid, sources=sources, signer=signer,
                                       public_url=public_url))
        except ResolverError as e:
            audit.record("link", outcome="refused", reason=e.code, task_sid=task_sid, source=spec.source or None,
                         **who)
            raise
        audit.record("link", outcome="issued", task_sid=task_sid, source=spec.source or None,
                     key=spec.key or spec.sid or None, media_type=spec.type, **who)
    return entries
