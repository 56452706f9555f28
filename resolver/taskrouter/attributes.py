"""Task attributes: parse strictly, change only `conversations.media`, read what Flex voice tasks name."""

from __future__ import annotations

import json
import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from ..errors import BadRequest
from ..twilio_ids import CALL_SID, CONFERENCE_SID, CONVERSATION_SID, RECORDING_SID
from .errors import AttributesTooLarge, AttributesUnparseable

# TaskRouter's resource configuration limit on a Task's Attributes, whitespace included (its limits page).
# with_media writes ASCII only (json.dumps escapes the rest), so characters and bytes agree however counted.
ATTRIBUTES_LIMIT = 4096
RECORDING_IN_URL = re.compile(rf"/Recordings/({RECORDING_SID.pattern})")
CALL_KEYS = ("call_sid", "callSid")
TRANSCRIPT_KEYS = ("conversationSid", "conversation_sid", "channelSid", "channel_sid")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    obj: dict = {}
    for key, value in pairs:
        if key in obj:
            raise ValueError("duplicate key")
        obj[key] = value
    return obj


@dataclass(frozen=True)
class Number:
    """A JSON number kept as the text it was written in: a rewrite changes no digit of anyone else's
    numbers (`1.0000000000000001`, `1e2`, `-0`, `12345678901234567890.5` stay as written)."""

    text: str


def _finite(text: str) -> Number:
    """A fraction or exponent kept as written, refused when no double can hold it (1e999): other readers of
    the task would see infinity."""
    if not math.isfinite(float(text)):
        raise ValueError("number out of range")
    return Number(text)


def _written(value: object) -> str:
    if isinstance(value, Number):
        return f"{_MARK}{value.text}{_MARK}"  # replaced by the bare text once the JSON is written
    raise TypeError(f"{type(value).__name__} is not JSON")


_MARK = "\x00" + secrets.token_hex(8)  # a string no parsed attribute can hold: \x00 is always escaped in JSON
_ESCAPED_MARK = re.escape(json.dumps(_MARK)[1:-1])
_MARKED = re.compile(f'"{_ESCAPED_MARK}([-+.0-9eE]+){_ESCAPED_MARK}"')


def _reject(text: str) -> object:
    raise ValueError(f"{text} is not JSON")


def conversations(attrs: Mapping) -> object:
    """attributes.conversations, where absent and null both mean "nothing there yet"."""
    value = attrs.get("conversations")
    return {} if value is None else value


def parse_attributes(raw: str) -> tuple[dict, list[dict]]:
    """The attributes and their current media list, or AttributesUnparseable if rewriting could lose data."""
    try:
        attrs = json.loads(raw or "{}", object_pairs_hook=_unique_keys, parse_float=_finite, parse_int=Number,
                           parse_constant=_reject)
    except (ValueError, RecursionError) as e:
        raise AttributesUnparseable() from e
    if not isinstance(attrs, dict):
        raise AttributesUnparseable()
    convs = conversations(attrs)
    if not isinstance(convs, dict):
        raise AttributesUnparseable()
    media = convs.get("media")
    media = [] if media is None else media
    if not isinstance(media, list) or not all(isinstance(e, dict) for e in media):
        raise AttributesUnparseable()
    return attrs, media


def with_media(attrs: dict, media: list[dict]) -> str:
    """The attributes with conversations.media replaced and nothing else changed."""
    updated = dict(attrs)
    updated["conversations"] = {**conversations(attrs), "media": media}  # type: ignore[dict-item]
    return dumps_exact(updated)


def dumps_exact(value: object) -> str:
    """Compact JSON with every kept Number written exactly as it was read."""
    return _MARKED.sub(lambda m: m.group(1), json.dumps(value, separators=(",", ":"), default=_written))


def plain(value: object) -> object:
    """The value with kept Numbers as ordinary ones, for answers to callers (writes keep the text)."""
    return json.loads(dumps_exact(value))


def check_size(attributes: str, limit: int = ATTRIBUTES_LIMIT) -> str:
    """The attributes, if TaskRouter will hold them; AttributesTooLarge (nothing is cut) if not."""
    if len(attributes) > limit:
        raise AttributesTooLarge.sized(len(attributes), limit)
    return attributes


def flex_order(media: list[dict]) -> list[dict]:
    """A Raw entry first stops Flex's Conversation Screen opening: bring the first other entry forward."""
    if not media or media[0].get("type") != "Raw":
        return media
    for i, entry in enumerate(media):
        if entry.get("type") != "Raw":
            return [entry, *media[:i], *media[i + 1:]]
    raise BadRequest("A media list of only Raw entries would stop Flex's Conversation Screen from opening; "
                     "add a VoiceRecording, Referenced or ChatTranscript entry.", code="raw_only")


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


def epoch_ms(value: object) -> int | None:
    """Twilio's REST dates (RFC 2822) as what Insights reads for start_time: milliseconds since the epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        return None
    return int(parsed.timestamp() * 1000)
