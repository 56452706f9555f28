"""The streaming proxy in-process, against real local upstreams: HTTP semantics, headers, redirects, faults.

The Flask test client drives /m/<grant>; the upstreams are raw socket servers (tests/hostile.py). Redirect hops
to 'public' hosts use the guarded session with a test resolver and dialer (the only seam): the address check
itself runs unchanged on the addresses the resolver returns.
"""

from __future__ import annotations

import hashlib
import socket
import time

import pytest
import requests
from werkzeug.http import parse_options_header

from resolver import config, create_app
from resolver.streaming.guarded_http import blocked, new_guarded_session
from resolver.streaming.upstream import StreamAborted, content_disposition
from tests.support.env import RECORDING, RECORDING_SID
from tests.support.hostile import (
    BLOB,
    BLOB_SHA,
    ETAG,
    HOSTILE_TOKEN,
    HUGE,
    LAST_MODIFIED,
    RESOLVES,
    huge_slice,
    mint,
    stream_env,
)

SIZE = len(BLOB)


def settle(server, timeout: float = 5.0) -> int:
    """Wait until the server holds no connection (its byte count is then final) and return that count."""
    deadline = time.monotonic() + timeout
    while server.open_connections and time.monotonic() < deadline:
        time.sleep(0.01)
    return server.body_bytes


@pytest.fixture
def app(env, tmp_path, hostile, public, tls_files):
    settings = config.from_env(stream_env(tmp_path, env, hostile.url))
    app = create_app(settings)
    app.config["TESTING"] = True
    upstream = app.extensions["resolver"].upstream

    def resolve(host, port, family=0, type=0, proto=0, flags=0):
        if host not in RESOLVES:
            raise socket.gaierror(socket.EAI_NONAME, "unknown test host")
        fam = {4: socket.AF_INET, 6: socket.AF_INET6}
        return [(fam[6 if ":" in a else 4], socket.SOCK_STREAM, 6, "", (a, port)) for a in RESOLVES[host]]

    def dial(sockaddr):
        return ("127.0.0.1", public.port)  # whatever passed the check is served by the local TLS server

    upstream.hops.close()
    upstream.hops = new_guarded_session(resolve=resolve, dial=dial)
    upstream.hops.verify = tls_files[0]
    yield app
    app.extensions["resolver"].close()


@pytest.fixture
def grant(app):
    signer = app.extensions["resolver"].signer
    return lambda key, source="hostile", channels=None: mint(signer, source, key, channels)


def last(server):
    return server.requests[-1]


# --- HTTP semantics a player needs ------------------------------------------------------------------------------
def test_full_get_is_byte_for_byte_with_allowlisted_headers(client, grant, hostile):
    resp = client.get(grant("ok/call.mp3"), headers={"Cookie": "session=1", "Authorization": "Bearer client",
                                                     "X-Forwarded-For": "1.2.3.4", "Forwarded": "for=1.2.3.4"})
    assert resp.status_code == 200
    assert hashlib.sha256(resp.data).hexdigest() == BLOB_SHA
    h = resp.headers
    assert h["Content-Length"] == str(SIZE) and h["Accept-Ranges"] == "bytes"
    assert h["ETag"] == ETAG and h["Last-Modified"] == LAST_MODIFIED and h["Content-Type"] == "audio/mpeg"
    assert h["Content-Disposition"] == "inline; filename=\"call.mp3\"; filename*=UTF-8''call.mp3"
    assert h["Cache-Control"] == "no-store" and h["Referrer-Policy"] == "no-referrer"
    assert h["X-Content-Type-Options"] == "nosniff" and "max-age=" in h["Strict-Transport-Security"]
    assert "media-src 'self'" in h["Content-Security-Policy"] and "sandbox" not in h["Content-Security-Policy"]
    for name in ("X-Secret-Upstream", "Set-Cookie", "Access-Control-Allow-Origin"):
        assert name not in h
    assert h.get("Server", "") != "hostile/1"
    sent = last(hostile).headers
    assert sent["authorization"] == f"Bearer {HOSTILE_TOKEN}" and sent["accept-encoding"] == "identity"
    for name in ("cookie", "x-forwarded-for", "forwarded", "range"):
        assert name not in sent


