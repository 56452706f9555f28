"""Measure 1, throughput: the resolver against the floor (a bare relay) and the peer (nginx), in one run.

For a plain and an HTTPS upstream, each repetition downloads the same 512 MiB through every path once, in
an order that rotates with the repetition (so no path always runs first, or always right after another);
the figures are per-repetition ratios, reported as medians with their interquartile range, because these
shared machines are noisy. CPU is the serving processes' own (gunicorn's tree, the relay, nginx's tree).

Two upstreams, each plain and over HTTPS: the bench's own (Python, `bench.upstream`) and, when nginx is
installed, nginx serving a real file with sendfile (an object store's behaviour, and the issue's own bench's
upstream). Against the faster nginx upstream more of every path's own cost shows, and more of the loopback
TCP work of the upstream's sending is done (and counted) in the reader's process.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from . import procs
from .client import fetch
from .report import Report, Row
from .stack import Stack

MiB = 1 << 20
GiB = 1 << 30
SIZE = 512 * MiB
MIN_REPS = 9  # a second or two each, and a median of 9 paired ratios moves less than one of 5


@dataclass(frozen=True)
class Route:
    """One way to the same bytes: a URL and the process tree whose CPU it costs (0: not counted)."""

    name: str
    url: str
    pid: int


@dataclass
class Timing:
    wall_s: float
    cpu_s_per_gib: float


@dataclass
class Spread:
    median: float
    low: float  # 25th percentile
    high: float  # 75th percentile

    @classmethod
    def of(cls, values: list[float]) -> Spread:
        if not values:
            return cls(float("nan"), float("nan"), float("nan"))
        if len(values) < 2:
            return cls(values[0], values[0], values[0])
        q = statistics.quantiles(values, n=4, method="inclusive")
        return cls(statistics.median(values), q[0], q[2])

    def __str__(self) -> str:
        return f"{self.median:.2f}x (IQR {self.low:.2f}-{self.high:.2f})"


@dataclass
class Upstream:
    """Every repetition's timings of each path to one upstream."""

    label: str
    paths: list[Route]
    runs: list[dict[str, Timing]] = field(default_factory=list)

    def ratio(self, a: str, b: str) -> Spread:
        return Spread.of([r[a].wall_s / r[b].wall_s for r in self.runs if a in r and b in r])

    def median(self, name: str, attr: str) -> float:
        return statistics.median(getattr(r[name], attr) for r in self.runs)

    def has(self, name: str) -> bool:
        return any(p.name == name for p in self.paths)


def timed(path: Route, size: int, server_cpu: Callable[[int], float]) -> Timing:
    before = server_cpu(path.pid) if path.pid else 0.0
    resp = fetch(path.url)
    after = server_cpu(path.pid) if path.pid else 0.0
    if resp.status != 200 or resp.received != size:
        raise SystemExit(f"throughput: {path.name} answered {resp.status} with {resp.received} of {size} bytes")
    return Timing(resp.wall, (after - before) / (size / GiB))


def tree_seconds(pid: int) -> float:
    return sum(procs.tree_cpu(pid).values())


def measure(upstream: Upstream, size: int, reps: int, say: Callable[[str], None]) -> None:
    for i in range(reps):
        order = upstream.paths[i % len(upstream.paths):] + upstream.paths[:i % len(upstream.paths)]
        run = {p.name: timed(p, size, tree_seconds) for p in order}
        upstream.runs.append(run)
        say(f"  1. {upstream.label} rep {i + 1}: " + ", ".join(
            f"{p.name} {run[p.name].wall_s:.3f}s ({run[p.name].cpu_s_per_gib:.2f} CPU s/GiB)" for p in upstream.paths))


