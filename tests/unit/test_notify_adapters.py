"""Webhook secrets at rest (AES-GCM box) and the rendered notification e-mail."""

from __future__ import annotations

import base64
import os
from email import message_from_bytes
from email.policy import default
from pathlib import Path
from uuid import uuid4

import msgspec
import pytest

from adapters.notify.email import render
from adapters.notify.secret_box import (
    SecretBox,
    SecretBoxError,
    load_or_create_key,
    new_webhook_secret,
    parse_key,
)
from domain.alert import AlertType, Severity
from domain.notifications import AlertFacts, EventKind, NotificationBody


def test_sealed_secrets_open_only_for_their_subscription_and_key() -> None:
    box = SecretBox(os.urandom(32))
    sub = uuid4()
    secret = new_webhook_secret()
    sealed = box.seal(sub, secret)
    assert secret.encode() not in sealed
    assert box.open(sub, sealed) == secret
    assert box.seal(sub, secret) != sealed  # a fresh nonce each time
    with pytest.raises(SecretBoxError):
        box.open(uuid4(), sealed)  # copied onto another row
    with pytest.raises(SecretBoxError):
        SecretBox(os.urandom(32)).open(sub, sealed)  # key changed
    with pytest.raises(SecretBoxError):
        box.open(sub, b"\x02" + sealed[1:])


def test_secrets_are_long_and_unique() -> None:
    secrets = {new_webhook_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(s.startswith("whsec_") and len(s) >= 40 for s in secrets)


def test_key_parsing_and_the_generated_key_file(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert parse_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    with pytest.raises(SecretBoxError, match="32 bytes"):
        parse_key(base64.urlsafe_b64encode(b"short").decode())
    with pytest.raises(SecretBoxError, match="base64"):
        parse_key("not base64 at all!")
    first = load_or_create_key(tmp_path / "data")
    assert load_or_create_key(tmp_path / "data") == first
    assert (tmp_path / "data" / "notification-key").stat().st_mode & 0o077 == 0


def test_the_email_names_the_event_and_carries_its_ids() -> None:
    event = b'{"id":"e1","type":"hes.alert.Raised.v1","data":{"x":1}}'
    body = NotificationBody(
        delivery_id=uuid4(),
        subscription_id=uuid4(),
        event_id=uuid4(),
        kind=EventKind.ALERT_RAISED,
        summary="OVERLOAD alert in North raised (high)\r\nBcc: someone@example.com",
        alert=AlertFacts(
            id=uuid4(), alert_type=AlertType.OVERLOAD, severity=Severity.HIGH, region="North"
        ),
        event=msgspec.Raw(event),
    )
    message = render(body, "hes@grid.example", "ops@grid.example")
    parsed = message_from_bytes(message.as_bytes(), policy=default)
    assert parsed["Subject"] == (
        "[HES] OVERLOAD alert in North raised (high) Bcc: someone@example.com"
    )
    assert parsed["Bcc"] is None  # a summary cannot add headers
    assert parsed["X-HES-Event-Id"] == str(body.event_id)
    assert str(body.delivery_id) in parsed["Message-ID"]
    text = parsed.get_content()
    assert "Severity:    high" in text and '"type": "hes.alert.Raised.v1"' in text
