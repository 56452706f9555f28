"""The benchmark command: `python -m bench` (see `--help`).

Each measure is taken against a baseline in the same run (direct download from the same upstream, or
`/healthz` on the same server), repeated, and reported as medians, because these 2-core machines are
noisy. It reports; it does not fail on a slow machine (exit status 0 unless the stack cannot start).
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from . import encrypted, s3, scenarios, throughput
from .client import afetch
from .encrypted import SIZE as ENCRYPTED_SIZE
from .encrypted import bench_encrypted
from .report import Report, machine, plot, table, write_markdown
from .s3 import SIZE as S3_SIZE
from .s3 import bench_s3
from .scenarios import LISTENER_SIZE, MiB, bench_concurrency, bench_memory, bench_resolve, bench_seek, say
from .stack import ROOT, Stack
from .throughput import SIZE as THROUGHPUT_SIZE
from .throughput import bench_throughput

# -- 3. concurrency --------------------------------------------------------------------------------------
SCENARIOS = {
    "1": ("stream throughput", bench_throughput),
    "2": ("memory", bench_memory),
    "3": ("concurrency", bench_concurrency),
    "4": ("resolve", bench_resolve),
    "5": ("seek", bench_seek),
    "6": ("encrypted recording", bench_encrypted),
    "7": ("s3 object", bench_s3),
}


def repetitions(reps: int) -> dict[str, str]:
    """How many repetitions (or windows) each measure takes for `--reps reps`: some take at least a floor."""
    return {"memory": str(reps), "throughput": str(max(reps, throughput.MIN_REPS)),
            "listeners and seek": str(max(reps, scenarios.MIN_REPS)), "players": str(max(reps, 3)),
            "encrypted and s3": str(max(reps, encrypted.MIN_REPS, s3.MIN_REPS)),
            "resolve": f"{2 * reps} paired windows"}


def warm_up(stack: Stack) -> None:
    """Let every worker import and allocate what a stream and a resolve need before anything is measured."""
    grant = stack.grant("bench", f"{16 * MiB}.mp3")

    async def many() -> None:
        await asyncio.gather(*(afetch(grant) for _ in range(8)))

    asyncio.run(many())


def start_py_spy(stack: Stack, directory: str, name: str) -> list[subprocess.Popen]:
    """py-spy on each worker until stopped (SIGINT makes it write the SVG)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).parent / "py-spy"
    return [subprocess.Popen([str(exe), "record", "--pid", str(w), "--rate", "250", "--nonblocking",
                              "--output", str(Path(directory) / f"{name}-{w}.svg")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for w in stack.workers()]


def stop_py_spy(spies: list[subprocess.Popen]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each measure (default 3)")
    parser.add_argument("--only", default="1234567", help="which measures, e.g. 14 (default all)")
    parser.add_argument("--store", default="", help="RESOLVER_STORE (default: an SQLite file in the temp dir)")
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"), help="markdown report ('' for none)")
    parser.add_argument("--plot", default=str(ROOT / "docs" / "ttfb-under-load.png"),
                        help="PNG of TTFB under load, needs matplotlib ('' for none)")
    parser.add_argument("--py-spy", default="", metavar="DIR",
                        help="record a py-spy flame graph of every worker during each measure into DIR")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (logs, audit) for a post-mortem")
    args = parser.parse_args(argv)
    started = time.monotonic()
    load_before = Path("/proc/loadavg").read_text().split()[:3]
    report = Report()
    with Stack(store=args.store, keep_tmp=args.keep_tmp,
               recording_bytes=ENCRYPTED_SIZE if "6" in args.only else 0,
               s3_bytes=S3_SIZE if "7" in args.only else 0,
               nginx_upstream_bytes=THROUGHPUT_SIZE if "1" in args.only or "3" in args.only else 0,
               nginx_slow_bytes=LISTENER_SIZE if "3" in args.only else 0) as stack:
        workers = len(stack.workers())
        say(f"resolver on {stack.url} ({workers} workers), upstream on {stack.upstream_url}, temp {stack.tmp}")
        warm_up(stack)
        for key in args.only:
            name, fn = SCENARIOS[key]
            say(f"{key}. {name}")
            spies = start_py_spy(stack, args.py_spy, f"{key}-{name.replace(' ', '-')}") if args.py_spy else []
            try:
                fn(stack, report, args.reps)
            except BaseException:
                stack.keep_tmp = True  # keep the logs and the audit trail for a post-mortem
                say(f"{key}. {name} failed; logs kept in {stack.tmp}\n{stack.log_tail()}")
                raise
            finally:
                stop_py_spy(spies)
        info = {"machine": machine(), "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                "reps": args.reps, "repetitions": repetitions(args.reps),
                "gunicorn": shlex.join(["gunicorn", *stack.command[1:]]), "workers": workers,
                "store": stack.store.replace(str(stack.tmp), "$TMP")}
    info["duration_s"] = time.monotonic() - started
    load_after = Path("/proc/loadavg").read_text().split()[:3]
    info["load"] = f"{' '.join(load_before)} at the start, {' '.join(load_after)} at the end"
    print(table(report.rows))
    command = "python -m bench" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    plot_name = None
    if args.plot and report.ttfb:
        plot_path = Path(args.plot)
        if plot(report.ttfb, plot_path):
            out_dir = Path(args.out).parent if args.out else ROOT
            plot_name = str(plot_path.resolve().relative_to(out_dir.resolve())) if plot_path.resolve().is_relative_to(
                out_dir.resolve()) else str(plot_path)
    if args.out:
        write_markdown(Path(args.out), report, info, command, plot_name)
        say(f"wrote {args.out}")
