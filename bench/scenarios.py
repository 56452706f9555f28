"""The measures 2 to 5: memory, slow listeners, resolve vs healthz (and the cold burst), seek; and their statistics."""

from __future__ import annotations

import asyncio
import json
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable

from . import procs
from .client import Response, afetch, apaced, fetch, load
from .report import Report
from .stack import Stack
from .upstream import expected

MiB = 1 << 20
MIN_REPS = 5  # listeners and seek: the most sensitive to the neighbours' load, so at least this many
LISTENER_SIZE = 64 * 1024 * 10  # measure 3's stream: 10 s at the Stack's default rate (nginx serves a file of it)


GiB = 1 << 30


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
    """From the Python upstream, then (rows 3n.) from nginx's limit_rate when the stack has it."""
    size = int(stack.rate * seconds)
    # (row label, source, upstream URL, how the rows name it, whose runs the plot shows)
    upstreams = [("3.", "slow", stack.upstream_url, "", True)]
    if stack.ngx_url and stack.nginx_slow_bytes == size:
        upstreams.append(("3n.", "ngxslow", stack.ngx_url, " (nginx upstream)", False))
    else:
        say("  3n. skipped: nginx is not installed (apt-get install nginx), or the stack has no file of this size")
    for label, source, upstream_url, where, plotted in upstreams:
        _listeners_from(stack, report, reps, n, size, label, source, upstream_url, where, plotted,
                        timeout=seconds * 6)
    _players(stack, report, reps, n)


def _players(stack: Stack, report: Report, reps: int, n: int, seconds: float = 6.0) -> None:
    """Rows 3p. (the Python upstream) and 3pn. (nginx's sendfile, when the stack has its large file): the same
    number of listeners, but the upstream is fast and the players read at the Stack's rate (a long recording
    played from an object store), so each stream's sender is far ahead of its reader for as long as it runs.
    The p99 first byte, and the resolver's RSS, which must not hold a large buffer for a reader at playback
    speed (resolver/streaming/relay.py, GROW_AFTER). The players hang up after `seconds`."""
    size = 256 * MiB
    upstreams = [("3p.", "bench", f"{stack.upstream_url}/media/{size}.mp3", f"{size}.mp3", "")]
    if stack.ngx_url and stack.nginx_upstream_bytes:
        key = f"{stack.nginx_upstream_bytes}.mp3"
        upstreams.append(("3pn.", "ngx", f"{stack.ngx_url}/media/{key}", key, " (nginx upstream)"))
    else:
        say("  3pn. skipped: nginx is not installed (apt-get install nginx), or the stack has no large file")
    for label, source, direct, key, upstream in upstreams:
        link = stack.links(source, [key])[0]
        idle_rss = sum(procs.rss_kib(p) for p in [stack.master, *stack.workers()]) / 1024
        runs = []
        for i in range(max(reps, 3)):
            grants = [stack.resolve(stack.ops_token, link) for _ in range(n)]
            run = {side: _play(urls, stack, seconds) for side, urls in (("direct", [direct] * n), ("proxied", grants))}
            say(f"  {label} {n} players rep {i + 1}: served {run['proxied']['served']}/{n}, errors "
                f"{run['proxied']['errors']}, p99 first byte {run['proxied']['ttfb_p99_ms']:.0f} ms (direct "
                f"{run['direct']['ttfb_p99_ms']:.0f} ms), total RSS {run['proxied']['total_rss_mib']:.0f} MiB")
            runs.append(run)
        report.details[f"{label} players"] = {"players": n, "seconds": seconds, "upstream": direct,
                                              "rate": stack.rate, "idle_rss_mib": idle_rss, "runs": runs}
        served, errors, p99, d99, rss = _summary(runs, "served")
        where = f"{n} players reading {stack.rate // 1024} KiB/s from a fast upstream for {seconds:.0f} s{upstream}"
        report.add(f"{label} {where}: p99 time to first media byte (median of {len(runs)} runs)", f"{d99:.0f} ms",
                   f"{p99:.0f} ms, {served}/{n} served (worst run), {errors} errors",
                   f"{p99 / d99:.1f}x direct" if d99 else "", "< 500 ms, all served",
                   p99 < 500 and served == n and errors == 0)
        report.add(f"{label} {where}: total RSS of gunicorn", f"{idle_rss:.0f} MiB idle", f"{rss:.0f} MiB peak",
                   f"{rss:.0f} MiB", "< 600 MiB", rss < 600)


