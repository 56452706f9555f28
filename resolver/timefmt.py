"""The one way times are written for people and machines: ISO 8601 in UTC with a `Z`."""

from __future__ import annotations

import time
from datetime import UTC, datetime


def utc_z(ts: float | datetime | None = None, *, timespec: str = "seconds") -> str:
    """`2026-01-31T12:00:00Z` for an epoch time or an aware datetime (now when None); `timespec` as
    datetime.isoformat takes it (`seconds`, `milliseconds`)."""
    when = ts if isinstance(ts, datetime) else datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return when.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")
