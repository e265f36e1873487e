"""IP networks named in settings (trusted proxies, allowed webhook destinations): pure parsing."""

from __future__ import annotations

import ipaddress

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> tuple[Network, ...]:
    """The networks of a comma-separated CIDR list; raises ``ValueError`` naming a bad entry."""
    networks: list[Network] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def within(address: Address, networks: tuple[Network, ...]) -> bool:
    """True when ``address`` (or the IPv4 address an IPv6 one maps) is in one of ``networks``."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(address in n or (mapped is not None and mapped in n) for n in networks)
