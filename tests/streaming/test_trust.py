"""Which CAs outbound TLS trusts (resolver/streaming/pooling.py): the environment's, read as Python's HTTP stack
reads it, every named bundle and only those; hostnames still checked; nothing turns verification off.

Real TLS on 127.0.0.1: an upstream whose certificate a CA made here signs, reached through the app's own
session (`new_session`, as the Twilio calls and the upstreams use it) and the redirect hops' session.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import certifi
import pytest
import requests

from resolver.streaming import pooling
from resolver.streaming.guarded_http import new_guarded_session
from resolver.streaming.upstream import new_session
from tests.support.hostile import Upstream, make_tls

PUBLIC = "public.example.test"  # the hops' session reaches it through its test seams (never a real lookup)


def second_leaf(tmp: Path, name: str) -> tuple[str, str]:
    """A server certificate for DNS `name`, signed by the CA make_tls left in `tmp`: (cert.pem, key.pem)."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)  # noqa: S603,S607

    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "dns.key",
        "-out", "dns.csr", "-subj", f"/CN={name}")
    (tmp / "dns.cnf").write_text(f"subjectAltName=DNS:{name}\nbasicConstraints=CA:FALSE\n"
                                 "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "dns.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "dns.pem", "-days", "2", "-extfile", "dns.cnf")
    return str(tmp / "dns.pem"), str(tmp / "dns.key")


@pytest.fixture(scope="module")
def signed(tmp_path_factory):
    """(the CA's file, a directory of it as OpenSSL's hashed links, an upstream it signs for as 127.0.0.1,
    an upstream whose certificate it signs for PUBLIC only)."""
    tmp = tmp_path_factory.mktemp("trust")
    ca, cert, key = make_tls(str(tmp), names=("127.0.0.1",))
    hashed = tmp / "hashed"
    hashed.mkdir()
    shutil.copy(ca, hashed / "ca.pem")
    subprocess.run(["openssl", "rehash", str(hashed)], check=True, capture_output=True)  # noqa: S603,S607
    servers = []
    for leaf, leaf_key in ((cert, key), second_leaf(tmp, PUBLIC)):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(leaf, leaf_key)
        servers.append(Upstream(tls=ctx))
    yield ca, str(hashed), servers[0], servers[1]
    for server in servers:
        server.close()


def hops_to(server: Upstream):
    """The redirect hops' session, PUBLIC resolving to a public address and dialled at `server` instead."""
    return lambda: new_guarded_session(resolve=lambda *a: [(2, 1, 6, "", ("93.184.216.34", server.port))],
                                       dial=lambda addr: ("127.0.0.1", server.port))


@pytest.fixture
def env(monkeypatch):
    """Name exactly the variables given (every other CA variable of the machine's environment unset)."""
    for name in pooling.CA_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def name(**values: str) -> None:
        for var, value in values.items():
            monkeypatch.setenv(var, value)

    return name


def fetch(url: str, session_factory=new_session) -> int:
    with session_factory() as session:
        return session.get(url + "/ok/x.mp3", timeout=5).status_code


def public_url(server: Upstream) -> str:
    return f"https://{PUBLIC}:{server.port}"


