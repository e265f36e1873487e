"""E-mail notifications over SMTP (stdlib ``smtplib`` in a thread pool of its own)."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid

import msgspec

from adapters.notify.result import SendResult, short
from domain.notifications import (
    DELIVERY_ID_HEADER,
    EVENT_ID_HEADER,
    NotificationBody,
    judge_smtp,
)


class SmtpConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to hand e-mail over."""

    host: str
    port: int = 25
    user: str | None = None
    password: str | None = None
    sender: str = "hes@localhost"
    starttls: bool = False
    timeout: float = 10.0


def render(body: NotificationBody, sender: str, to: str) -> EmailMessage:
    """The e-mail of a notification: summary as subject, facts and the event as text."""
    message = EmailMessage()
    message["Subject"] = "[HES] " + " ".join(body.summary.split())[:180]
    message["From"] = sender
    message["To"] = to
    message["Date"] = format_datetime(_now_utc())
    # Same delivery, same Message-ID: a re-sent notification can be recognised as a duplicate.
    message["Message-ID"] = make_msgid(idstring=str(body.delivery_id), domain="hes.invalid")
    message[EVENT_ID_HEADER] = str(body.event_id)
    message[DELIVERY_ID_HEADER] = str(body.delivery_id)
    lines = [body.summary, "", f"Kind:        {body.kind}"]
    if body.alert is not None:
        a = body.alert
        lines += [
            f"Alert:       {a.id}",
            f"Type:        {a.alert_type}",
            f"Severity:    {a.severity}",
            f"Region:      {a.region}",
        ]
        if a.meter is not None:
            lines.append(f"Meter:       {a.meter}")
    if body.tariff is not None:
        t = body.tariff
        lines += [f"Tariff:      {t.id}", f"Region:      {t.region}"]
        if t.price is not None:
            lines.append(f"Price:       {t.price} {t.currency or ''}/kWh".rstrip())
    lines += [f"Event id:    {body.event_id}", "", "The event (CloudEvents JSON):", ""]
    lines.append(msgspec.json.format(bytes(body.event), indent=2).decode())
    message.set_content("\n".join(lines) + "\n")
    return message


class EmailSender:
    """Sends one message per call; each call is one SMTP session, bounded by the timeout."""

    def __init__(self, config: SmtpConfig, max_sessions: int = 8) -> None:
        self.config = config
        self._pool = ThreadPoolExecutor(max_sessions, thread_name_prefix="smtp")

    def close(self) -> None:
        """Stop the SMTP threads (a session still running finishes on its own)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def send(self, to: str, message: EmailMessage) -> SendResult:
        """Hand ``message`` to the SMTP server for ``to``; the result carries its reply."""
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.config.timeout * 2):
                code, detail = await loop.run_in_executor(self._pool, self._session, to, message)
        except TimeoutError:
            code, detail = None, f"SMTP session timed out after {self.config.timeout * 2:g}s"
        return SendResult(
            verdict=judge_smtp(code),
            status_code=code,
            detail=short(detail),
            duration_ms=(time.perf_counter() - started) * 1000.0,
        )

    def _session(self, to: str, message: EmailMessage) -> tuple[int | None, str]:
        c = self.config
        try:
            with smtplib.SMTP(c.host, c.port, timeout=c.timeout) as smtp:
                smtp.ehlo()
                if c.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                if c.user:
                    smtp.login(c.user, c.password or "")
                code, reply = smtp.mail(c.sender)
                if code != 250:
                    return code, f"MAIL FROM refused: {code} {_text(reply)}"
                code, reply = smtp.rcpt(to)
                if code not in (250, 251):
                    return code, f"RCPT TO refused: {code} {_text(reply)}"
                # smtplib sends bytes as they are: the lines must already end in CRLF.
                code, reply = smtp.data(message.as_bytes(policy=SMTP_POLICY))
                return code, f"{code} {_text(reply)}"
        except smtplib.SMTPResponseException as exc:
            return exc.smtp_code, f"{exc.smtp_code} {_text(exc.smtp_error)}"
        except (smtplib.SMTPException, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply


def _now_utc() -> datetime:
    return datetime.now(UTC)