def _play(urls: list[str], stack: Stack, seconds: float) -> dict:
    async def all_of() -> list[Response | BaseException]:
        return await asyncio.gather(*(asyncio.wait_for(apaced(u, stack.rate, seconds), seconds * 6) for u in urls),
                                    return_exceptions=True)

    with procs.Sampler(stack.master, interval=0.1) as sampler:
        results = asyncio.run(all_of())
    ok = [r for r in results if isinstance(r, Response) and r.status == 200 and r.received > 0]
    errors: dict[str, int] = {}
    for r in results:
        if r not in ok:
            name = type(r).__name__ if isinstance(r, BaseException) else f"HTTP {r.status} ({r.received} bytes)"
            errors[name] = errors.get(name, 0) + 1
    return {"served": len(ok), "errors": errors, "ttfb_p99_ms": percentile([r.first_body for r in ok], 99) * 1000,
            "received_mib": sum(r.received for r in ok) / MiB, "total_rss_mib": sampler.peak_total / 1024}


def _listeners_from(stack: Stack, report: Report, reps: int, n: int, size: int, label: str, source: str,
                    upstream_url: str, where: str, plotted: bool, timeout: float) -> None:
    key = f"{size}.mp3"
    link = stack.links(source, [key])[0]
    idle_rss = sum(procs.rss_kib(p) for p in [stack.master, *stack.workers()]) / 1024
    runs = []
    for i in range(max(reps, MIN_REPS)):
        grants = [stack.resolve(stack.ops_token, link) for _ in range(n)]
        direct = listeners(stack, [f"{upstream_url}/slow/{key}"] * n, size, timeout=timeout)
        proxied = listeners(stack, grants, size, timeout=timeout)
        say(f"  {label} {n} listeners rep {i + 1}: completed {proxied['completed']}/{n}, errors {proxied['errors']}, "
            f"p99 TTFB {proxied['ttfb_p99_ms']:.0f} ms (direct {direct['ttfb_p99_ms']:.0f} ms), "
            f"total RSS {proxied['total_rss_mib']:.0f} MiB, wall {proxied['wall_s']:.1f}s")
        runs.append({"direct": direct, "proxied": proxied})
    if plotted:
        report.ttfb = {"direct": [r["direct"]["first_body_s"] for r in runs],
                       "resolver": [r["proxied"]["first_body_s"] for r in runs]}
    for r in runs:
        for side in ("direct", "proxied"):
            r[side] = {k: v for k, v in r[side].items() if k != "first_body_s"}
    report.details[f"{label} concurrency"] = {"listeners": n, "bytes_each": size, "idle_rss_mib": idle_rss,
                                              "upstream": upstream_url, "runs": runs}
    completed, errors, p99, d99, rss = _summary(runs, "completed")
    report.add(f"{label} {n} listeners at {stack.rate // 1024} KiB/s{where}: completed", f"{n}/{n} direct",
               f"{completed}/{n} (worst run)", f"{errors} errors", "all, 0 errors",
               completed == n and errors == 0)
    report.add(f"{label} {n} listeners{where}: p99 time to first media byte (median of {len(runs)} runs)",
               f"{d99:.0f} ms",
               f"{p99:.0f} ms (runs: {', '.join(str(round(r['proxied']['ttfb_p99_ms'])) for r in runs)})",
               f"{p99 / d99:.1f}x direct" if d99 else "", "< 500 ms", p99 < 500)
    report.add(f"{label} {n} listeners{where}: total RSS of gunicorn", f"{idle_rss:.0f} MiB idle",
               f"{rss:.0f} MiB peak", f"{rss:.0f} MiB", "< 600 MiB", rss < 600)


def _summary(runs: list[dict], done: str) -> tuple[int, int, float, float, float]:
    """Over the runs of measure 3 or 3p.: the fewest streams `done` in a run, all errors, the median p99
    first byte through the resolver and direct, the median peak RSS."""
    return (min(r["proxied"][done] for r in runs), sum(sum(r["proxied"]["errors"].values()) for r in runs),
            median([r["proxied"]["ttfb_p99_ms"] for r in runs]), median([r["direct"]["ttfb_p99_ms"] for r in runs]),
            median([r["proxied"]["total_rss_mib"] for r in runs]))


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
    for i in range(max(reps, MIN_REPS)):
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
