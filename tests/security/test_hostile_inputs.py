"""The hostile-input corpus of SECURITY-BAR.md "Bad inputs every release must survive", as one table.

Each row names the input, the status docs/http-api.md prescribes, and what may reach the outside: `upstream` says
whether a server that must stay untouched was asked ("none": its request log must not grow; "required": it
must, which proves the counting works), `iam` whether Twilio's token validation may be asked. The servers
watched depend on the row's world:

* "core": the app of conftest; watched are the media stores (Twilio recordings, the private storage);
* "stream": a source on the misbehaving upstream of tests/hostile.py; watched is the allowlisted *redirect
  target* (every hop that passes the address check lands there), since the first request to the misbehaving
  store is the fault itself.

Every row also checks that the answer leaks nothing: no token, link, grant, key, credential or upstream URL
in the body, no media bytes unless the row serves media, and the security headers are present.
Finer-grained upstream behaviour (byte counts of seeks, header policing, TLS of hops) is in test_upstream.py.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from resolver import config, create_app
from resolver.access.signing import Link, Signer
from resolver.streaming.guarded_http import new_guarded_session
from resolver.streaming.upstream import StreamAborted
from tests.support.env import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    KEYS,
    RECORDING,
    RECORDING_SID,
    SERVICE_KEY,
    STORAGE_TOKEN,
    TRANSCRIPT,
    WORKER,
    basic,
    issue_links,
    new_token,
)
from tests.support.hostile import BLOB, HOSTILE_TOKEN, RESOLVES, mint, stream_env

PUBLIC = "http://127.0.0.1:5000"
FLEX = "https://flex.twilio.com"
TASK = "WT" + "7" * 32


@dataclass
class World:
    """A running app with one issued link and one fresh grant per source, and a valid Flex token."""

    client: object
    app: object
    twilio: object
    token: str
    links: dict[str, str]  # source -> link token
    grants: dict[str, str]  # source -> grant token
    audit_path: Path

    storage: object = None

    def secrets(self) -> list[str]:
        return [self.token, *self.links.values(), *self.grants.values(), *KEYS, SERVICE_KEY, STORAGE_TOKEN,
                AUTH_TOKEN, self.storage.url, ACCOUNT_SID]  # type: ignore[attr-defined]

    def watched(self) -> int:
        return len(self.twilio.media_requests) + len(self.storage.requests)  # type: ignore[attr-defined]

    def signed_link(self, **fields: object) -> str:
        """A link signed with the live keys but never issued by the API (an old release, a bug elsewhere)."""
        base = {"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw", "task": TASK}
        return Signer(KEYS).sign_link(Link(**{**base, **fields}))  # type: ignore[arg-type]

    def grant_for(self, link: Link, issued: float, expires: float, keys: list[str] | None = None) -> str:
        return Signer(keys or list(KEYS)).sign_grant(link, identity="sup@example.com", worker=WORKER,
                                                     issued_at=int(issued), expires_at=int(expires))[1]

    def resolve(self, link_token: str) -> str:
        resp = self.client.post("/api/v1/resolve", json={"url": f"{PUBLIC}/d/{link_token}"},  # type: ignore[attr-defined]
                                headers={"Authorization": f"Bearer {self.token}"})
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["url"].rsplit("/", 1)[1]


def flip(token: str, index: int) -> str:
    return token[:index] + ("A" if token[index] != "A" else "B") + token[index + 1:]


REC = Link(source="recordings", key=RECORDING_SID, type="VoiceRecording", task=TASK)
Path_ = Callable[[World], str]
Headers = Callable[[World], dict[str, str]]


@dataclass(frozen=True)
class Row:
    name: str
    method: str
    path: Path_
    status: int
    upstream: str = "none"  # "none" | "any" | "required"
    iam: bool = True  # may Twilio's token validation be asked?
    headers: Headers = lambda w: {}
    body: Callable[[World], object] | None = None
    environ: dict[str, str] = field(default_factory=dict)
    serves: bool = False  # the answer carries media
    check: Callable[[World, object], None] | None = None
    world: str = "core"  # or "stream" (see the module docstring)
    aborts: bool = False  # the upstream fails mid-body: the client connection must be cut, never completed
    xfail: str = ""  # a known gap in the core, with file:line; strict, so a fix turns it red until removed


def grant(source: str = "recordings") -> Path_:
    return lambda w: f"/m/{w.grants[source]}"


def bearer(w: World) -> dict[str, str]:
    return {"Authorization": f"Bearer {w.token}"}


def resolve_body(link: Callable[[World], str]) -> Callable[[World], object]:
    return lambda w: {"url": f"{PUBLIC}/d/{link(w)}"}


def links_body(**entry: object) -> Callable[[World], object]:
    return lambda w: {"task_sid": TASK, "media": [{"source": "transcripts", "type": "Raw", **entry}]}


SERVICE = {"Authorization": f"Bearer {SERVICE_KEY}"}
HUNDREDS_OF_RANGES = "bytes=" + ",".join(f"{i}-{i}" for i in range(0, 1000, 2))


def _audit_client_is_socket_address(w: World, resp: object) -> None:
    records = [json.loads(line) for line in w.audit_path.read_text().splitlines()]
    resolves = [r for r in records if r["event"] == "resolve" and r["outcome"] == "allowed"]
    assert resolves[-1]["client"] == "203.0.113.7", resolves[-1]


def _attachment_not_html(w: World, resp: object) -> None:
    assert resp.headers["Content-Type"] == "application/octet-stream"  # type: ignore[attr-defined]
    assert resp.headers["Content-Disposition"].startswith("attachment;")  # type: ignore[attr-defined]


def _whole_entity_without_range(w: World, resp: object) -> None:
    """An ignored Range: the whole entity, and the hostile header never left for the store."""
    assert resp.data == RECORDING  # type: ignore[attr-defined]
    assert w.twilio.media_requests[-1]["range"] is None  # type: ignore[attr-defined]


def _cors_for_flex(resp: object) -> None:
    assert resp.headers["Access-Control-Allow-Origin"] == FLEX  # type: ignore[attr-defined]


def _request_id_not_reflected(w: World, resp: object) -> None:
    assert all(c.isalnum() or c == "-" for c in resp.headers["X-Request-Id"])  # type: ignore[attr-defined]


def _revoke(kind: str, value: Callable[[World], str]) -> Headers:
    def headers(w: World) -> dict[str, str]:
        w.app.extensions["resolver"].store.revoke(kind, value(w), time.time())  # type: ignore[attr-defined]
        return bearer(w) if kind == "subject" else {}
    return headers


ROWS = [
    # --- controls: the counters do see upstream traffic -------------------------------------------------
    Row("control: a valid grant streams", "GET", grant(), 200, upstream="required", serves=True),
    Row("control: HTML from a store is an opaque download", "GET", grant("html"), 200, upstream="required",
        serves=True, check=_attachment_not_html),
    # --- grants (/m) ----------------------------------------------------------------------------------------
    Row("grant: empty", "GET", lambda w: "/m/", 404),
    Row("grant: a.b", "GET", lambda w: "/m/a.b", 403),
    Row("grant: a.b.c", "GET", lambda w: "/m/a.b.c", 403),
    Row("grant: flipped character in payload", "GET", lambda w: "/m/" + flip(w.grants["recordings"], 3), 403),
    Row("grant: flipped character in signature", "GET", lambda w: "/m/" + flip(w.grants["recordings"], -2), 403),
    Row("grant: truncated", "GET", lambda w: "/m/" + w.grants["recordings"][:-4], 403),
    Row("grant: extended", "GET", lambda w: "/m/" + w.grants["recordings"] + "A", 403),
    Row("grant: '=' padding appended", "GET", lambda w: "/m/" + w.grants["recordings"] + "=", 403),
    Row("grant: junk inside the signature", "GET",
        lambda w: "/m/" + w.grants["recordings"][:-5] + "!!" + w.grants["recordings"][-5:], 403),
    Row("grant: 5 KB of junk", "GET", lambda w: "/m/" + "x" * 5000, 403),
    Row("grant: expired", "GET", lambda w: "/m/" + w.grant_for(REC, time.time() - 120, time.time() - 60), 403),
    Row("grant: dated in the future", "GET",
        lambda w: "/m/" + w.grant_for(REC, time.time() + 3600, time.time() + 3660), 403),
    Row("grant: signed with a retired key", "GET",
        lambda w: "/m/" + w.grant_for(REC, time.time(), time.time() + 60, keys=["r" * 40]), 403),
    Row("grant: a link used as a grant", "GET", lambda w: "/m/" + w.links["recordings"], 403),
    Row("grant: path traversal instead of a grant", "GET", lambda w: "/m/..%2f..%2fhealthz", 404),
    Row("grant: its link was revoked", "GET", grant(), 403,
        headers=_revoke("link", lambda w: REC.id)),
    Row("grant: of a signed link whose key leaves its source", "GET",
        lambda w: "/m/" + w.resolve(w.signed_link(key="../secrets/x.json")), 400),
    Row("grant: of a signed link whose key would break Content-Disposition", "GET",
        lambda w: "/m/" + w.resolve(w.signed_link(key='a".json;\r\nSet-Cookie: x=1')), 400),
    Row("grant: for a source removed since", "GET", lambda w: "/m/" + w.grant_for(
        Link(source="retired-source", key="x", type="Raw", task=TASK), time.time(), time.time() + 60), 404),
    Row("link: to an unknown source (same answer as a bad link)", "POST", lambda w: "/api/v1/resolve", 404,
        headers=bearer, body=resolve_body(lambda w: w.signed_link(source="retired-source"))),
    # --- links (/d, /p, resolve) ----------------------------------------------------------------------------
    Row("link: a grant used as a link (resolve)", "POST", lambda w: "/api/v1/resolve", 404, headers=bearer,
        body=resolve_body(lambda w: w.grants["recordings"])),
    Row("link: a grant used as a link (/p)", "GET", lambda w: "/p/" + w.grants["recordings"], 404,
        headers=lambda w: {"Authorization": basic(w.token)}),
    Row("link: flipped character", "POST", lambda w: "/api/v1/resolve", 404, headers=bearer,
        body=resolve_body(lambda w: flip(w.links["recordings"], 5))),
    Row("link: signed with a retired key", "POST", lambda w: "/api/v1/resolve", 404, headers=bearer,
        body=resolve_body(lambda w: Signer(["r" * 40]).sign_link(REC))),
    Row("link: from another host", "POST", lambda w: "/api/v1/resolve", 400, headers=bearer,
        body=lambda w: {"url": "https://evil.example/d/" + w.links["recordings"]}),
    Row("link: with a query string", "POST", lambda w: "/api/v1/resolve", 400, headers=bearer,
        body=lambda w: {"url": f"{PUBLIC}/d/{w.links['recordings']}?x=1"}),
    Row("link: revoked subject", "POST", lambda w: "/api/v1/resolve", 403,
        headers=_revoke("subject", lambda w: "sup@example.com"), body=resolve_body(lambda w: w.links["recordings"])),
    Row("link: opened directly (/d)", "GET", lambda w: "/d/" + w.links["recordings"], 401, iam=False,
        headers=lambda w: {"Accept": "text/html"}),
    Row("link: /d with traversal", "GET", lambda w: "/d/..%2f..%2fm%2fx", 401, iam=False),
    # --- Flex tokens ----------------------------------------------------------------------------------------
    *[Row(f"flex token: {name}", "POST", lambda w: "/api/v1/resolve", 401, iam=False,
          headers=(lambda a: lambda w: {"Authorization": a} if a is not None else {})(auth),
          body=resolve_body(lambda w: w.links["recordings"]))
      for name, auth in [("none", None), ("empty", ""), ("scheme only", "Bearer"), ("two tokens", "Bearer a b"),
                         ("9 KB", "Bearer " + "x" * 9000), ("non-ASCII", "Bearer tok\u00e9n"),
                         ("NUL", "Bearer tok\x00en"), ("Basic on resolve", "Basic dG9rZW46YQ==")]],
    *[Row(f"flex token: {name}", "POST", lambda w: "/api/v1/resolve", 401,
          headers=(lambda a: lambda w: {"Authorization": a})(auth), body=resolve_body(lambda w: w.links["recordings"]))
      for name, auth in [("a.b", "Bearer a.b"), ("a.b.c", "Bearer a.b.c"), ("unknown", "Bearer eyJunknown")]],
    Row("flex token: flipped character", "POST", lambda w: "/api/v1/resolve", 401,
        headers=lambda w: {"Authorization": f"Bearer {flip(w.token, len(w.token) - 2)}"},
        body=resolve_body(lambda w: w.links["recordings"])),
    Row("flex token: expired", "POST", lambda w: "/api/v1/resolve", 401,
        headers=lambda w: {"Authorization": "Bearer " + new_token(w.twilio, worker_sid=WORKER,  # type: ignore[arg-type]
                                                                  expires_at=time.time() - 5)},
        body=resolve_body(lambda w: w.links["recordings"])),
    Row("flex token: /p with Bearer instead of Basic", "GET", lambda w: "/p/" + w.links["recordings"], 401,
        iam=False, headers=bearer),
    Row("flex token: /p with Basic of another user name", "GET", lambda w: "/p/" + w.links["recordings"], 401,
        iam=False, headers=lambda w: {"Authorization": "Basic dXNlcjp0b2s="}),  # "user:tok"
    # --- keys and paths (links API) -------------------------------------------------------------------------
    *[Row(f"key: {name}", "POST", lambda w: "/api/v1/links", 400, iam=False, headers=lambda w: SERVICE,
          body=links_body(key=key))
      for name, key in [("..", ".."), ("../ prefix", "../secret.json"), ("%2e%2e", "%2e%2e/x"),
                        ("//host", "//evil.example/x"), ("\\host", "\\\\evil.example\\x"), ("absolute URL", "https://evil.example/x"),
                        ("NUL", "a\x00b"), ("CRLF", "a\r\nSet-Cookie: x=1"), ("very long", "k" * 5000),
                        ("quote", 'a".json'), ("semicolon", "a;b.json"), ("non-ASCII", "\u00e9t\u00e9.json"),
                        ("leading slash", "/etc/passwd"), ("fullwidth dots", "\uff0e\uff0e/x")]],
    Row("key: not a recording SID for twilio-recording", "POST", lambda w: "/api/v1/links", 400, iam=False,
        headers=lambda w: SERVICE,
        body=lambda w: {"task_sid": TASK, "media": [{"source": "recordings", "key": "../../Calls",
                                                     "type": "VoiceRecording"}]}),
    Row("key: unknown source", "POST", lambda w: "/api/v1/links", 404, iam=False, headers=lambda w: SERVICE,
        body=links_body(source="nope", key="x")),
    Row("entry: Embedded refused", "POST", lambda w: "/api/v1/links", 400, iam=False, headers=lambda w: SERVICE,
        body=links_body(type="Embedded", key="x")),
    Row("entry: without a type", "POST", lambda w: "/api/v1/links", 400, iam=False, headers=lambda w: SERVICE,
        body=lambda w: {"task_sid": TASK, "media": [{"source": "transcripts", "key": "x"}]}),
    Row("service key: wrong", "POST", lambda w: "/api/v1/links", 401, iam=False,
        headers=lambda w: {"Authorization": "Bearer " + "s" * 39 + "t"}, body=links_body(key="x")),
    # --- headers ----------------------------------------------------------------------------------------
    # RFC 9110 14.2 lets a server ignore a Range it will not serve; our 416 is for unsatisfiable ones.
    *[Row(f"range: {name}", "GET", grant(), 200, upstream="required", serves=True,
          headers=(lambda v: lambda w: {"Range": v})(value), check=_whole_entity_without_range)
      for name, value in [("hundreds of ranges", HUNDREDS_OF_RANGES), ("start after end", "bytes=10-5"),
                          ("not bytes", "items=0-1"), ("40-digit start", "bytes=" + "9" * 40 + "-")]],
    Row("range: bytes=-0", "GET", grant(), 416, upstream="any", headers=lambda w: {"Range": "bytes=-0"}),
    Row("range: start past the end", "GET", grant(), 416, upstream="any",
        headers=lambda w: {"Range": f"bytes={len(RECORDING) + 10}-"}),
    Row("origin: null on resolve", "POST", lambda w: "/api/v1/resolve", 403, iam=False,
        headers=lambda w: {**bearer(w), "Origin": "null"}, body=resolve_body(lambda w: w.links["recordings"])),
    Row("origin: flex.twilio.com.evil.example on /p", "GET", lambda w: "/p/" + w.links["recordings"], 403,
        iam=False, headers=lambda w: {"Authorization": basic(w.token), "Origin": FLEX + ".evil.example"}),
    Row("origin: null on a grant", "GET", grant(), 403, headers=lambda w: {"Origin": "null"}),
    Row("origin: flex.twilio.com.evil.example on a grant", "GET", grant(), 403,
        headers=lambda w: {"Origin": FLEX + ".evil.example"}),
    Row("origin: upper-case variant", "GET", grant(), 403, headers=lambda w: {"Origin": "https://FLEX.twilio.com"}),
    Row("origin: explicit default port", "GET", grant(), 403, headers=lambda w: {"Origin": FLEX + ":443"}),
    Row("origin: preflight from evil", "OPTIONS", grant(), 403,
        headers=lambda w: {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}),
    Row("origin: Flex itself (control)", "GET", grant(), 206, upstream="required", serves=True,
        headers=lambda w: {"Origin": FLEX, "Range": "bytes=0-9"},
        check=lambda w, r: _cors_for_flex(r)),
    Row("x-forwarded-for: forged, not trusted", "POST", lambda w: "/api/v1/resolve", 200,
        headers=lambda w: {**bearer(w), "X-Forwarded-For": "10.0.0.1"}, environ={"REMOTE_ADDR": "203.0.113.7"},
        body=resolve_body(lambda w: w.links["recordings"]), check=_audit_client_is_socket_address),
    Row("x-request-id: markup is not echoed into headers or logs", "GET", lambda w: "/healthz", 200, iam=False,
        headers=lambda w: {"X-Request-Id": "<script>alert(1)</script>"}, check=_request_id_not_reflected),
    # --- methods ----------------------------------------------------------------------------------------
    *[Row(f"method: {m} on a grant", m, grant(), 405) for m in ("POST", "PUT", "DELETE", "PATCH")],
    Row("method: GET on resolve", "GET", lambda w: "/api/v1/resolve", 405, iam=False),
    Row("method: html error page holds no token", "GET", lambda w: "/m/" + flip(w.grants["recordings"], 3), 403,
        headers=lambda w: {"Accept": "text/html"}),
]

# --- upstream redirects and faults (world "stream") ---------------------------------------------------------------
def hop(name: str, location: str, status: int = 302) -> Path_:
    """A grant for a key on the misbehaving store that answers with a redirect to `location`."""
    def path(w: World) -> str:
        w.hostile.redirects[name] = (status, location.format(public=w.public.port))  # type: ignore[attr-defined]
        return w.grant_path(f"redirect/{name}")  # type: ignore[attr-defined]
    return path


def faulty(key: str, source: str = "hostile") -> Path_:
    return lambda w: w.grant_path(key, source)  # type: ignore[attr-defined]


def _chain(w: World) -> str:
    for a, b in (("c0", "c1"), ("c1", "c2"), ("c2", "c3")):
        w.hostile.redirects[a] = (302, f"/redirect/{b}")  # type: ignore[attr-defined]
    w.hostile.redirects["c3"] = (302, "https://public.example.test/ok/x.mp3")  # type: ignore[attr-defined]
    return w.grant_path("redirect/c0")  # type: ignore[attr-defined]


STREAM_ROWS = [
    Row("redirect: control, an allowlisted public host is followed", "GET",
        hop("ok", "https://public.example.test/ok/x.mp3"), 200, upstream="required", serves=True),
    *[Row(f"redirect: to {name}", "GET", hop(f"bad{i}", location), 502)
      for i, (name, location) in enumerate([
          ("127.0.0.1", "http://127.0.0.1:{public}/ok/x.mp3"), ("169.254.169.254", "http://169.254.169.254/latest/"),
          ("[::1]", "https://[::1]:{public}/ok/x.mp3"), ("[::ffff:127.0.0.1]", "https://[::ffff:127.0.0.1]/ok/x.mp3"),
          ("file://", "file:///etc/passwd"), ("a host not allowlisted", "https://evil.example/ok/x.mp3"),
          ("an allowlisted name that resolves to 10.0.0.7", "https://private.example.test/ok/x.mp3"),
          ("an allowlisted name that resolves to the metadata address", "https://metadata.example.test/x"),
          ("credentials smuggled in the authority", "https://public.example.test@127.0.0.1/ok/x.mp3")])],
    Row("redirect: more than three hops", "GET", _chain, 502),
    *[Row(f"upstream: answers {code}", "GET", faulty(f"fail/{code}"), 502, upstream="none")
      for code in (500, 503)],
    Row("upstream: stalls before the headers", "GET", faulty("stall-headers/x.mp3"), 504),
    Row("upstream: stalls after the headers, before the body", "GET", faulty("stall-first/x.mp3"), 504),
    Row("upstream: unreachable", "GET", faulty("x.mp3", "closed"), 502),
    Row("upstream: HTML where audio was expected", "GET", faulty("html/x.mp3"), 200, serves=True,
        check=_attachment_not_html),
    Row("upstream: Content-Length over the limit", "GET", faulty("ok/x.mp3", "limited"), 502),
    *[Row(f"upstream: {name}", "GET", faulty(key), 200, serves=True, aborts=True)
      for name, key in [("stalls during the body", "stall-body/x.mp3"), ("resets mid-stream", "reset/x.mp3"),
                        ("sends less than its Content-Length", "short/x.mp3")]],
    Row("upstream: body over the limit without a Content-Length", "GET", faulty("no-length/x.mp3", "limited"),
        200, serves=True, aborts=True),
]
ROWS += [Row(**{**r.__dict__, "world": "stream"}) for r in STREAM_ROWS]


@pytest.fixture
def world(app, client, twilio, storage, env) -> World:
    storage.objects.setdefault("calls/page.html", (b"<script>alert(1)</script>", "text/html"))
    token = new_token(twilio, worker_sid=WORKER)
    entries = issue_links(client, [
        {"source": "recordings", "key": RECORDING_SID, "type": "VoiceRecording"},
        {"source": "transcripts", "key": "calls/2026/t1.json", "type": "Raw"},
        {"source": "transcripts", "key": "calls/page.html", "type": "Raw"},
        {"source": "crm", "key": "T-1", "type": "Referenced"},
    ], task=TASK)
    names = ["recordings", "transcripts", "html", "crm"]
    links = {n: e["url"].rsplit("/", 1)[1] for n, e in zip(names, entries, strict=True)}
    w = World(client=client, app=app, twilio=twilio, token=token, links=links, grants={},
              audit_path=Path(env["RESOLVER_AUDIT_LOG"]), storage=storage)
    w.grants = {n: w.resolve(link) for n, link in links.items()}
    return w


@dataclass
class StreamWorld(World):
    """The app with the misbehaving store as extra sources; redirect hops resolve through a test resolver."""

    hostile: object = None
    public: object = None

    def grant_path(self, key: str, source: str = "hostile") -> str:
        return mint(self.app.extensions["resolver"].signer, source, key)  # type: ignore[attr-defined]

    def secrets(self) -> list[str]:
        return [*super().secrets(), HOSTILE_TOKEN, self.hostile.url, "example.test"]  # type: ignore[attr-defined]

    def watched(self) -> int:
        return len(self.public.requests)  # type: ignore[attr-defined]


@pytest.fixture
def stream_world(env, tmp_path, twilio, storage, hostile, public, tls_files) -> Iterator[StreamWorld]:
    app = create_app(config.from_env(stream_env(tmp_path, env, hostile.url)))
    app.config["TESTING"] = True
    upstream = app.extensions["resolver"].upstream

    def resolve(host, port, family=0, type=0, proto=0, flags=0):  # type: ignore[no-untyped-def]
        if host not in RESOLVES:
            raise socket.gaierror(socket.EAI_NONAME, "unknown test host")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in RESOLVES[host]]

    upstream.hops.close()  # the same seam as test_upstream.py: whatever passes the check lands on `public`
    upstream.hops = new_guarded_session(resolve=resolve, dial=lambda sockaddr: ("127.0.0.1", public.port))
    upstream.hops.verify = tls_files[0]
    yield StreamWorld(client=app.test_client(), app=app, twilio=twilio, token="", links={}, grants={},
                      audit_path=Path(env["RESOLVER_AUDIT_LOG"]), storage=storage, hostile=hostile, public=public)
    app.extensions["resolver"].close()


def _param(r: Row):  # type: ignore[no-untyped-def]
    marks = [pytest.mark.xfail(reason=r.xfail, strict=True)] if r.xfail else []
    return pytest.param(r, id=f"{r.world}: {r.name}" if r.world != "core" else r.name, marks=marks)


@pytest.mark.parametrize("row", [_param(r) for r in ROWS])
def test_hostile_input(row: Row, request: pytest.FixtureRequest, twilio):
    world: World = request.getfixturevalue("world" if row.world == "core" else "stream_world")
    path, headers = row.path(world), row.headers(world)
    body = row.body(world) if row.body else None
    watched_before, iam_before = world.watched(), len(twilio.validations)

    resp = world.client.open(path, method=row.method, headers=headers, json=body,  # type: ignore[attr-defined]
                             environ_base=dict(row.environ), buffered=not row.aborts)

    assert resp.status_code == row.status, (row.name, resp.status_code, resp.data[:300])
    if row.aborts:
        got = 0
        with pytest.raises(StreamAborted):
            for chunk in resp.response:
                got += len(chunk)
        assert got < len(BLOB)
    upstream = world.watched() - watched_before
    if row.upstream == "none":
        assert upstream == 0, f"{row.name}: {upstream} upstream request(s) made"
    if row.upstream == "required":
        assert upstream >= 1
    if not row.iam:
        assert len(twilio.validations) == iam_before, f"{row.name}: Twilio was asked"
    text = b"" if row.aborts else resp.get_data()
    for secret in filter(None, world.secrets()):
        assert secret.encode() not in text, f"{row.name}: a secret is in the body"
    if not row.serves:
        assert RECORDING[:64] not in text and TRANSCRIPT not in text and BLOB[:64] not in text
    assert resp.headers.get("X-Content-Type-Options") == "nosniff"
    assert resp.headers.get("Cache-Control") == "no-store"
    if row.status >= 400:
        assert "Access-Control-Allow-Origin" not in resp.headers or resp.headers["Access-Control-Allow-Origin"] == FLEX
    if row.check:
        row.check(world, resp)


def test_every_bar_category_has_rows():
    """The table covers each family of SECURITY-BAR's list."""
    prefixes = {r.name.split(":")[0] for r in ROWS}
    assert {"grant", "link", "flex token", "key", "range", "origin", "x-forwarded-for", "method", "redirect",
            "upstream"} <= prefixes
