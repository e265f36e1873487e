"""Webhook connections only to addresses the policy allows, checked when connecting.

The httpcore network backend below resolves the URL's host itself, checks every address with
the ``WebhookPolicy`` and connects to one it checked, never resolving again: a name that
resolves to a public address when the subscription is saved and to 169.254.169.254 when the
notification is sent (DNS rebinding) is refused at the second lookup. TLS still verifies the
certificate against the URL's host name (httpcore passes it as SNI/server_hostname).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from domain.networks import Address
from domain.webhook_policy import WebhookPolicy

Resolver = Callable[[str, int], Awaitable[list[Address]]]


async def resolve(host: str, port: int) -> list[Address]:
    """Every address ``host`` resolves to (TCP), in the resolver's order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    found: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if address not in found:
            found.append(address)
    return found


class RefusedDestination(httpcore.ConnectError):
    """Every address of the webhook's host is one the policy refuses."""


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the first reachable address of a host that the policy allows."""

    def __init__(self, policy: WebhookPolicy, resolver: Resolver = resolve) -> None:
        self._policy = policy
        self._resolve = resolver
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host``, check its addresses, connect to an allowed one."""
        try:
            addresses = await self._resolve(host.strip("[]"), port)
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        refusals = [(a, self._policy.refusal(a)) for a in addresses]
        allowed = [a for a, why in refusals if why is None]
        if not allowed:
            why = next((w for _, w in refusals if w), f"{host} has no address")
            raise RefusedDestination(f"refused destination {host}: {why}")
        error: httpcore.ConnectError | None = None
        for address in allowed:
            try:
                return await self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = httpcore.ConnectError(str(exc) or f"no TCP connection to {address}")
        assert error is not None
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Webhooks never go to unix sockets."""
        raise httpcore.ConnectError("webhooks do not connect to unix sockets")

    async def sleep(self, seconds: float) -> None:
        """Sleep (httpcore's retry backoff)."""
        await self._inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, connecting through ``CheckedBackend``."""

    def __init__(
        self, policy: WebhookPolicy, limits: httpx.Limits, resolver: Resolver = resolve
    ) -> None:
        super().__init__(limits=limits, trust_env=False)
        # httpx builds its pool without a way to pass a network backend; rebuild it with one
        # (same TLS context and limits). tests/integration/test_webhook_destinations.py proves it.
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._pool._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=CheckedBackend(policy, resolver),
        )
