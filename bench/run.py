"""The benchmark command: `python -m bench` (see `--help`).

Each measure is taken against a baseline in the same run (direct download from the same upstream, or
`/healthz` on the same server), repeated, and reported as medians, because these 2-core machines are
noisy. It reports; it does not fail on a slow machine (exit status 0 unless the stack cannot start).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import resource
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from . import procs
from .client import Response, afetch, fetch, load
from .encrypted import SIZE as ENCRYPTED_SIZE
from .encrypted import bench_encrypted
from .report import Report, Row
from .s3 import SIZE as S3_SIZE
from .s3 import bench_s3
from .stack import ROOT, Stack
from .throughput import bench_throughput
from .upstream import expected

MiB = 1 << 20
GiB = 1 << 30
NOTES_MARKER = "<!-- notes: everything below this line is kept when the bench rewrites this file -->"


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- 2. memory -------------------------------------------------------------------------------------------
def peak_rss(stack: Stack, url: str, size: int) -> tuple[float, float]:
    """(peak RSS MiB of the worker that served the download, its RSS MiB before)."""
    workers = stack.workers()
    idle = {w: procs.rss_kib(w) for w in workers}
    for w in workers:
        procs.reset_peak(w)
    before = procs.tree_cpu(stack.master)
    with procs.Sampler(stack.master, interval=0.01) as sampler:
        resp = fetch(url)
    if resp.received != size:
        raise SystemExit(f"memory: short download {resp.received}")
    used = procs.cpu_delta(before, procs.tree_cpu(stack.master))
    serving = max(workers, key=lambda w: used.get(w, 0.0))
    peak = max(procs.status_kib(serving, "VmHWM"), sampler.peak_each.get(serving, 0))
    return peak / 1024, idle[serving] / 1024


def bench_memory(stack: Stack, report: Report, reps: int) -> None:
    result = {}
    for size, label in ((16 * MiB, "16 MiB"), (GiB, "1 GiB")):
        grant = stack.grant("bench", f"{size}.mp3")
        peaks, idles = [], []
        for i in range(reps):
            peak, idle = peak_rss(stack, grant, size)
            peaks.append(peak)
            idles.append(idle)
            say(f"  2. memory {label} rep {i + 1}: peak {peak:.1f} MiB (worker at {idle:.1f} MiB before)")
        result[label] = {"peak_mib": peaks, "idle_mib": idles}
    small, big = median(result["16 MiB"]["peak_mib"]), median(result["1 GiB"]["peak_mib"])
    growth = big / small
    report.details["2. memory"] = result
    report.add("2. peak RSS of the serving worker", f"16 MiB stream: {small:.1f} MiB",
               f"1 GiB stream: {big:.1f} MiB", f"{(growth - 1) * 100:+.1f}%", "within 10%, < 80 MiB",
               growth <= 1.10 and big < 80 and small < 80)


# -- 3. concurrency --------------------------------------------------------------------------------------
async def listen_all(urls: list[str], timeout: float) -> list[Response | BaseException]:
    async def one(url: str) -> Response:
        return await asyncio.wait_for(afetch(url), timeout)

    return await asyncio.gather(*(one(u) for u in urls), return_exceptions=True)


def listeners(stack: Stack, urls: list[str], size: int, timeout: float) -> dict:
    with procs.Sampler(stack.master, interval=0.1) as sampler:
        t0 = time.perf_counter()
        results = asyncio.run(listen_all(urls, timeout))
        wall = time.perf_counter() - t0
    ok = [r for r in results if isinstance(r, Response) and r.status == 200 and r.received == size]
    errors = {}
    for r in results:
        if isinstance(r, BaseException):
            name = type(r).__name__
        elif r.status != 200 or r.received != size:
            name = f"HTTP {r.status} ({r.received} bytes)"
        else:
            continue
        errors[name] = errors.get(name, 0) + 1
    first_body = [r.first_body for r in ok]
    return {"completed": len(ok), "errors": errors, "wall_s": wall,
            "ttfb_p50_ms": percentile(first_body, 50) * 1000, "ttfb_p99_ms": percentile(first_body, 99) * 1000,
            "ttfb_max_ms": max(first_body, default=float("nan")) * 1000,
            "head_p99_ms": percentile([r.ttfb for r in ok], 99) * 1000,
            "total_rss_mib": sampler.peak_total / 1024, "first_body_s": first_body}


def bench_concurrency(stack: Stack, report: Report, reps: int, n: int = 300, seconds: float = 10.0) -> None:
    size = int(stack.rate * seconds)
    key = f"{size}.mp3"
    link = stack.links("slow", [key])[0]
    idle_rss = sum(procs.rss_kib(p) for p in [stack.master, *stack.workers()]) / 1024
    runs = []
    for i in range(max(reps, 5)):  # the most sensitive to the neighbours' load: more repetitions
        grants = [stack.resolve(stack.ops_token, link) for _ in range(n)]
        direct = listeners(stack, [f"{stack.upstream_url}/slow/{key}"] * n, size, timeout=seconds * 6)
        proxied = listeners(stack, grants, size, timeout=seconds * 6)
        say(f"  3. {n} listeners rep {i + 1}: completed {proxied['completed']}/{n}, errors {proxied['errors']}, "
            f"p99 TTFB {proxied['ttfb_p99_ms']:.0f} ms (direct {direct['ttfb_p99_ms']:.0f} ms), "
            f"total RSS {proxied['total_rss_mib']:.0f} MiB, wall {proxied['wall_s']:.1f}s")
        runs.append({"direct": direct, "proxied": proxied})
    report.ttfb = {"direct": [r["direct"]["first_body_s"] for r in runs],
                   "resolver": [r["proxied"]["first_body_s"] for r in runs]}
    for r in runs:
        for side in ("direct", "proxied"):
            r[side] = {k: v for k, v in r[side].items() if k != "first_body_s"}
    report.details["3. concurrency"] = {"listeners": n, "bytes_each": size, "idle_rss_mib": idle_rss,
                                        "runs": runs}
    completed = min(r["proxied"]["completed"] for r in runs)
    errors = sum(sum(r["proxied"]["errors"].values()) for r in runs)
    p99 = median([r["proxied"]["ttfb_p99_ms"] for r in runs])
    d99 = median([r["direct"]["ttfb_p99_ms"] for r in runs])
    rss = median([r["proxied"]["total_rss_mib"] for r in runs])
    report.add(f"3. {n} listeners at {stack.rate // 1024} KiB/s: completed", f"{n}/{n} direct",
               f"{completed}/{n} (worst run)", f"{errors} errors", "all, 0 errors",
               completed == n and errors == 0)
    report.add(f"3. {n} listeners: p99 time to first media byte (median of {len(runs)} runs)", f"{d99:.0f} ms",
               f"{p99:.0f} ms (runs: {', '.join(str(round(r['proxied']['ttfb_p99_ms'])) for r in runs)})",
               f"{p99 / d99:.1f}x direct" if d99 else "", "< 500 ms", p99 < 500)
    report.add(f"3. {n} listeners: total RSS of gunicorn", f"{idle_rss:.0f} MiB idle", f"{rss:.0f} MiB peak",
               f"{rss:.0f} MiB", "< 600 MiB", rss < 600)


# -- 4. resolve ------------------------------------------------------------------------------------------
def cold_burst(stack: Stack, report: Report, link: str, n: int = 16) -> None:
    """n resolves of one token nobody has validated yet, released at one instant (IAM answers in 0.2 s)."""
    start, failures = threading.Barrier(n), []

    def one() -> None:
        start.wait()
        try:
            stack.resolve(stack.cold_token, link)
        except Exception as e:  # noqa: BLE001 - counted, reported
            failures.append(repr(e))

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    calls = stack.validations().get(stack.cold_token, 0)
    report.details["4. cold burst"] = {"resolves": n, "validations": calls, "failures": failures}
    report.add(f"4. validations for {n} cold concurrent resolves of one token", "",
               f"{n - len(failures)}/{n} granted", f"{calls} call(s)", "exactly 1, all granted",
               calls == 1 and not failures)


def bench_resolve(stack: Stack, report: Report, reps: int, seconds: float = 2.0, concurrency: int = 16) -> None:
    tokens = stack.load_tokens
    links = stack.links("bench", [f"{16 * MiB + i}.mp3" for i in range(8)])
    cold_burst(stack, report, links[0])
    for token in tokens:  # warm the validation cache: one validation per token, now
        stack.resolve(token, links[0])
    warmed = time.monotonic()
    bodies = [json.dumps({"url": link}).encode() for link in links]
    resolve_reqs = [("POST", "/api/v1/resolve", {"Authorization": f"Bearer {t}", "Content-Type": "application/json"},
                     b) for t in tokens for b in bodies]
    kinds: dict[str, Callable[[int], tuple]] = {
        "healthz": lambda i: ("GET", "/healthz", None, None),
        "resolve": lambda i: resolve_reqs[i % len(resolve_reqs)],
    }
    runs: dict[str, list[dict]] = {k: [] for k in kinds}
    # Short windows, alternated, each resolve window compared with the healthz window just before it: the
    # neighbours on these shared machines change load from one second to the next.
    for i in range(2 * reps):
        for kind, make in kinds.items():
            before = procs.tree_cpu(stack.master)
            res = asyncio.run(load(stack.url, make, concurrency, seconds))
            cpu = sum(procs.cpu_delta(before, procs.tree_cpu(stack.master)).values())
            bad = sum(v for k, v in res.statuses.items() if k != 200) + res.errors
            runs[kind].append({"rps": res.rps, "p50_ms": percentile(res.latencies, 50) * 1000,
                               "p99_ms": percentile(res.latencies, 99) * 1000, "requests": res.requests,
                               "non_200_or_errors": bad, "statuses": res.statuses,
                               "server_cpu_ms_per_request": cpu / max(1, res.requests + 1) * 1000})
            say(f"  4. {kind} rep {i + 1}: {res.rps:.0f} req/s p50 {runs[kind][-1]['p50_ms']:.1f} ms "
                f"p99 {runs[kind][-1]['p99_ms']:.1f} ms, not 200: {bad}")
    elapsed = time.monotonic() - warmed
    counts = stack.validations()
    per_token = [counts.get(t, 0) for t in tokens]
    m = {k: {f: median([r[f] for r in v]) for f in ("rps", "p50_ms", "p99_ms", "server_cpu_ms_per_request")}
         for k, v in runs.items()}
    bad = sum(r["non_200_or_errors"] for r in runs["resolve"])
    ratios = [r["rps"] / h["rps"] for r, h in zip(runs["resolve"], runs["healthz"], strict=True)]
    ratio = median(ratios)
    report.details["4. resolve"] = {"tokens": len(tokens), "links": len(links), "concurrency": concurrency,
                                    "seconds_each": seconds, "runs": runs, "ratios": ratios,
                                    "validations_per_token": per_token,
                                    "seconds_since_warmup": elapsed}
    report.add("4. POST /api/v1/resolve vs GET /healthz (req/s)",
               f"{m['healthz']['rps']:.0f} req/s, p50 {m['healthz']['p50_ms']:.1f} / p99 "
               f"{m['healthz']['p99_ms']:.1f} ms",
               f"{m['resolve']['rps']:.0f} req/s, p50 {m['resolve']['p50_ms']:.1f} / p99 "
               f"{m['resolve']['p99_ms']:.1f} ms", f"{ratio:.2f}x healthz", ">= 0.5x, all 200",
               ratio >= 0.5 and bad == 0)
    report.add("4. server CPU per request", f"{m['healthz']['server_cpu_ms_per_request']:.2f} ms",
               f"{m['resolve']['server_cpu_ms_per_request']:.2f} ms", "", "", None)
    one_each = all(c == 1 for c in per_token)
    report.add("4. validation calls per distinct token", "", f"{min(per_token)}..{max(per_token)} "
               f"({len(tokens)} tokens, {sum(r['requests'] for r in runs['resolve'])} resolves)",
               f"{sum(per_token)} calls", "exactly 1 each", one_each)


# -- 5. seek ---------------------------------------------------------------------------------------------
def bench_seek(stack: Stack, report: Report, reps: int, size: int = GiB, tail: int = MiB) -> None:
    key = f"{size}.mp3"
    grant = stack.grant("bench", key)
    rng = {"Range": f"bytes={size - tail}-"}
    want = expected(size - tail, tail)
    runs = []
    for i in range(max(reps, 5)):
        d = fetch(f"{stack.upstream_url}/media/{key}", headers=rng)
        stack.upstream_reset()
        p = fetch(grant, headers=rng, keep=True)
        if p.status != 206 or p.body != want:
            raise SystemExit(f"seek: the resolver answered {p.status} with {p.received} bytes, not the range")
        time.sleep(0.3)  # let the upstream finish counting (an over-read would still be in flight)
        # Only requests that began after the reset: the direct fetch's thread may still add its last count.
        pulled = sum(r["bytes"] for r in stack.upstream_stats()["requests"])
        runs.append({"direct_ttfb_ms": d.first_body * 1000, "proxied_ttfb_ms": p.first_body * 1000,
                     "proxied_wall_ms": p.wall * 1000, "upstream_bytes": pulled})
        say(f"  5. seek rep {i + 1}: TTFB {p.first_body * 1000:.1f} ms (direct {d.first_body * 1000:.1f} ms), "
            f"upstream sent {pulled / MiB:.3f} MiB")
    report.details["5. seek"] = {"size_bytes": size, "range": rng["Range"], "runs": runs}
    pulled = max(r["upstream_bytes"] for r in runs)
    report.add("5. Range: last 1 MiB of 1 GiB",
               f"TTFB {median([r['direct_ttfb_ms'] for r in runs]):.1f} ms",
               f"TTFB {median([r['proxied_ttfb_ms'] for r in runs]):.1f} ms",
               f"{pulled / MiB:.3f} MiB pulled (max)", "< 1.1 MiB pulled", pulled < 1.1 * MiB)


# -- report ----------------------------------------------------------------------------------------------
def table(rows: list[Row]) -> str:
    lines = ["| measure | baseline | resolver | figure | target | result |", "|---|---|---|---|---|---|"]
    for r in rows:
        verdict = "" if r.ok is None else ("pass" if r.ok else "**miss**")
        lines.append(f"| {r.measure} | {r.baseline} | {r.resolver} | {r.figure} | {r.target} | {verdict} |")
    return "\n".join(lines)


def machine() -> dict[str, str]:
    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.rstrip()
        except OSError:
            return "?"

    model = ""
    try:
        model = re.findall(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())[0]
    except (OSError, IndexError):
        pass
    return {"nproc": run("nproc"), "cpu": model, "free -h": run("free", "-h"),
            "python": sys.version.split()[0], "kernel": platform.release()}


def plot(ttfb: dict[str, list[list[float]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for (name, runs), colour in zip(ttfb.items(), ("tab:blue", "tab:orange"), strict=False):
        for i, values in enumerate(runs):
            xs = sorted(v * 1000 for v in values)
            ax.plot(xs, [(k + 1) / len(xs) * 100 for k in range(len(xs))], color=colour, alpha=0.75,
                    label=f"{name} ({len(runs)} runs)" if i == 0 else None)
    ax.axvline(500, color="grey", linestyle=":", label="target p99 500 ms")
    ax.set_xlabel("time to first media byte (ms, log scale)")
    ax.set_ylabel("listeners (%)")
    ax.set_xscale("log")
    ax.set_title(f"{len(next(iter(ttfb.values()))[0])} simultaneous listeners: time to first media byte (CDF)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def rounded(value: object) -> object:
    """Floats to 4 significant digits, so the raw figures stay readable."""
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def write_markdown(path: Path, report: Report, info: dict, command: str, plot_name: str | None) -> None:
    notes = ""
    if path.exists():
        old = path.read_text()
        if NOTES_MARKER in old:
            notes = old.split(NOTES_MARKER, 1)[1].lstrip("\n")
    m = info["machine"]
    parts = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {info['date']} ({info['duration_s']:.0f} s). Every figure is a median over "
        f"repetitions (memory: {info['reps']}; throughput, listeners and seek: {max(info['reps'], 5)}; resolve: "
        f"{2 * info['reps']} paired windows) and is compared with a baseline measured in the same repetition: a "
        "direct download from the same local upstream, or `GET /healthz` on the same server.",
        "",
        table(report.rows),
        "",
        "## Machine and set-up",
        "",
        f"- `nproc`: {m['nproc']} ({m['cpu']}), kernel {m['kernel']}, Python {m['python']}",
        f"- load average (1, 5, 15 min; other sessions share the machine): {info['load']}",
        f"- server: `{info['gunicorn']}` from the Procfile, {info['workers']} workers, "
        f"store `{info['store']}`, audit log to a file",
        "- upstream: `bench/upstream.py` (thread per connection, `socket.send` from one buffer, Range, "
        "throttled `/slow/`), fake Twilio IAM in a child process; client: `bench/client.py` (raw sockets "
        "and asyncio, 1 MiB `recv_into`); all on 127.0.0.1, sharing the same cores",
        "",
        "```",
        "$ free -h",
        m["free -h"],
        "```",
        "",
    ]
    if plot_name:
        parts += ["## Time to first byte under load", "", f"![TTFB under load]({plot_name})", ""]
    parts += ["## Raw figures", "", "<details><summary>every repetition, as JSON</summary>", "", "```json",
              json.dumps(rounded(report.details), indent=1, default=str), "```", "", "</details>", "",
              NOTES_MARKER, "", notes]
    path.write_text("\n".join(parts).rstrip() + "\n")


SCENARIOS = {
    "1": ("stream throughput", bench_throughput),
    "2": ("memory", bench_memory),
    "3": ("concurrency", bench_concurrency),
    "4": ("resolve", bench_resolve),
    "5": ("seek", bench_seek),
    "6": ("encrypted recording", bench_encrypted),
    "7": ("s3 object", bench_s3),
}


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
    parser.add_argument("--plot", default=str(ROOT / "bench" / "ttfb-under-load.png"),
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
               s3_bytes=S3_SIZE if "7" in args.only else 0) as stack:
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
                "reps": args.reps, "gunicorn": shlex.join(["gunicorn", *stack.command[1:]]), "workers": workers,
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
