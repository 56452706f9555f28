"""Media entries for `conversations.media`: the only place that decides what a link-bearing entry looks like."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MediaSpec:
    """One requested entry, as given to `resolver links`, the links API or attach."""

    type: str
    source: str = ""
    key: str = ""
    title: str = ""
    channels: int | None = None
    sid: str = ""  # ChatTranscript only
    start_time: str = ""

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
        for name in ("type", "source", "key", "title", "sid", "start_time"):
            if name in values and not isinstance(values[name], str):
                raise BadRequest(f"The media field '{name}' must be a string.", code="bad_media")
        channels = values.get("channels")
        if channels is not None and channels not in (1, 2):
            raise BadRequest("channels must be 1 or 2.", code="bad_media")
        return cls(**values)


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
    entry: dict = {"type": spec.type, "url": f"{public_url}/d/{token}"}
    if spec.title:
        entry["title"] = spec.title
    if spec.type == "VoiceRecording":
        entry["url_provider"] = f"{public_url}/p/{token}"
        if spec.channels:
            entry["channels"] = ["customer", "others"] if spec.channels == 2 else ["customer"]
        if spec.start_time:
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
