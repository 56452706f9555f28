"""Byte ranges: what we forward for a client's `Range`, and whether the upstream's 206 is the range we asked.

Only one well-formed range is ever forwarded, rebuilt from its numbers, so a seek fetches just those bytes
from the upstream. Anything else (several ranges, hundreds of them, garbage, `5-3`) is ignored as RFC 9110
allows and the whole entity is served with 200: never a multipart body we would have to build or check.
`bytes=-0` is the one syntactically valid range that can never be satisfied: 416.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .. import policy

_RANGE = re.compile(r"\s*bytes\s*=\s*(\d{0,18})\s*-\s*(\d{0,18})\s*", re.IGNORECASE)
_CONTENT_RANGE = re.compile(r"bytes (\d{1,18})-(\d{1,18})/(\d{1,18}|\*)")
_UNSATISFIED = re.compile(r"bytes \*/(\d{1,18})")


@dataclass(frozen=True)
class ByteRange:
    """`start-end`, `start-` (end None) or the last `suffix` bytes (start None)."""

    start: int | None
    end: int | None = None
    suffix: int | None = None

    @property
    def header(self) -> str:
        if self.start is None:
            return f"bytes=-{self.suffix}"
        return f"bytes={self.start}-{'' if self.end is None else self.end}"


class Unsatisfiable(Exception):
    """A range no entity can satisfy (`bytes=-0`)."""


def parse_range(value: str | None) -> ByteRange | None:
    """The single range to forward, None to serve the whole entity; raise Unsatisfiable for `bytes=-0`."""
    if not value or len(value) > policy.MAX_RANGE_HEADER:
        return None
    m = _RANGE.fullmatch(value)
    if m is None:
        return None
    first, last = m.group(1), m.group(2)
    if not first:
        if not last:
            return None
        if int(last) == 0:
            raise Unsatisfiable()
        return ByteRange(start=None, suffix=int(last))
    start = int(first)
    end = int(last) if last else None
    if end is not None and end < start:
        return None
    return ByteRange(start=start, end=end)


def part_matches(asked: ByteRange, content_range: str | None, content_length: str | None) -> bool:
    """Whether a 206 describes the range we asked for, with a body length that agrees with it."""
    m = _CONTENT_RANGE.fullmatch(content_range or "")
    if m is None:
        return False
    first, last, total = int(m.group(1)), int(m.group(2)), m.group(3)
    if last < first or (total != "*" and last >= int(total)):
        return False
    if content_length is not None and (not content_length.isdigit() or int(content_length) != last - first + 1):
        return False
    if asked.start is None:
        assert asked.suffix is not None  # noqa: S101 - a suffix range always has its length
        return total != "*" and last == int(total) - 1 and last - first + 1 <= asked.suffix
    return first == asked.start and (asked.end is None or last <= asked.end)


def content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """(first, last, total or None for `*`) from a `Content-Range: bytes first-last/total`, else None."""
    m = _CONTENT_RANGE.fullmatch(value or "")
    if m is None:
        return None
    return int(m.group(1)), int(m.group(2)), None if m.group(3) == "*" else int(m.group(3))


def entity_length(status: int, content_range: str | None, content_length: str | None) -> int | None:
    """The full size of the entity, if the upstream told us (from Content-Range on 206/416, else Content-Length)."""
    if status == 206:
        m = _CONTENT_RANGE.fullmatch(content_range or "")
        return int(m.group(3)) if m and m.group(3) != "*" else None
    if status == 416:
        m = _UNSATISFIED.fullmatch(content_range or "")
        return int(m.group(1)) if m else None
    return int(content_length) if content_length and content_length.isdigit() else None