@pytest.mark.parametrize(("asked", "start", "end"), [
    ("bytes=0-0", 0, 0),
    ("bytes=100-199", 100, 199),
    ("bytes=1000-", 1000, SIZE - 1),
    ("bytes=-500", SIZE - 500, SIZE - 1),
    ("bytes=-99999999", 0, SIZE - 1),
    (f"bytes={SIZE - 10}-99999999999", SIZE - 10, SIZE - 1),
    ("BYTES = 5 - 9", 5, 9),
])
def test_single_range_is_206_and_fetches_only_its_bytes(client, grant, hostile, asked, start, end):
    before = settle(hostile)
    resp = client.get(grant("ok/call.mp3"), headers={"Range": asked})
    assert resp.status_code == 206
    assert resp.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
    assert resp.headers["Content-Length"] == str(end - start + 1)
    assert resp.data == BLOB[start:end + 1]
    assert settle(hostile) - before == end - start + 1  # the upstream sent exactly the range


def test_a_seek_in_a_1_gib_recording_fetches_only_the_asked_bytes(client, grant, hostile):
    before = settle(hostile)
    resp = client.get(grant("huge/long-call.mp3"), headers={"Range": "bytes=900000000-900262143"})
    assert resp.status_code == 206 and resp.headers["Content-Range"] == f"bytes 900000000-900262143/{HUGE}"
    assert resp.data == huge_slice(900000000, 900262144)
    assert settle(hostile) - before == 262144
    assert last(hostile).headers["range"] == "bytes=900000000-900262143"
    head = client.head(grant("huge/long-call.mp3"))
    assert head.status_code == 200 and head.headers["Content-Length"] == str(HUGE) and head.data == b""


def test_ranges_reassemble_the_whole_entity(client, grant):
    url, parts, pos = grant("ok/call.mp3"), [], 0
    for size in (1, 65535, 262144, 300001, 1048576, 7):
        parts.append(client.get(url, headers={"Range": f"bytes={pos}-{pos + size - 1}"}).data)
        pos += size
    parts.append(client.get(url, headers={"Range": f"bytes={pos}-"}).data)
    assert hashlib.sha256(b"".join(parts)).hexdigest() == BLOB_SHA


@pytest.mark.parametrize("asked", [
    "bytes=0-1,5-6",
    "bytes=" + ",".join(f"{i}-{i}" for i in range(300)),
    "bytes=0-0," * 50 + "-1",
    "bytes=abc",
    "items=0-1",
    "bytes=5-3",
    "bytes=-",
    "bytes=" + "9" * 40 + "-",
])
def test_multi_malformed_and_absurd_ranges_get_the_whole_entity(client, grant, hostile, asked):
    resp = client.get(grant("ok/call.mp3"), headers={"Range": asked})
    assert resp.status_code == 200 and "Content-Range" not in resp.headers
    assert hashlib.sha256(resp.data).hexdigest() == BLOB_SHA
    assert "range" not in last(hostile).headers


