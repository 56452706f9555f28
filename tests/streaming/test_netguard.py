"""The SSRF address check: every non-public form refused, public unicast allowed, embedded IPv4 unwrapped."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolver.streaming import netguard
from resolver.streaming.netguard import address_allowed

REFUSED = [
    "127.0.0.1", "127.255.255.254", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "100.127.255.255", "0.0.0.0", "0.1.2.3", "198.18.0.1", "198.19.255.255",
    "192.0.2.1", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.255", "192.0.0.170",
    "::1", "[::1]", "::", "::ffff:127.0.0.1", "[::ffff:127.0.0.1]", "::ffff:7f00:1", "::ffff:169.254.169.254",
    "::127.0.0.1", "::ffff:0:127.0.0.1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",
    "2002:7f00:1::", "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:80ff:fffe", "2001:db8::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0", "fec0::1", "ff02::1", "ff0e::1", "100::1", "3fff::1",
    # not addresses at all: fail closed
    "", "localhost", "example.com", "127.1", "2130706433", "0x7f.1", "1.2.3.4.5", "::ffff:1.2.3", None, 3,
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "54.172.60.1", "2606:4700:4700::1111", "2a00:1450:4001::1",
           "[2600:1f18::1]"]


@pytest.mark.parametrize("ip", REFUSED)
def test_non_public_addresses_are_refused(ip):
    assert address_allowed(ip) is False


@pytest.mark.parametrize("ip", ALLOWED)
def test_public_unicast_is_allowed(ip):
    assert address_allowed(ip) is True


def test_accepts_parsed_addresses_too():
    assert address_allowed(ipaddress.ip_address("8.8.8.8"))
    assert not address_allowed(ipaddress.ip_address("::ffff:10.0.0.1"))


def test_embedded_ipv4_is_checked_even_if_its_prefix_were_allowed(monkeypatch):
    """Defence in depth: unblocking NAT64 or 6to4 later must not reopen loopback through them."""
    keep = tuple(n for n in netguard._V6_BLOCKED if str(n) not in ("64:ff9b::/96", "2002::/16", "2001::/32",
                                                                      "2001::/23", "::ffff:0:0/96"))
    monkeypatch.setattr(netguard, "_V6_BLOCKED", keep)
    assert address_allowed("64:ff9b::808:808") and address_allowed("2002:808:808::1")
    assert address_allowed("::ffff:8.8.8.8")
    for ip in ("64:ff9b::7f00:1", "2002:a9fe:a9fe::", "::ffff:127.0.0.1", "::ffff:10.0.0.1",
               "2001:0:4136:e378:8000:63bf:80ff:fffe"):  # Teredo client 127.0.0.1 (obfuscated)
        assert not address_allowed(ip), ip


@given(st.ip_addresses())
def test_whatever_python_calls_non_global_is_refused(addr):
    if not addr.is_global or addr.is_multicast:
        assert not address_allowed(str(addr))
