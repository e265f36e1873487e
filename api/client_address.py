"""Who is on the other end of a request: the TCP peer, or what a trusted proxy says it is.

``X-Forwarded-For`` and ``Forwarded`` (RFC 7239) are honoured only when the TCP peer is in
``HES_TRUSTED_PROXIES``; then the address list is read from the right and the first address
that is not itself a trusted proxy is the client. Anyone else can write those headers, so
from an untrusted peer they are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence

from litestar.datastructures import Headers
from litestar.types import Scope

from domain.networks import Address, Network, within

_FORWARDED_FOR = re.compile(r'(?i)(?:^|[;,\s])for\s*=\s*("[^"]*"|[^;,\s]+)')


def _ip(text: str) -> Address | None:
    value = text.strip().strip('"')
    if value.startswith("["):  # Forwarded: "[2001:db8::1]:4711"
        value = value[1 : value.find("]")] if "]" in value else value[1:]
    elif value.count(":") == 1:  # IPv4 with a port
        value = value.partition(":")[0]
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        return None


def _trusted(address: str, networks: Sequence[Network]) -> bool:
    ip = _ip(address)
    return ip is not None and within(ip, tuple(networks))


def _forwarded_chain(headers: Headers) -> list[str]:
    """Client addresses the proxies recorded, leftmost (first hop) to rightmost (last)."""
    forwarded = headers.getall("forwarded", [])
    if forwarded:
        return [m.group(1) for value in forwarded for m in _FORWARDED_FOR.finditer(value)]
    return [
        part.strip()
        for value in headers.getall("x-forwarded-for", [])
        for part in value.split(",")
        if part.strip()
    ]


def client_address(scope: Scope, trusted: Sequence[Network]) -> str:
    """The client's address: the TCP peer, or the forwarded one when the peer is trusted."""
    client = scope.get("client")
    peer = client[0] if client else "unknown"
    if not trusted or not _trusted(peer, trusted):
        return peer
    for hop in reversed(_forwarded_chain(Headers.from_scope(scope))):
        ip = _ip(hop)
        if ip is None:
            return peer  # an unparseable hop ("unknown", an obfuscated name): trust no further
        if not within(ip, tuple(trusted)):
            return str(ip)
    return peer