@pytest.mark.parametrize("asked", ["bytes=-0", f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 10}"])
def test_unsatisfiable_ranges_are_416_with_the_length(client, grant, asked):
    resp = client.get(grant("ok/call.mp3"), headers={"Range": asked})
    assert resp.status_code == 416
    assert resp.headers["Content-Range"] == f"bytes */{SIZE}"
    assert resp.get_json()["error"]["code"] == "range_not_satisfiable" and BLOB[:32] not in resp.data


def test_a_range_past_the_end_is_416_even_if_the_upstream_ignores_ranges(client, grant):
    resp = client.get(grant("ignore-range/x.mp3"), headers={"Range": f"bytes={SIZE}-"})
    assert resp.status_code == 416 and resp.headers["Content-Range"] == f"bytes */{SIZE}"
    whole = client.get(grant("ignore-range/x.mp3"), headers={"Range": "bytes=10-20"})
    assert whole.status_code == 200 and hashlib.sha256(whole.data).hexdigest() == BLOB_SHA


@pytest.mark.parametrize("key", ["wrong-range/x.mp3", "multipart/x.mp3"])
def test_a_206_that_is_not_the_asked_range_is_502(client, grant, key):
    resp = client.get(grant(key), headers={"Range": "bytes=500-999"})
    assert resp.status_code == 502 and BLOB[:32] not in resp.data


def test_head_gives_headers_and_no_body(client, grant):
    resp = client.head(grant("ok/call.mp3"))
    assert resp.status_code == 200 and resp.data == b""
    assert resp.headers["Content-Length"] == str(SIZE) and resp.headers["Accept-Ranges"] == "bytes"
    part = client.head(grant("ok/call.mp3"), headers={"Range": "bytes=10-19"})
    assert part.status_code == 206 and part.headers["Content-Range"] == f"bytes 10-19/{SIZE}" and part.data == b""


@pytest.mark.parametrize("cond", [{"If-None-Match": ETAG}, {"If-Modified-Since": LAST_MODIFIED}])
def test_conditional_requests_get_304(client, grant, cond):
    resp = client.get(grant("ok/call.mp3"), headers=cond)
    assert resp.status_code == 304 and resp.data == b"" and resp.headers["ETag"] == ETAG
    assert resp.headers["Cache-Control"] == "no-store"


def test_conditionals_are_forwarded_only_when_well_formed(client, grant, hostile):
    assert client.get(grant("ok/call.mp3"), headers={"If-None-Match": '"other"'}).status_code == 200
    assert last(hostile).headers["if-none-match"] == '"other"'
    bad = client.get(grant("ok/call.mp3"), headers={"If-None-Match": "x" * 3000, "If-Range": ETAG})
    assert bad.status_code == 200
    assert "if-none-match" not in last(hostile).headers and "if-range" not in last(hostile).headers
    client.get(grant("ok/call.mp3"), headers={"If-Range": ETAG, "Range": "bytes=0-9"})
    assert last(hostile).headers["if-range"] == ETAG


# --- what the browser is told ----------------------------------------------------------------------------------
def test_html_from_the_upstream_is_an_opaque_download(client, grant):
    resp = client.get(grant("html/page.mp3"))
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["X-Content-Type-Options"] == "nosniff"


def test_upstream_header_junk_never_reaches_the_client(client, grant):
    resp = client.get(grant("header-junk/x.mp3"))
    h = resp.headers
    assert resp.status_code == 200 and resp.data == b"abcd"
    assert h["Content-Type"] == "audio/mpeg"
    for name in ("ETag", "Accept-Ranges", "Last-Modified", "Access-Control-Allow-Origin", "Refresh", "Link"):
        assert name not in h
    assert h["Content-Security-Policy"] != "default-src *" and "evil.html" not in h["Content-Disposition"]


def test_a_content_length_beside_chunking_is_dropped(client, grant):
    resp = client.get(grant("te-and-cl/x.mp3"))
    assert resp.status_code == 200 and resp.data == b"0123456789" and "Content-Length" not in resp.headers


def test_content_encoding_passes_through_without_decoding(client, grant):
    import gzip

    resp = client.get(grant("gzip/t.mp3"))
    assert resp.headers["Content-Encoding"] == "gzip" and gzip.decompress(resp.data) == b'{"turns": []}'


@pytest.mark.parametrize("name", ['a"b.mp3', "a;b=c.mp3", "a\r\nSet-Cookie: x=1.mp3", "Anruf Müller ☎.mp3",
                                  "../../etc/passwd", ""])
def test_content_disposition_is_rfc_6266(name):
    value = content_disposition(name, inline=False)
    assert "\r" not in value and "\n" not in value
    kind, params = parse_options_header(value)
    assert kind == "attachment" and params["filename"] == (name or "media")
    fallback = value.split('filename="', 1)[1].split('"', 1)[0]
    assert all(c.isalnum() or c in "._-" for c in fallback)


# --- redirects --------------------------------------------------------------------------------------------------
def redirect_to(hostile, name, location, status=302):
    hostile.redirects[name] = (status, location)
    return f"redirect/{name}"


@pytest.mark.parametrize("location", [
    "http://127.0.0.1:{other}/ok/x.mp3",
    "http://169.254.169.254/latest/meta-data/",
    "https://169.254.169.254/latest/meta-data/",
    "http://[::1]:{port}/ok/x.mp3",
    "https://[::1]/ok/x.mp3",
    "https://[::ffff:127.0.0.1]/ok/x.mp3",
    "https://[::ffff:7f00:1]:{port}/ok/x.mp3",
    "https://2130706433/ok/x.mp3",
    "https://127.1/ok/x.mp3",
    "file:///etc/passwd",
    "gopher://public.example.test/x",
    "https://evil.example/ok/x.mp3",
    "https://public.example.test.evil.example/ok/x.mp3",
    "//evil.example/ok/x.mp3",
    "http://public.example.test/ok/x.mp3",
    "https://public.example.test:8443/ok/x.mp3",
    "https://user:pw@public.example.test/ok/x.mp3",
    "https://public.example.test@127.0.0.1/ok/x.mp3",
    "https://127.0.0.1:80\\@public.example.test/ok/x.mp3",
    "https://public.example.test\\@evil.example/",
    "https://p\u00fablic.example.test/ok/x.mp3",
    "https://public.example.test./ok/x.mp3",
    "https://public.example.test /ok/x.mp3",
    "",
])
def test_redirects_outside_the_allowlist_are_refused(client, grant, hostile, public, location):
    location = location.format(port=hostile.port, other=public.port)
    before = len(public.requests)
    resp = client.get(grant(redirect_to(hostile, "bad", location)))
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "upstream_redirect_refused"
    assert len(public.requests) == before and BLOB[:32] not in resp.data
    assert "example" not in resp.get_data(as_text=True)  # no upstream URL in the error


@pytest.mark.parametrize("host", ["loopback", "metadata", "mapped", "nat64", "sixtofour", "private", "mixed"])
def test_an_allowlisted_host_that_resolves_to_a_private_address_is_refused(client, grant, hostile, public, host):
    before = len(public.requests)
    resp = client.get(grant(redirect_to(hostile, host, f"https://{host}.example.test/ok/x.mp3")))
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "upstream_redirect_refused"
    assert len(public.requests) == before  # never dialled


def test_an_allowlisted_public_host_is_followed_without_credentials(client, grant, hostile, public):
    key = redirect_to(hostile, "cdn", "https://public.example.test/ok/signed.mp3?X-Amz-Signature=abc", 307)
    resp = client.get(grant(key), headers={"Range": "bytes=100-1099"})
    assert resp.status_code == 206 and resp.data == BLOB[100:1100]
    first, hop = last(hostile), last(public)
    assert first.headers["authorization"] == f"Bearer {HOSTILE_TOKEN}"
    assert "authorization" not in hop.headers and hop.headers["host"] == "public.example.test"
    assert hop.headers["range"] == "bytes=100-1099" and hop.query == {"X-Amz-Signature": ["abc"]}
    full = client.get(grant(key))
    assert hashlib.sha256(full.data).hexdigest() == BLOB_SHA


def test_basic_auth_stays_on_the_base_origin_too(client, grant, hostile, public):
    key = redirect_to(hostile, "basic", "https://public.example.test/ok/b.mp3")
    resp = client.get(grant(key, source="basic"), headers={"Range": "bytes=0-9"})
    assert resp.status_code == 206 and resp.data == BLOB[:10]
    assert last(hostile).headers["authorization"].startswith("Basic ")
    assert "authorization" not in last(public).headers


def test_a_hop_whose_certificate_does_not_name_the_host_fails(client, grant, hostile):
    resp = client.get(grant(redirect_to(hostile, "mitm", "https://other.example.test/ok/x.mp3")))
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "upstream_error"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_same_origin_hops_keep_credentials(client, grant, hostile, status):
    resp = client.get(grant(redirect_to(hostile, f"same{status}", "/ok/moved.mp3", status)))
    assert resp.status_code == 200 and hashlib.sha256(resp.data).hexdigest() == BLOB_SHA
    assert last(hostile).path == "/ok/moved.mp3"
    assert last(hostile).headers["authorization"] == f"Bearer {HOSTILE_TOKEN}"


def test_at_most_three_hops(client, grant, hostile):
    redirect_to(hostile, "h1", "/redirect/h2")
    redirect_to(hostile, "h2", "/redirect/h3")
    redirect_to(hostile, "h3", "/ok/end.mp3")
    assert client.get(grant("redirect/h1")).status_code == 200  # three redirects: followed
    redirect_to(hostile, "h0", "/redirect/h1")
    resp = client.get(grant("redirect/h0"))  # four: refused
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "upstream_redirect_refused"
    redirect_to(hostile, "loop", "/redirect/loop")
    assert client.get(grant("redirect/loop")).status_code == 502


@pytest.mark.parametrize("url", ["http://localhost:{port}/ok/x.mp3", "http://127.1:{port}/ok/x.mp3",
                                 "http://2130706433:{port}/ok/x.mp3", "http://[::ffff:127.0.0.1]:{port}/ok/x.mp3",
                                 "http://0.0.0.0:{port}/ok/x.mp3"])
def test_the_guarded_session_checks_what_the_system_resolver_returns(hostile, url):
    """No seam here: the production resolver and dialer, on names and numbers that mean loopback."""
    session, before = new_guarded_session(), len(hostile.requests)
    with pytest.raises(requests.ConnectionError) as e:
        session.get(url.format(port=hostile.port), timeout=2)
    session.close()
    assert blocked(e.value) and len(hostile.requests) == before


# --- upstream faults --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("key", "status", "code"), [
    ("fail/500", 502, "upstream_error"), ("fail/502", 502, "upstream_error"), ("fail/503", 502, "upstream_error"),
    ("fail/401", 502, "upstream_error"), ("fail/403", 502, "upstream_error"), ("fail/418", 502, "upstream_error"),
    ("gone/x.mp3", 404, "media_gone"), ("nothing/x.mp3", 404, "media_gone"),
])
def test_upstream_errors_become_ours(client, grant, key, status, code):
    resp = client.get(grant(key))
    assert resp.status_code == status and resp.get_json()["error"]["code"] == code
    assert "secret-internal-detail" not in resp.get_data(as_text=True)


