"""The workers' resolver (resolver/ops/gevent_resolver.py): numeric addresses answered in the calling greenlet,
names and service names through gevent's thread pool as before; installed by the Procfile's config unless the
operator chose a resolver with GEVENT_RESOLVER."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import gevent
import pytest

from resolver.ops.gevent_resolver import Resolver


@pytest.fixture
def resolver_and_pool_calls():
    resolver = Resolver(gevent.get_hub())
    real_pool, calls = resolver.pool, []

    class CountingPool:
        def apply(self, func, args=None, kwds=None):
            calls.append(args)
            return real_pool.apply(func, args, kwds)

    resolver.pool = CountingPool()
    return resolver, calls


def test_numeric_addresses_skip_the_thread_pool(resolver_and_pool_calls):
    resolver, calls = resolver_and_pool_calls
    assert resolver.getaddrinfo("127.0.0.1", 443, 0, socket.SOCK_STREAM) == [
        (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", 443))]
    assert resolver.getaddrinfo("::1", 80, 0, socket.SOCK_STREAM)[0][4][:2] == ("::1", 80)
    assert calls == []


@pytest.mark.parametrize(("host", "port"), [("localhost", 80), ("127.0.0.1", "http"), ("no-such-host.invalid", 80)])
def test_names_and_service_names_go_to_the_thread_pool_as_before(resolver_and_pool_calls, host, port):
    resolver, calls = resolver_and_pool_calls
    try:
        got = resolver.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
    except socket.gaierror:
        got = "gaierror"
    try:
        expected = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)
        expected = [(int(f), int(t), p, c, a) for f, t, p, c, a in expected]
    except socket.gaierror:
        expected = "gaierror"
    assert got == expected
    assert len(calls) == 1 and calls[0][:2] == (host, port)


@pytest.mark.parametrize(("env", "expected"), [({}, "resolver.ops.gevent_resolver.Resolver"),
                                               ({"GEVENT_RESOLVER": "block"}, "gevent.resolver.blocking.Resolver")])
def test_the_procfile_config_installs_it_unless_the_operator_chose_one(env, expected):
    code = ("import resolver.ops.gunicorn_config, gevent; r = gevent.get_hub().resolver; "
            "print(type(r).__module__ + '.' + type(r).__name__)")
    clean = {k: v for k, v in os.environ.items() if k != "GEVENT_RESOLVER"}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == expected
