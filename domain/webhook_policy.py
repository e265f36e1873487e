"""Where webhooks may go: https to public addresses, unless the operator allows more.

A webhook makes the head-end open a connection to an address a user chose, from inside the
utility's network. Plain http is allowed only to hosts in ``HES_WEBHOOK_HTTP_HOSTS``;
loopback, private, link-local (cloud metadata at 169.254.169.254), multicast and other
non-global destinations only inside ``HES_WEBHOOK_ALLOWED_NETWORKS``. The URL is checked when a
subscription is saved (literal addresses and localhost names; no DNS lookups in the domain) and
every resolved address again when a notification is sent, which then connects to the address
it checked (adapters/notify/webhook.py), so a name that later resolves elsewhere gains nothing.
"""

from __future__ import annotations

import ipaddress
import re
import socket

import msgspec

from domain.networks import Address, Network, parse_networks, within

_LOCALHOST = ipaddress.ip_address("127.0.0.1")
_NUMERIC_HOST = re.compile(r"(?i)^(?:0x[0-9a-f]+|[0-9]+)(?:\.(?:0x[0-9a-f]+|[0-9]+)){0,3}$")
"""Forms that resolvers read as an IPv4 address: 2852039166, 0xa9fea9fe, 0251.0376.0251.0376."""


class WebhookPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The operator's exceptions to "https to public addresses only"."""

    http_hosts: frozenset[str] = frozenset()
    """Host names or addresses (lower case) that may be reached over plain http."""
    allowed_networks: tuple[Network, ...] = ()
    """Non-public networks webhooks may reach anyway (e.g. an internal receiver)."""

    @classmethod
    def parse(cls, http_hosts: str, allowed_networks: str) -> WebhookPolicy:
        """The policy of the two settings; raises ``ValueError`` naming a bad entry."""
        hosts = frozenset(h.strip().lower().strip("[]") for h in http_hosts.split(",") if h.strip())
        return cls(http_hosts=hosts, allowed_networks=parse_networks(allowed_networks))

    def allows_http(self, host: str) -> bool:
        """True when plain http to ``host`` (as written in the URL) is allowed."""
        return host.lower().strip("[]") in self.http_hosts

    def refusal(self, address: Address) -> str | None:
        """Why a webhook may not connect to ``address`` (None: it may)."""
        kind = address_kind(address)
        if kind is None or within(address, self.allowed_networks):
            return None
        return f"{address} is a {kind} address (allow it with HES_WEBHOOK_ALLOWED_NETWORKS)"

    def host_refusal(self, host: str) -> str | None:
        """Why a URL's host is refused without resolving it: literal addresses, localhost."""
        address = literal_address(host)
        return None if address is None else self.refusal(address)


def address_kind(address: Address) -> str | None:
    """The kind of a non-public address (loopback, private…), None for a global unicast one."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if mapped is not None:
        return address_kind(mapped)
    if address.is_loopback:
        return "loopback"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if address.is_unspecified:
        return "unspecified"
    if address.is_private:
        return "private"
    if address.is_reserved or not address.is_global:
        return "reserved"
    return None


def literal_address(host: str) -> Address | None:
    """The address a URL host names without DNS: an IP literal, a numeric form, localhost."""
    host = host.lower().strip("[]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return _LOCALHOST
    try:
        return ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        pass
    if _NUMERIC_HOST.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None