def test_unreachable_upstream_is_502(client, grant):
    assert client.get(grant("x.mp3", source="closed")).status_code == 502


@pytest.mark.parametrize("key", ["stall-headers/x.mp3", "stall-first/x.mp3"])
def test_a_stall_before_the_first_byte_is_504(client, grant, key):
    started = time.monotonic()
    resp = client.get(grant(key))
    assert resp.status_code == 504 and resp.get_json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("key", ["stall-body/x.mp3", "reset/x.mp3", "short/x.mp3", "chunked-abort/x.mp3"])
def test_a_failure_after_the_first_byte_aborts_the_stream(client, grant, key):
    resp = client.get(grant(key), buffered=False)
    assert resp.status_code == 200
    got = 0
    with pytest.raises(StreamAborted):
        for chunk in resp.response:
            got += len(chunk)
    assert 0 < got < SIZE


def test_closing_the_client_response_closes_the_upstream_at_once(client, grant, hostile):
    """The test holds every reference, so only an explicit close (not garbage collection) can free it."""
    settle(hostile)
    resp = client.get(grant("endless/live.mp3"), buffered=False)
    chunks = iter(resp.response)
    assert len(next(chunks)) > 0 and hostile.open_connections == 1
    resp.close()
    assert settle(hostile, timeout=2) == 0 or hostile.open_connections == 0


