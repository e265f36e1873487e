"""Delivery-time checks of webhook destinations: resolved addresses, and the address dialled."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from adapters.notify.checked_network import Resolver
from adapters.notify.webhook import WebhookSender
from domain.networks import Address
from domain.notifications import Verdict
from domain.webhook_policy import WebhookPolicy
from tests.integration.notify_helpers import WebhookReceiver

pytestmark = pytest.mark.integration


@pytest.fixture
async def receiver() -> AsyncIterator[WebhookReceiver]:
    """An HTTP receiver on 127.0.0.1."""
    server = WebhookReceiver()
    await server.start()
    yield server
    await server.stop()


def resolving(*addresses: str) -> Resolver:
    """A resolver that answers ``addresses`` for every name (a DNS the test controls)."""

    async def resolve(host: str, port: int) -> list[Address]:
        return [ipaddress.ip_address(a) for a in addresses]

    return resolve


async def post(sender: WebhookSender, url: str) -> tuple[Verdict, str]:
    try:
        result = await sender.send(url, "secret", b"{}", event_id=uuid4(), delivery_id=uuid4())
    finally:
        await sender.close()
    return result.verdict, result.detail


async def test_a_name_resolving_to_a_refused_address_is_not_dialled(
    receiver: WebhookReceiver,
) -> None:
    # Saved as a harmless name; at delivery it resolves to loopback (DNS rebinding).
    port = receiver.base.rpartition(":")[2]
    policy = WebhookPolicy.parse("hooks.test", "")
    sender = WebhookSender(2.0, policy=policy, resolver=resolving("127.0.0.1"))
    verdict, detail = await post(sender, f"http://hooks.test:{port}/ok/rebound")
    assert verdict is Verdict.RETRY
    assert "refused destination hooks.test: 127.0.0.1 is a loopback address" in detail
    assert receiver.requests == []


async def test_the_checked_address_is_the_one_dialled(receiver: WebhookReceiver) -> None:
    # 10.0.0.7 is refused and skipped (the socket guard would fail the test had it been
    # dialled); the allowed 127.0.0.1 gets the call. "hooks.test" has no DNS record at all:
    # the call reaching the receiver proves nothing resolved the name a second time.
    port = receiver.base.rpartition(":")[2]
    policy = WebhookPolicy.parse("hooks.test", "127.0.0.0/8")
    sender = WebhookSender(
        2.0,
        policy=policy,
        resolver=resolving("10.0.0.7", "127.0.0.1"),
    )
    verdict, detail = await post(sender, f"http://hooks.test:{port}/ok/pinned")
    assert verdict is Verdict.SUCCESS and detail.startswith("HTTP 200"), detail
    [request] = receiver.requests
    assert request.path == "/ok/pinned"
    assert request.headers["host"] == f"hooks.test:{port}"


async def test_a_url_todays_policy_refuses_fails_for_good(receiver: WebhookReceiver) -> None:
    # Saved while loopback was allowed; the allow-list has since been emptied.
    sender = WebhookSender(2.0, policy=WebhookPolicy.parse("127.0.0.1", ""))
    verdict, detail = await post(sender, receiver.base + "/ok/old")
    assert verdict is Verdict.PERMANENT
    assert "loopback" in detail
    assert receiver.requests == []
