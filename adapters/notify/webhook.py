"""Signed webhook calls over HTTP(S) with a hard per-call time limit."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

import httpx

from adapters.notify.result import SendResult, short
from domain.notifications import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    judge_http,
    signature_header,
)

USER_AGENT = "HES-Notifier/1"
_RESPONSE_SAMPLE = 200


class WebhookSender:
    """POSTs notification bodies with ``X-HES-Signature``; never follows redirects."""

    def __init__(self, timeout: float, max_connections: int = 64) -> None:
        self._timeout = timeout
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
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
        stamp = int(time.time()) if timestamp is None else timestamp
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(secret, stamp, body),
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