def test_an_upstream_sending_more_than_its_content_length_is_cut_at_it(client, grant):
    resp = client.get(grant("long/x.mp3"))
    assert resp.status_code == 200 and resp.data == BLOB[:1000]


def test_a_slow_but_alive_upstream_is_not_cut(client, grant, hostile):
    """The read timeout (1 s here) is an idle timeout: 6 bytes 0.3 s apart take longer than that in total."""
    started = time.monotonic()
    resp = client.get(grant("drip/x.mp3"))
    assert resp.status_code == 200 and resp.data == BLOB[:hostile.drip_bytes]
    assert time.monotonic() - started > 1.5


def test_the_size_limit_refuses_early_by_content_length(client, grant):
    resp = client.get(grant("ok/x.mp3", source="limited"))
    assert resp.status_code == 502 and resp.get_json()["error"]["code"] == "media_too_large"
    part = client.get(grant("ok/x.mp3", source="limited"), headers={"Range": "bytes=0-9"})
    assert part.status_code == 502  # the entity is too large, whichever part is asked


def test_the_size_limit_is_enforced_while_streaming(client, grant):
    resp = client.get(grant("no-length/x.mp3", source="limited"), buffered=False)
    got = 0
    with pytest.raises(StreamAborted):
        for chunk in resp.response:
            got += len(chunk)
    assert got <= 1_000_000


# --- Twilio recordings ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("source", "channels", "suffix", "args"), [
    ("recordings", None, ".mp3", {}),
    ("recordings", 2, ".mp3", {"RequestedChannels": "2"}),
    ("wavs", 1, ".wav", {}),
    ("wavs", 2, ".wav", {"RequestedChannels": "2"}),
])
def test_twilio_recordings_per_format_and_channels(client, grant, twilio, source, channels, suffix, args):
    twilio.recordings[RECORDING_SID] = (RECORDING, "audio/wav" if suffix == ".wav" else "audio/mpeg")
    try:
        resp = client.get(grant(RECORDING_SID, source=source, channels=channels), headers={"Range": "bytes=0-99"})
    finally:
        twilio.recordings[RECORDING_SID] = (RECORDING, "audio/mpeg")
    assert resp.status_code == 206 and resp.data == RECORDING[:100]
    assert resp.headers["Content-Type"] == ("audio/wav" if suffix == ".wav" else "audio/mpeg")
    assert resp.headers["Content-Disposition"].startswith(f'inline; filename="{RECORDING_SID}{suffix}"')
    seen = twilio.media_requests[-1]
    assert seen["path"].endswith(f"/Recordings/{RECORDING_SID}{suffix}") and seen["args"] == args
    assert seen["authorized"] and seen["range"] == "bytes=0-99"


# --- the audit record of each stream ----------------------------------------------------------------------------
def grant_records(env) -> list[dict]:
    import json
    from pathlib import Path

    lines = Path(env["RESOLVER_AUDIT_LOG"]).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == "grant"]


def test_streams_are_audited_with_bytes_range_and_completeness(client, grant, env, hostile):
    resp = client.get(grant("ok/call.mp3"))
    assert len(resp.data) == SIZE
    resp.close()  # what a WSGI server does at the end of a response
    full = grant_records(env)[-1]
    assert (full["outcome"], full["status"], full["bytes"], full["complete"]) == ("served", 200, SIZE, True)
    resp = client.get(grant("ok/call.mp3"), headers={"Range": "bytes=10-19"})
    assert resp.data == BLOB[10:20]
    resp.close()
    part = grant_records(env)[-1]
    assert (part["status"], part["bytes"], part["range"], part["complete"]) == (206, 10, "bytes=10-19", True)
    resp = client.get(grant("stall-body/x.mp3"), buffered=False)
    with pytest.raises(StreamAborted):
        for _ in resp.response:
            pass
    resp.close()
    cut = grant_records(env)[-1]
    assert cut["outcome"] == "served" and cut["complete"] is False and 0 < cut["bytes"] < SIZE
    hostile.redirects["audit"] = (302, "http://169.254.169.254/")
    client.get(grant("redirect/audit"))
    refused = grant_records(env)[-1]
    assert (refused["outcome"], refused["reason"], refused["status"]) == ("refused", "upstream_redirect_refused", 502)
    assert all(HOSTILE_TOKEN not in str(r) for r in grant_records(env))


