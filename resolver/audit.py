"""Audit records (interim writer; the tamper-evident trail replaces it)."""

from __future__ import annotations

import json
import sys
import threading
from datetime import UTC, datetime
from typing import IO


class AuditLog:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    @classmethod
    def open(cls, target: str) -> AuditLog:
        return cls(sys.stdout if target == "-" else open(target, "a", encoding="utf-8"))  # noqa: SIM115

    def record(self, event: str, **fields: object) -> None:
        rec = {"time": datetime.now(UTC).isoformat(), "event": event, **fields}
        with self._lock:
            self._stream.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