@pytest.mark.parametrize("variable", ["REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_a_ca_the_environment_names_is_trusted_and_without_it_nothing_is(signed, env, variable):
    ca, hashed, upstream, public = signed
    with pytest.raises(requests.exceptions.SSLError):  # requests' own bundle does not know the test CA
        fetch(upstream.url)
    with pytest.raises(requests.exceptions.SSLError):
        fetch(public_url(public), hops_to(public))
    env(**{variable: hashed if variable == "SSL_CERT_DIR" else ca})
    assert fetch(upstream.url) == 200
    assert fetch(public_url(public), hops_to(public)) == 200  # the redirect hops' session trusts the same
    assert pooling.env_trust().cert_store_stats()["x509_ca"] == 1  # that CA only: requests' bundle is not added


@pytest.mark.parametrize("system_in", ["REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"])
def test_several_variables_name_one_set_of_cas_whichever_names_which(signed, env, system_in):
    """A machine names its system bundle in some variables; an operator names a private CA in another."""
    ca, _, upstream, _ = signed
    other = "SSL_CERT_FILE" if system_in == "REQUESTS_CA_BUNDLE" else "REQUESTS_CA_BUNDLE"
    env(**{system_in: certifi.where(), other: ca})
    assert fetch(upstream.url) == 200
    assert pooling.env_trust().cert_store_stats()["x509_ca"] > 1  # the system's CAs too, not the last one alone


def test_the_hostname_is_still_checked_against_a_trusted_ca(signed, env):
    ca, _, _, public = signed
    env(REQUESTS_CA_BUNDLE=ca)
    assert fetch(public_url(public), hops_to(public)) == 200
    with pytest.raises(requests.exceptions.SSLError, match="(?i)hostname|match|IP address"):
        fetch(public.url)  # the same certificate, reached as 127.0.0.1, which it does not name


def test_a_name_that_cannot_be_read_is_skipped_loudly_and_trusts_nothing_in_its_place(signed, env, tmp_path,
                                                                                     caplog):
    ca, _, upstream, _ = signed
    missing = str(tmp_path / "no-such-bundle.pem")
    env(REQUESTS_CA_BUNDLE=missing)
    with caplog.at_level(logging.WARNING, logger="resolver.upstream"):
        with pytest.raises(requests.exceptions.SSLError):  # not requests' bundle either: fails closed
            fetch(upstream.url)
    assert "REQUESTS_CA_BUNDLE names no readable CA bundle" in caplog.text
    assert missing not in caplog.text
    env(SSL_CERT_FILE=ca)  # the readable one still counts
    assert fetch(upstream.url) == 200


def test_a_session_given_its_own_ca_file_uses_that_and_leaves_the_shared_context_alone(signed, env, tmp_path):
    """A path set on one session (the tests' in-process streamers do this) is that session's trust; it is
    never loaded into the context every other session shares."""
    ca, _, upstream, _ = signed
    env(REQUESTS_CA_BUNDLE=certifi.where())
    shared = pooling.env_trust()
    before = shared.cert_store_stats()["x509_ca"]
    with new_session() as session:
        session.verify = ca
        assert session.get(upstream.url + "/ok/x.mp3", timeout=5).status_code == 200
    assert shared.cert_store_stats()["x509_ca"] == before
    with pytest.raises(requests.exceptions.SSLError):
        fetch(upstream.url)


def test_the_shared_context_is_urllib3s_own_hardening(signed, env):
    env(REQUESTS_CA_BUNDLE=signed[0])
    context = pooling.env_trust()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert not context.hostname_checks_common_name


def test_ssl_cert_dir_may_list_several_directories_as_openssl_reads_it(signed, env, tmp_path):
    _, hashed, upstream, _ = signed
    env(SSL_CERT_DIR=f"{tmp_path}:{hashed}")
    assert fetch(upstream.url) == 200


class Recorder:
    """A connection stand-in that records every value given to its trust attributes."""

    def __init__(self) -> None:
        self.__dict__["given"] = []

    def __setattr__(self, name: str, value: object) -> None:
        self.given.append((name, value))
        self.__dict__[name] = value


def test_a_pool_is_never_given_requests_bundle_not_even_for_a_moment(signed, env):
    """Another thread opening a connection on the pool in that moment would load certifi's bundle into the
    context every session shares (found by review: requests' cert_verify sets it first)."""
    env(REQUESTS_CA_BUNDLE=signed[0])
    with new_session() as session:
        adapter, conn = session.get_adapter("https://x"), Recorder()
        adapter.cert_verify(conn, "https://x/y", True, None)
        assert ("cert_reqs", "CERT_REQUIRED") in conn.given
        assert all(value is None for name, value in conn.given if name in ("ca_certs", "ca_cert_dir"))
        with pytest.raises(ValueError, match="client certificates"):
            adapter.cert_verify(Recorder(), "https://x/y", True, ("c.pem", "k.pem"))


def test_a_connection_given_its_own_ca_file_beside_the_shared_context_is_refused(signed, env):
    """The backstop: whatever sets a CA file or a client certificate on a connection that uses the shared context
    gets a TLS error before urllib3 would load it into that context, which stays as it was."""
    ca, _, upstream, _ = signed
    env(REQUESTS_CA_BUNDLE=ca)
    shared = pooling.env_trust()
    for extra in ({"ca_certs": certifi.where()}, {"cert_file": ca}, {"assert_hostname": "elsewhere"}):
        conn = pooling.HTTPSConnection("127.0.0.1", upstream.port, ssl_context=shared, **extra)
        with pytest.raises(ssl.SSLError, match="refused"):
            conn.connect()
        conn.close()
    assert shared.cert_store_stats()["x509_ca"] == 1
    conn = pooling.HTTPSConnection("127.0.0.1", upstream.port, ssl_context=shared)
    conn.connect()  # the shared context alone verifies it
    conn.close()


def test_only_the_named_cas_are_ever_loaded_never_a_default_store(signed, env, monkeypatch):
    """What the context trusts is loaded from the named paths and nowhere else: no system store (OpenSSL's
    default paths or the OS's), building it or on a real connection through either session. A directory's
    CAs are read lazily and `cert_store_stats` does not count them, so the loading calls are what is checked."""
    ca, hashed, upstream, public = signed
    loads: list[object] = []
    real_load = ssl.SSLContext.load_verify_locations

    def load_verify_locations(self, cafile=None, capath=None, cadata=None):
        loads.append((cafile, capath, cadata))
        return real_load(self, cafile, capath, cadata)

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", load_verify_locations)
    for default in ("load_default_certs", "set_default_verify_paths"):
        monkeypatch.setattr(ssl.SSLContext, default, lambda self, *a, _name=default: loads.append(_name))
    pooling._trust.cache_clear()  # built afresh here, not taken from an earlier test's cache
    env(REQUESTS_CA_BUNDLE=ca, SSL_CERT_DIR=hashed)
    assert fetch(upstream.url) == 200
    assert fetch(public_url(public), hops_to(public)) == 200
    assert loads == [(ca, None, None), (None, hashed, None)]
