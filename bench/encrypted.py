"""Measure 6: a Twilio-encrypted recording through a grant vs the same bytes unencrypted through a grant.

Both recordings live in the fake Twilio child (bench/fake_iam.py), the encrypted one made exactly as Voice
Recording Encryption makes it; both go through the same resolver, source and grant path, so the difference is
the recording resource read, the RSA unwrap and AES-GCM decryption with the tag check. Target: <= 1.3x wall
time; CPU of the resolver's process tree per GiB reported for both.
"""

from __future__ import annotations

import statistics

from . import procs
from .client import fetch
from .fake_iam import ENCRYPTED_SID, PLAIN_SID

MiB, GiB = 1 << 20, 1 << 30
SIZE = 512 * MiB
MIN_REPS = 3


def bench_encrypted(stack, report, reps: int) -> None:  # type: ignore[no-untyped-def]
    size = stack.recording_bytes
    plain, encrypted = stack.grant("recordings", PLAIN_SID), stack.grant("recordings", ENCRYPTED_SID)
    runs = []
    for i in range(max(reps, MIN_REPS)):
        c0 = procs.tree_cpu(stack.master)
        p = fetch(plain)
        c1 = procs.tree_cpu(stack.master)
        e = fetch(encrypted)
        c2 = procs.tree_cpu(stack.master)
        if p.status != 200 or e.status != 200 or p.received != size or e.received != size:
            raise SystemExit(f"encrypted: short download (plain {p.status} {p.received}, "
                             f"encrypted {e.status} {e.received})")
        plain_cpu = sum(procs.cpu_delta(c0, c1).values()) / (size / GiB)
        enc_cpu = sum(procs.cpu_delta(c1, c2).values()) / (size / GiB)
        runs.append({"plain_s": p.wall, "encrypted_s": e.wall, "ratio": e.wall / p.wall,
                     "plain_cpu_s_per_gib": plain_cpu, "encrypted_cpu_s_per_gib": enc_cpu})
        print(f"  6. encrypted rep {i + 1}: plain {p.wall:.3f}s encrypted {e.wall:.3f}s ratio "
              f"{e.wall / p.wall:.2f}; CPU {plain_cpu:.2f} vs {enc_cpu:.2f} s/GiB", flush=True)
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    report.details["6. encrypted"] = {"size_bytes": size, "runs": runs}
    mib = size / MiB
    report.add(f"6. encrypted recording {mib:.0f} MiB vs plain, via grant",
               f"plain {med['plain_s']:.2f} s ({mib / med['plain_s']:.0f} MiB/s)",
               f"{med['encrypted_s']:.2f} s ({mib / med['encrypted_s']:.0f} MiB/s)",
               f"{med['ratio']:.2f}x plain", "<= 1.3x", med["ratio"] <= 1.3)
    report.add("6. encrypted: server CPU", f"plain {med['plain_cpu_s_per_gib']:.2f} s/GiB",
               f"{med['encrypted_cpu_s_per_gib']:.2f} s/GiB", "", "", None)
