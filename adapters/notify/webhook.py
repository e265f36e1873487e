"""Signed webhook calls over HTTP(S) with a hard per-call time limit."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import httpx

from adapters.notify.checked_network import CheckedTransport, Resolver, resolve
from adapters.notify.result import SendResult, short
from domain.errors import Collector
from domain.notifications import (
    DEFAULT_POLICY,
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    Verdict,
    check_url,
    judge_http,
    webhook_headers,
)
from domain.webhook_policy import WebhookPolicy

USER_AGENT = "HES-Notifier/1"
_RESPONSE_SAMPLE = 200


class WebhookSender:
    """POSTs notification bodies signed per Standard Webhooks; never follows redirects.

    Only to destinations the policy allows, checked again on every call: the URL's rules, then
    each resolved address, connecting to the address checked (adapters/notify/checked_network).
    """

    def __init__(
        self,
        timeout: float,
        max_connections: int = 64,
        *,
        policy: WebhookPolicy = DEFAULT_POLICY,
        resolver: Resolver = resolve,
    ) -> None:
        self._timeout = timeout
        self._policy = policy
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            transport=CheckedTransport(policy, limits, resolver),
            headers={"User-Agent": USER_AGENT},
        )

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()

    async def send(
        self,
        url: str,
        secret: str,
        body: bytes,
        *,
        event_id: UUID,
        delivery_id: UUID,
        timestamp: int | None = None,
    ) -> SendResult:
        """POST ``body`` once; the result says how the endpoint answered (or that it did not)."""
        broken = Collector()
        check_url(broken, "url", url, policy=self._policy)
        if broken.errors:  # saved under an earlier policy, refused by today's
            reasons = "; ".join(e.message for e in broken.errors)
            return SendResult(
                verdict=Verdict.PERMANENT, status_code=None, detail=short(reasons), duration_ms=0.0
            )
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            **webhook_headers(secret, str(delivery_id), stamp, body),
            EVENT_ID_HEADER: str(event_id),
            DELIVERY_ID_HEADER: str(delivery_id),
        }
        started = time.perf_counter()
        status: int | None = None
        try:
            # httpx's timeout bounds each phase; this bounds the whole call, however slow.
            async with asyncio.timeout(self._timeout):
                status, sample = await self._post(url, body, headers)
            detail = f"HTTP {status}" + (f": {sample}" if sample else "")
        except (TimeoutError, httpx.TimeoutException):
            detail = f"timed out after {self._timeout:g}s"
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return SendResult(
            verdict=judge_http(status),
            status_code=status,
            detail=short(detail),
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        async with self._client.stream("POST", url, content=body, headers=headers) as response:
            sample = b""
            async for chunk in response.aiter_bytes():
                sample += chunk
                if len(sample) >= _RESPONSE_SAMPLE:
                    break
            text = sample[:_RESPONSE_SAMPLE].decode("utf-8", "replace")
            return response.status_code, text
