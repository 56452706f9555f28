"""Which addresses the resolver may connect to: the SSRF check, on the address actually dialled.

Hostnames are not checked here: `getaddrinfo` turns `0x7f.1`, `127.1` or a DNS name into any address, so the
caller resolves first and asks about each resulting address. IPv6 forms that carry an IPv4 address inside
(mapped, compatible, translated, NAT64, 6to4, Teredo) are refused as a whole by `policy.BLOCKED_NETWORKS`,
and the embedded IPv4 is unwrapped and checked as well, so that allowing one of those prefixes later can
never reopen loopback or the metadata address through it.
"""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Address, IPv6Address

from .. import policy

BLOCKED = tuple(ipaddress.ip_network(n) for n in policy.BLOCKED_NETWORKS)
_V4_BLOCKED = tuple(n for n in BLOCKED if n.version == 4)
_V6_BLOCKED = tuple(n for n in BLOCKED if n.version == 6)
_LOW32 = 0xFFFFFFFF
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")


def parse(ip: str | IPv4Address | IPv6Address) -> IPv4Address | IPv6Address | None:
    """The address, without brackets or an IPv6 zone (`%eth0`); None if it is not an IP address."""
    if isinstance(ip, IPv4Address | IPv6Address):
        return ip if not getattr(ip, "scope_id", None) else ipaddress.ip_address(int(ip))
    if not isinstance(ip, str):
        return None
    text = ip.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.split("%", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def embedded_ipv4(addr: IPv6Address) -> list[IPv4Address]:
    """Every IPv4 address an IPv6 address may deliver to (RFC 4291, 6052, 3056, 4380, 2765)."""
    found: list[IPv4Address] = []
    if addr.ipv4_mapped is not None:
        found.append(addr.ipv4_mapped)
    if addr in _COMPATIBLE or addr in _NAT64 or addr in _TRANSLATED:
        found.append(IPv4Address(int(addr) & _LOW32))
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.extend(addr.teredo)  # (server, client), the client already de-obfuscated
    return found


def address_allowed(ip: str | IPv4Address | IPv6Address) -> bool:
    """True only for a public unicast address; anything unparsable, blocked or wrapping a blocked IPv4 is False."""
    addr = parse(ip)
    if addr is None:
        return False
    if addr.version == 4:
        return not any(addr in net for net in _V4_BLOCKED)
    if any(addr in net for net in _V6_BLOCKED):
        return False
    return all(address_allowed(v4) for v4 in embedded_ipv4(addr))