def _cpu(up: Upstream, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {up.median(n, 'cpu_s_per_gib'):.2f}" for n in names if up.has(n))


def _walls(up: Upstream, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n} {up.median(n, 'wall_s'):.2f} s" for n in names if up.has(n))


def bench_throughput(stack: Stack, report: Report, reps: int, size: int = SIZE) -> None:
    say = _say
    key = f"{size}.mp3"
    reps = max(reps, MIN_REPS)
    nginx = bool(stack.nginx_url)
    if not nginx:
        say("  1. NGINX IS NOT INSTALLED: the peer and the nginx upstream are skipped (apt-get install -y nginx)")
    peer = [Route("nginx", f"{stack.nginx_url}/media/{key}", stack.nginx.pid)] if nginx else []
    plain = Upstream("plain upstream", [
        Route("direct", f"{stack.upstream_url}/media/{key}", 0),
        Route("relay", f"{stack.relay_url}/media/{key}", stack.relay_pid),
        *peer,
        Route("resolver", stack.grant("bench", key), stack.master),
    ])
    tls = Upstream("HTTPS upstream", [
        Route("relay", f"{stack.tls_relay_url}/media/{key}", stack.tls_relay_pid),
        *([Route("nginx", f"{stack.nginx_url}/tls/media/{key}", stack.nginx.pid)] if nginx else []),
        Route("resolver", stack.grant("tls", key), stack.master),
    ])
    groups = [(plain, tls)]
    if stack.ngx_url:
        ngx_plain = Upstream("plain nginx upstream", [
            Route("direct", f"{stack.ngx_url}/media/{key}", 0),
            Route("relay", f"{stack.ngx_relay_url}/media/{key}", stack.ngx_relay_pid),
            Route("nginx", f"{stack.nginx_url}/ngx/media/{key}", stack.nginx.pid),
            Route("resolver", stack.grant("ngx", key), stack.master),
        ])
        ngx_tls = Upstream("HTTPS nginx upstream", [
            Route("relay", f"{stack.ngx_tls_relay_url}/media/{key}", stack.ngx_tls_relay_pid),
            Route("nginx", f"{stack.nginx_url}/ngxtls/media/{key}", stack.nginx.pid),
            Route("resolver", stack.grant("ngxtls", key), stack.master),
        ])
        groups.append((ngx_plain, ngx_tls))
    for pair in groups:
        for up in pair:
            measure(up, size, reps, say)
    net_size = 256 * MiB  # the same comparison behind a paced "network link", 256 MiB to keep it short
    net = Upstream("behind a link", [Route("direct", f"{stack.upstream_url}/net/{net_size}.mp3", 0),
                                     Route("resolver", stack.grant("net", f"{net_size}.mp3"), 0)])
    measure(net, net_size, 3, say)
    everything = [up for pair in groups for up in pair] + [net]
    report.details["1. throughput"] = {
        "size_bytes": size,
        **{up.label: [{name: {"wall_s": t.wall_s, "cpu_s_per_gib": t.cpu_s_per_gib} for name, t in r.items()}
                      for r in up.runs] for up in everything},
    }
    for (p, t), tag in zip(groups, ("1.", "1n."), strict=False):
        _rows(report, p, t, nginx, size, tag)
    add = report.rows.append
    add(Row(measure=f"1. (informative) 256 MiB behind a {stack.net_rate // MiB} MiB/s link",
            baseline=_walls(net, ("direct",)), resolver=_walls(net, ("resolver",)),
            figure=f"{net.ratio('resolver', 'direct').median:.2f}x direct", target="", ok=None))


def _rows(report: Report, plain: Upstream, tls: Upstream, nginx: bool, size: int, tag: str) -> None:
    """The figures of one upstream, plain and HTTPS; `tag` numbers them (1. Python upstream, 1n. nginx's)."""
    add = report.rows.append
    mib = size // MiB
    skipped = "nginx not installed: skipped"
    name = plain.label
    floor = plain.ratio("resolver", "relay")
    add(Row(measure=f"{tag} {name}, {mib} MiB: resolver over the floor (bare relay)",
            baseline=_walls(plain, ("relay",)), resolver=_walls(plain, ("resolver",)), figure=str(floor),
            target="<= 1.05x", ok=floor.median <= 1.05))
    if nginx:
        peer = plain.ratio("resolver", "nginx")
        add(Row(measure=f"{tag} {name}: resolver over nginx proxy_pass", baseline=_walls(plain, ("nginx",)),
                resolver=_walls(plain, ("resolver",)), figure=str(peer), target="<= 1.00x", ok=peer.median <= 1.0))
    else:
        add(Row(measure=f"{tag} {name}: resolver over nginx proxy_pass", baseline=skipped, resolver="",
                figure="", target="<= 1.00x", ok=None))
    add(Row(measure=f"{tag} (informative) {name}: each path over a direct download",
            baseline=_walls(plain, ("direct",)),
            resolver=", ".join(f"{n} {plain.ratio(n, 'direct').median:.2f}x" for n in ("relay", "nginx", "resolver")
                               if plain.has(n)), figure="", target="", ok=None))
    cpu = plain.median("resolver", "cpu_s_per_gib")
    add(Row(measure=f"{tag} {name}: server CPU (s/GiB)", baseline=_cpu(plain, ("relay", "nginx")),
            resolver=f"{cpu:.2f}", figure="", target="<= 0.40 s/GiB", ok=cpu <= 0.40))
    name = tls.label
    if nginx:
        peer = tls.ratio("resolver", "nginx")
        add(Row(measure=f"{tag} {name}: resolver over nginx proxy_pass", baseline=_walls(tls, ("nginx",)),
                resolver=_walls(tls, ("resolver",)), figure=str(peer), target="<= 1.10x", ok=peer.median <= 1.10))
    else:
        add(Row(measure=f"{tag} {name}: resolver over nginx proxy_pass", baseline=skipped, resolver="",
                figure="", target="<= 1.10x", ok=None))
    add(Row(measure=f"{tag} (informative) {name}: resolver over the floor (bare TLS relay)",
            baseline=_walls(tls, ("relay",)), resolver=_walls(tls, ("resolver",)),
            figure=str(tls.ratio("resolver", "relay")), target="", ok=None))
    cpu = tls.median("resolver", "cpu_s_per_gib")
    add(Row(measure=f"{tag} {name}: server CPU (s/GiB)", baseline=_cpu(tls, ("relay", "nginx")),
            resolver=f"{cpu:.2f}", figure="", target="<= 1.3 s/GiB", ok=cpu <= 1.3))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
