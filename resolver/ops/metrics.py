"""Prometheus metrics at `/metrics`, for operators only.

Protection: the endpoint exists only when `RESOLVER_METRICS_TOKEN` is set (otherwise 404, like the
service-key endpoints), and answers only `Authorization: Bearer <token>` (otherwise 401). Prometheus
sends it with `authorization: {credentials: ...}` in its scrape config. Nothing in the metrics names a
user, a link or a key: labels are fixed words (outcomes, error codes, source names).

Counting: the request-level counters are fed from the audit records (an audit observer), so metrics and
the trail cannot disagree. Upstream latency comes from the shared `requests` session (time to response
headers), token-validation cache hits and misses from the validator's hook.

Several gunicorn workers: with `PROMETHEUS_MULTIPROC_DIR` set (gunicorn_config sets a fresh one when
more than one worker runs) every worker writes its samples there and `/metrics` sums them, whichever
worker answers. Without it, each process reports only its own counts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import requests
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

from ..services import Context

RESOLVES = Counter("resolver_resolves_total", "Grant requests from Flex users, by channel and outcome",
                   ["via", "outcome"])
DENIALS = Counter("resolver_denials_total", "Refusals, by audit event and reason code", ["event", "reason"])
GRANTS = Counter("resolver_grants_total", "Grant uses, by outcome (served, redirected, refused)",
                 ["outcome"])
STREAMS_ABORTED = Counter("resolver_streams_aborted_total", "Media streams that ended before the last byte")
BYTES = Counter("resolver_bytes_streamed_total", "Media bytes streamed to clients")
LINKS = Counter("resolver_links_issued_total", "Media links issued")
UPSTREAM_SECONDS = Histogram(
    "resolver_upstream_seconds", "Time until an upstream (a media store or Twilio) answered with headers",
    ["upstream"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
VALIDATION_CACHE = Counter("resolver_validation_cache_total",
                           "Flex token validations answered from the shared cache (hit) or by Twilio (miss)",
                           ["result"])


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def observe(rec: Mapping[str, Any]) -> None:
    """Count one audit record."""
    event, outcome = str(rec.get("event")), str(rec.get("outcome"))
    if event == "resolve":
        RESOLVES.labels(via=str(rec.get("via") or "resolve"), outcome=outcome).inc()
    elif event == "grant":
        GRANTS.labels(outcome=outcome).inc()
        sent = rec.get("bytes")
        if isinstance(sent, int) and sent > 0:
            BYTES.inc(sent)
        if outcome == "served" and rec.get("complete") is False:
            STREAMS_ABORTED.inc()
    elif event == "link" and outcome == "issued":
        LINKS.inc()
    if outcome in ("denied", "refused"):
        DENIALS.labels(event=event, reason=str(rec.get("reason") or "unknown")).inc()


def _upstream_name(c: Context, url: str) -> str:
    for source in c.settings.sources.values():  # sources first: Twilio's hosts may share a base URL
        if url.startswith(source.base_url):
            return source.name
    return "twilio_iam" if url.startswith(c.settings.iam_url + "/") else "other"


def instrument(c: Context) -> None:
    """Count from the audit trail, the validator and the shared session."""
    c.audit.observers.append(observe)
    c.validator.on_cache = lambda hit: VALIDATION_CACHE.labels(result="hit" if hit else "miss").inc()

    def timed(resp: requests.Response, *args: object, **kwargs: object) -> None:
        UPSTREAM_SECONDS.labels(upstream=_upstream_name(c, resp.request.url or "")).observe(
            resp.elapsed.total_seconds())

    c.http.hooks["response"].append(timed)


def exposition() -> tuple[bytes, str]:
    """The Prometheus text of every counter (all workers' with PROMETHEUS_MULTIPROC_DIR) and its type."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST
