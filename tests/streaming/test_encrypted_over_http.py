"""Encrypted recordings through the production server (gunicorn + gevent, as the Procfile runs it): what a real
player gets on the wire. A tampered file's body stops short of its Content-Length: the client sees an error,
never a complete download."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import pytest
import requests
from enc_fixtures import ENCRYPTED, PLAINTEXT, TAMPERED, encrypted_env, install, secrets_of

from resolver.access.signing import Signer
from tests.support.env import KEYS, start_gunicorn, stop_gunicorn
from tests.support.hostile import mint


@pytest.fixture(scope="module")
def server(tmp_path_factory, twilio, storage):
    from tests.support.env import base_env

    install(twilio)
    tmp_path = tmp_path_factory.mktemp("enc-gunicorn")
    srv = start_gunicorn(encrypted_env(tmp_path, base_env(tmp_path, twilio, storage)), tmp_path, name="enc")
    yield srv
    stop_gunicorn(srv)


def grant_url(server, key: str) -> str:
    return server.url + mint(Signer(KEYS), "recordings", key)


def test_full_download_and_a_seek_over_http(server):
    resp = requests.get(grant_url(server, ENCRYPTED), timeout=30)
    assert resp.status_code == 200 and resp.content == PLAINTEXT
    part = requests.get(grant_url(server, ENCRYPTED), headers={"Range": "bytes=700001-700100"}, timeout=30)
    assert part.status_code == 206 and part.content == PLAINTEXT[700001:700101]


def test_a_tampered_download_is_cut_short_on_the_wire(server, twilio):
    parts = urlsplit(grant_url(server, TAMPERED))
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.request("GET", parts.path)
    resp = conn.getresponse()
    assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(PLAINTEXT)
    with pytest.raises(http.client.IncompleteRead) as e:
        resp.read()
    conn.close()
    assert len(e.value.partial) < len(PLAINTEXT)
    log = server.log()
    assert "failed its integrity check" in log and TAMPERED in log
    for secret in secrets_of(twilio, TAMPERED):
        assert secret not in log