# --- the rest of SECURITY-BAR's "Headers" row, on the grant endpoint --------------------------------------------
@pytest.mark.parametrize("origin", ["null", "https://flex.twilio.com.evil.example", "https://evil.example", "*"])
def test_foreign_origins_get_no_media_and_no_cors(client, grant, origin):
    resp = client.get(grant("ok/call.mp3"), headers={"Origin": origin, "Range": "bytes=0-99"})
    assert resp.status_code == 403 and "Access-Control-Allow-Origin" not in resp.headers
    assert BLOB[:100] not in resp.data


def test_the_flex_origin_gets_cors_on_a_range(client, grant):
    resp = client.get(grant("ok/call.mp3"), headers={"Origin": "https://flex.twilio.com", "Range": "bytes=0-99"})
    assert resp.status_code == 206 and resp.headers["Access-Control-Allow-Origin"] == "https://flex.twilio.com"
    assert "Content-Range" in resp.headers["Access-Control-Expose-Headers"]


def test_a_forged_forwarded_for_is_neither_believed_nor_passed_on(client, grant, env, hostile):
    resp = client.get(grant("ok/call.mp3"), headers={"X-Forwarded-For": "6.6.6.6", "Range": "bytes=0-0"})
    assert resp.status_code == 206
    resp.close()
    assert grant_records(env)[-1]["client"] == "127.0.0.1"
    assert "x-forwarded-for" not in last(hostile).headers


# --- configuration of the streaming proxy -----------------------------------------------------------------------
def load(env, tmp_path, extra: str, **more: str):
    from pathlib import Path

    path = tmp_path / "cfg-sources.toml"
    path.write_text(Path(env["RESOLVER_SOURCES"]).read_text() + extra)
    return config.from_env({**env, "RESOLVER_SOURCES": str(path), **more})


def test_stream_settings_and_source_options(env, tmp_path):
    s = load(env, tmp_path, '\n[sources.tw]\nkind = "twilio-recording"\nredirect_hosts = ["media.example.com"]\n'
             'max_bytes = 5000\n', RESOLVER_MAX_MEDIA_BYTES="100000", RESOLVER_UPSTREAM_IDLE_TIMEOUT="7.5",
             RESOLVER_UPSTREAM_CONNECT_TIMEOUT="2")
    assert s.sources["tw"].redirect_hosts == ("media.example.com",) and s.sources["tw"].max_bytes == 5000
    assert (s.max_media_bytes, s.read_timeout, s.connect_timeout) == (100000, 7.5, 2.0)
    defaults = config.from_env(env)
    assert defaults.max_media_bytes is None and defaults.read_timeout == 20.0


@pytest.mark.parametrize("hosts", ['["*.example.com"]', '["https://cdn.example.com"]', '["10.0.0.1"]', '["cdn"]',
                                   '["cdn.example.com/path"]', '["user@cdn.example.com"]', '[""]'])
def test_redirect_hosts_are_exact_dns_names(env, tmp_path, hosts):
    with pytest.raises(config.ConfigError, match="redirect_hosts"):
        load(env, tmp_path, f'\n[sources.bad]\nkind = "http"\nbase_url = "https://s.example.com/"\n'
                            f"redirect_hosts = {hosts}\n")


@pytest.mark.parametrize(("extra", "more"), [
    ('\n[sources.bad]\nkind = "http"\nbase_url = "https://s.example.com/"\nmax_bytes = 0\n', {}),
    ('\n[sources.bad]\nkind = "http"\nbase_url = "https://s.example.com/"\nmax_bytes = "1MB"\n', {}),
    ("", {"RESOLVER_MAX_MEDIA_BYTES": "-1"}),
    ("", {"RESOLVER_UPSTREAM_IDLE_TIMEOUT": "forever"}),
    ("", {"RESOLVER_UPSTREAM_CONNECT_TIMEOUT": "0"}),
])
def test_bad_limits_stop_start_up(env, tmp_path, extra, more):
    with pytest.raises(config.ConfigError):
        load(env, tmp_path, extra, **more)
