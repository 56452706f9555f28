"""Make the demo's sample call recording: a few seconds of synthetic two-party "speech" as 8 kHz WAV.

Deterministic, standard library only, so the shipped file can be regenerated and checked:
`python -m resolver.demo.sample_media resolver/demo/media/sample-call.wav`.
"""

from __future__ import annotations

import io
import math
import struct
import sys
import wave

RATE = 8000  # telephone quality, like a Twilio recording
# (start second, length, fundamental Hz): the agent speaks higher, the customer lower
TURNS = [(0.3, 1.6, 210.0), (2.2, 1.8, 130.0), (4.3, 1.4, 220.0), (6.0, 1.7, 125.0)]
LENGTH = 8.0


def _sample(t: float) -> float:
    for start, length, f0 in TURNS:
        if start <= t < start + length:
            local = t - start
            syllable = max(0.0, math.sin(math.pi * local * 4.5)) ** 2  # about four syllables a second
            pitch = f0 * (1 + 0.06 * math.sin(2 * math.pi * 0.7 * local))
            voice = sum(math.sin(2 * math.pi * pitch * h * t) / h for h in (1, 2, 3, 4))
            return 0.35 * syllable * voice
    return 0.0


def sample_call() -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        frames = (int(max(-1.0, min(1.0, _sample(i / RATE))) * 32767) for i in range(int(LENGTH * RATE)))
        out.writeframes(b"".join(struct.pack("<h", f) for f in frames))
    return buf.getvalue()


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as f:
        f.write(sample_call())
