"""Notification subscriptions: who is told about which alert and tariff events, and how.

Pure rules only: validation of a subscription's channel and preferences, which events a
subscription receives (preferences plus role-based visibility), the webhook signature, the
retry schedule and how an attempt's reply is judged. Storage, sending and the clock live
elsewhere; every function here takes ``now`` or the facts it needs as arguments.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import msgspec

from domain.alert import AlertType, Severity
from domain.errors import Collector
from domain.values import check_region
from domain.webhook_policy import WebhookPolicy

MAX_REGIONS = 50
MAX_URL_LENGTH = 2048
MAX_SUBSCRIPTIONS_PER_OWNER = 20
WEBHOOK_ID_HEADER = "webhook-id"
"""Standard Webhooks: the message id (our delivery id: the same on every retry)."""
WEBHOOK_TIMESTAMP_HEADER = "webhook-timestamp"
"""Standard Webhooks: Unix seconds of this attempt, signed."""
WEBHOOK_SIGNATURE_HEADER = "webhook-signature"
"""Standard Webhooks: ``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">``."""
SIGNATURE_HEADER = "X-HES-Signature"
"""Deprecated (sent until HES 0.3): ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
EVENT_ID_HEADER = "X-HES-Event-Id"
"""The CloudEvents id of the event notified: receivers deduplicate on it."""
DELIVERY_ID_HEADER = "X-HES-Delivery-Id"
"""One delivery = one (event, subscription); stays the same across retries."""
DEFAULT_SIGNATURE_TOLERANCE = 300
"""Seconds a receiver should accept between the signature's timestamp and its own clock."""

STAFF_ROLES = frozenset({"viewer", "operator", "admin", "auditor"})
"""Roles that see every region's tariffs and every alert."""
DEFAULT_POLICY = WebhookPolicy()
"""https to public addresses only: what a deployment allows without HES_WEBHOOK_* settings."""

_EMAIL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
)
_SIGNATURE_RE = re.compile(r"t=(\d{1,12}),v1=([0-9a-f]{64})")
E = TypeVar("E", bound=enum.StrEnum)


class Channel(enum.StrEnum):
    """How a subscriber is reached."""

    WEBHOOK = "WEBHOOK"
    EMAIL = "EMAIL"


class EventKind(enum.StrEnum):
    """What a subscriber can ask to be told about."""

    ALERT_RAISED = "ALERT_RAISED"
    ALERT_ESCALATED = "ALERT_ESCALATED"
    ALERT_ACKNOWLEDGED = "ALERT_ACKNOWLEDGED"
    ALERT_RESOLVED = "ALERT_RESOLVED"
    TARIFF_PRICE_CHANGED = "TARIFF_PRICE_CHANGED"

    @property
    def is_alert(self) -> bool:
        """True for the alert kinds."""
        return self is not EventKind.TARIFF_PRICE_CHANGED


_KINDS: dict[tuple[str, str], EventKind] = {
    ("alert", "Raised"): EventKind.ALERT_RAISED,
    ("alert", "Escalated"): EventKind.ALERT_ESCALATED,
    ("alert", "Acknowledged"): EventKind.ALERT_ACKNOWLEDGED,
    ("alert", "Resolved"): EventKind.ALERT_RESOLVED,
    ("alert", "AutoResolved"): EventKind.ALERT_RESOLVED,
    # Every tariff event puts a (possibly) new price in force, so each one is a price change.
    **{
        ("tariff", name): EventKind.TARIFF_PRICE_CHANGED
        for name in (
            "Created",
            "BasePriceChanged",
            "TiersChanged",
            "LoadPriceChanged",
            "OverrideApplied",
            "OverrideCleared",
            "OverrideExpired",
        )
    },
}


def kind_of(aggregate: str, event_name: str) -> EventKind | None:
    """The notification kind of a relayed domain event, or None when nobody is told of it."""
    return _KINDS.get((aggregate, event_name))


class DeliveryStatus(enum.StrEnum):
    """Where one delivery (one event for one subscription) stands."""

    PENDING = "PENDING"
    DELIVERED = "DELIVERED"
    FAILED = "FAILED"


# -- subscriptions ----------------------------------------------------------------------


class Preferences(msgspec.Struct, frozen=True, kw_only=True):
    """Which events a subscription wants; empty regions/alert types mean "all I may see"."""

    kinds: frozenset[EventKind]
    regions: frozenset[str] = frozenset()
    alert_types: frozenset[AlertType] = frozenset()
    min_severity: Severity = Severity.LOW


class Owner(msgspec.Struct, frozen=True, kw_only=True):
    """Who owns a subscription: subject, role names and (customers) account, as last saved."""

    subject: str
    roles: frozenset[str]
    customer_account: str | None = None

    @property
    def is_staff(self) -> bool:
        """True when any role sees every region and alert."""
        return not self.roles.isdisjoint(STAFF_ROLES)


class SubscriptionDraft(msgspec.Struct, frozen=True, kw_only=True):
    """A subscription as a client typed it (unvalidated text)."""

    channel: str
    url: str | None = None
    email: str | None = None
    kinds: Sequence[str] = ()
    regions: Sequence[str] = ()
    alert_types: Sequence[str] = ()
    min_severity: str = Severity.LOW.value
    enabled: bool = True


class SubscriptionSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A valid subscription: channel, target (URL or address), preferences, on/off."""

    channel: Channel
    target: str
    preferences: Preferences
    enabled: bool = True


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """A stored subscription as the notifier matches it."""

    id: UUID
    owner: Owner
    spec: SubscriptionSpec
    created_at: datetime


def validate(
    draft: SubscriptionDraft, *, policy: WebhookPolicy = DEFAULT_POLICY
) -> SubscriptionSpec:
    """The spec of a draft; raises ``ValidationFailed`` naming every broken rule."""
    errors = Collector()
    channel = _enum(errors, "channel", draft.channel, Channel)
    target = ""
    if channel is Channel.WEBHOOK:
        if draft.email is not None:
            errors.add("email", "channel", "a WEBHOOK subscription takes a url, not an email")
        if draft.url is None:
            errors.add("url", "required", "a WEBHOOK subscription needs a url")
        else:
            target = draft.url.strip()
            check_url(errors, "url", target, policy=policy)
    elif channel is Channel.EMAIL:
        if draft.url is not None:
            errors.add("url", "channel", "an EMAIL subscription takes an email, not a url")
        if draft.email is None:
            errors.add("email", "required", "an EMAIL subscription needs an email address")
        else:
            target = draft.email.strip()
            check_email(errors, "email", target)
    kinds = frozenset(_enums(errors, "kinds", draft.kinds, EventKind))
    if not draft.kinds:
        errors.add("kinds", "required", "choose at least one event kind")
    alert_types = frozenset(_enums(errors, "alertTypes", draft.alert_types, AlertType))
    severity = _enum(errors, "minSeverity", draft.min_severity, Severity)
    regions = _regions(errors, draft.regions)
    errors.raise_if_any()
    assert channel is not None and severity is not None
    return SubscriptionSpec(
        channel=channel,
        target=target,
        preferences=Preferences(
            kinds=kinds, regions=regions, alert_types=alert_types, min_severity=severity
        ),
        enabled=draft.enabled,
    )


def check_url(
    errors: Collector, field: str, url: str, *, policy: WebhookPolicy = DEFAULT_POLICY
) -> None:
    """Record the broken rules of a webhook URL (https; http and non-public hosts if allowed)."""
    if not url or len(url) > MAX_URL_LENGTH:
        errors.add(field, "length", f"{field} must have 1..{MAX_URL_LENGTH} characters")
        return
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        errors.add(field, "characters", f"{field} must not contain spaces or control characters")
        return
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        errors.add(field, "format", f"{field} is not a valid URL: {exc}")
        return
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in ("https", "http"):
        errors.add(field, "scheme", f"{field} must be an https:// URL")
    elif scheme == "http" and not policy.allows_http(host):
        errors.add(
            field,
            "https",
            f"{field} must use https (http only to hosts in HES_WEBHOOK_HTTP_HOSTS)",
        )
    if not host:
        errors.add(field, "host", f"{field} must name a host")
    elif (refused := policy.host_refusal(host)) is not None:
        errors.add(field, "destination", f"{field} must not point inside the network: {refused}")
    if parts.username is not None or parts.password is not None:
        errors.add(field, "credentials", f"{field} must not carry a user or password")
    if parts.fragment:
        errors.add(field, "fragment", f"{field} must not have a #fragment")
    if port == 0:
        errors.add(field, "port", f"{field} port must be between 1 and 65535")


def check_email(errors: Collector, field: str, address: str) -> None:
    """Record the broken rules of an e-mail address (plain ASCII ``local@domain.tld``)."""
    if not address or len(address) > 254:
        errors.add(field, "length", f"{field} must have 1..254 characters")
        return
    local, _, domain = address.rpartition("@")
    if not _EMAIL_RE.fullmatch(address) or len(local) > 64:
        errors.add(field, "format", f"{field} must be an e-mail address like name@example.com")
    elif any(len(label) > 63 for label in domain.split(".")):
        errors.add(field, "format", f"{field} domain labels have at most 63 characters")


def _regions(errors: Collector, regions: Sequence[str]) -> frozenset[str]:
    if len(regions) > MAX_REGIONS:
        errors.add("regions", "size", f"give at most {MAX_REGIONS} regions")
    result: set[str] = set()
    for i, region in enumerate(regions):
        before = len(errors.errors)
        check_region(errors, region, f"regions[{i}]")
        if len(errors.errors) == before:
            result.add(region.strip())
    return frozenset(result)


def _enum(errors: Collector, field: str, value: str, cls: type[E]) -> E | None:
    try:
        return cls(value)
    except ValueError:
        known = ", ".join(m.value for m in cls)
        errors.add(field, "allowed", f"{field} {value!r} is not one of {known}")
        return None


def _enums(errors: Collector, field: str, values: Iterable[str], cls: type[E]) -> list[E]:
    result = []
    for i, value in enumerate(values):
        member = _enum(errors, f"{field}[{i}]", value, cls)
        if member is not None:
            result.append(member)
    return result


# -- matching ---------------------------------------------------------------------------


class Notable(msgspec.Struct, frozen=True, kw_only=True):
    """What the matching rules need to know about one alert or tariff event."""

    kind: EventKind
    time: datetime
    region: str
    alert_type: AlertType | None = None
    severity: Severity | None = None
    meter: UUID | None = None


class Visibility(msgspec.Struct, frozen=True, kw_only=True):
    """What an owner may be told about: everything (staff) or their own meters and regions."""

    everything: bool
    meters: frozenset[UUID] = frozenset()
    regions: frozenset[str] = frozenset()
    """Case-folded region names of the owner's meters."""

    @classmethod
    def of(cls, owner: Owner, meters: Iterable[tuple[UUID, str]]) -> Visibility:
        """Visibility of an owner; ``meters`` are (id, region) of the customer's own meters."""
        if owner.is_staff:
            return cls(everything=True)
        if "customer" not in owner.roles or owner.customer_account is None:
            return cls(everything=False)
        own = list(meters)
        return cls(
            everything=False,
            meters=frozenset(m for m, _ in own),
            regions=frozenset(r.casefold() for _, r in own),
        )

    def allows(self, event: Notable) -> bool:
        """True when the owner may learn about ``event``."""
        if self.everything:
            return True
        if event.kind.is_alert:
            return event.meter is not None and event.meter in self.meters
        return event.region.casefold() in self.regions


def wants(preferences: Preferences, event: Notable) -> bool:
    """True when ``event`` passes the preferences (kind, region, alert type, minimum severity)."""
    if event.kind not in preferences.kinds:
        return False
    if preferences.regions and event.region.casefold() not in {
        r.casefold() for r in preferences.regions
    }:
        return False
    if event.kind.is_alert:
        if preferences.alert_types and event.alert_type not in preferences.alert_types:
            return False
        if event.severity is None or event.severity.rank < preferences.min_severity.rank:
            return False
    return True


def matches(subscription: Subscription, visibility: Visibility, event: Notable) -> bool:
    """True when the subscription gets ``event``: enabled, not older, wanted and visible."""
    return (
        subscription.spec.enabled
        and event.time >= subscription.created_at
        and wants(subscription.spec.preferences, event)
        and visibility.allows(event)
    )


# -- what is sent ----------------------------------------------------------------------


class AlertFacts(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The alert a notification is about, as the notifier last saw it."""

    id: UUID
    alert_type: AlertType
    severity: Severity
    region: str
    meter: UUID | None = None
    message: str | None = None


class TariffFacts(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The tariff a notification is about; ``price`` when the event states one (per kWh)."""

    id: UUID
    region: str
    currency: str | None = None
    price: str | None = None


class NotificationBody(msgspec.Struct, frozen=True, kw_only=True, rename="camel"):
    """The JSON a webhook receives (and an e-mail renders): facts, a summary, the event."""

    delivery_id: UUID
    subscription_id: UUID
    event_id: UUID
    kind: EventKind
    summary: str
    alert: AlertFacts | None = None
    tariff: TariffFacts | None = None
    event: msgspec.Raw = msgspec.Raw(b"null")
    """The CloudEvents message exactly as it was relayed to HES_EVENTS."""


_TARIFF_REASONS = {
    "Created": "tariff created",
    "BasePriceChanged": "base price changed",
    "TiersChanged": "load tiers changed",
    "LoadPriceChanged": "regional load changed",
    "OverrideApplied": "administrator override",
    "OverrideCleared": "override cleared",
    "OverrideExpired": "override expired",
}


def summary(
    event_name: str,
    alert: AlertFacts | None = None,
    tariff: TariffFacts | None = None,
    actor: str | None = None,
) -> str:
    """One human line about an alert or tariff event (e-mail subject, webhook ``summary``)."""
    if alert is not None:
        what = f"{alert.alert_type} alert in {alert.region}"
        match event_name:
            case "Raised":
                text = f"{what} raised ({alert.severity})"
                return f"{text}: {alert.message}" if alert.message else text
            case "Escalated":
                return f"{what} escalated to {alert.severity}"
            case "Acknowledged":
                return f"{what} acknowledged by {actor or 'an operator'}"
            case "AutoResolved":
                return f"{what} resolved automatically: its cause cleared"
            case _:
                return f"{what} resolved by {actor or 'an operator'}"
    if tariff is not None:
        reason = _TARIFF_REASONS.get(event_name, event_name)
        if tariff.price is None:
            return f"Tariff {tariff.region}: {reason}"
        unit = f" {tariff.currency}/kWh" if tariff.currency else " per kWh"
        return f"Tariff {tariff.region}: price now {tariff.price}{unit} ({reason})"
    return event_name


# -- webhook signature ------------------------------------------------------------------


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret, as the Standard Webhooks spec defines it.

    Secrets issued before HES 0.2 are URL-safe base64 (``-`` and ``_``); they decode with that
    alphabet to the same 32 random bytes.
    """
    body = secret.removeprefix("whsec_")
    padded = body + "=" * (-len(body) % 4)
    if "-" in body or "_" in body:
        return base64.urlsafe_b64decode(padded)
    return base64.b64decode(padded, validate=True)


def standard_signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def webhook_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The signature headers of one attempt: Standard Webhooks, plus the deprecated one."""
    return {
        WEBHOOK_ID_HEADER: message_id,
        WEBHOOK_TIMESTAMP_HEADER: str(timestamp),
        WEBHOOK_SIGNATURE_HEADER: standard_signature(secret, message_id, timestamp, body),
        SIGNATURE_HEADER: signature_header(secret, timestamp, body),
    }


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under the subscription's secret."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    """The deprecated ``X-HES-Signature`` value: ``t=<timestamp>,v1=<signature>``."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify_signature(
    secret: str,
    header: str,
    body: bytes,
    now: int,
    tolerance: int = DEFAULT_SIGNATURE_TOLERANCE,
) -> bool:
    """True when ``header`` signs ``body`` with ``secret`` within ``tolerance`` s of ``now``."""
    match = _SIGNATURE_RE.fullmatch(header.strip())
    if match is None:
        return False
    timestamp = int(match.group(1))
    if abs(now - timestamp) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), match.group(2))


# -- retries ----------------------------------------------------------------------------


class Verdict(enum.StrEnum):
    """How an attempt's reply is judged."""

    SUCCESS = "SUCCESS"
    RETRY = "RETRY"
    """Worth trying again (timeout, connection error, non-2xx HTTP, SMTP 4xx)."""
    PERMANENT = "PERMANENT"
    """Trying again cannot help (SMTP 5xx: the server refused the mail for good)."""


def judge_http(status: int | None) -> Verdict:
    """2xx succeeds; no answer or any other status is retried."""
    if status is not None and 200 <= status < 300:
        return Verdict.SUCCESS
    return Verdict.RETRY


def judge_smtp(code: int | None) -> Verdict:
    """2xx accepted; 5xx refused for good; no answer or 4xx retried."""
    if code is not None and 200 <= code < 300:
        return Verdict.SUCCESS
    if code is not None and 500 <= code < 600:
        return Verdict.PERMANENT
    return Verdict.RETRY


class RetryPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Exponential backoff: attempt n+1 waits ``base · factor^(n-1)`` s (capped, ± jitter)."""

    max_attempts: int = 3
    base_seconds: float = 10.0
    factor: float = 3.0
    max_seconds: float = 3600.0
    jitter: float = 0.1
    """Spread of each delay, as a fraction (0.1: up to 10 % longer), so retries do not flock."""

    def check(self, errors: Collector) -> None:
        """Record the broken rules of the policy's numbers."""
        if not 1 <= self.max_attempts <= 20:
            errors.add("max_attempts", "range", "must be between 1 and 20")
        if not 0 <= self.base_seconds <= 86400:
            errors.add("base_seconds", "range", "must be between 0 and 86400 seconds")
        if not 1 <= self.factor <= 100:
            errors.add("factor", "range", "must be between 1 and 100")
        if not 0 <= self.max_seconds <= 7 * 86400:
            errors.add("max_seconds", "range", "must be between 0 and 604800 seconds")
        if not 0 <= self.jitter <= 1:
            errors.add("jitter", "range", "must be between 0 and 1")

    def delay_after(self, attempt: int, delivery: UUID | None = None) -> float | None:
        """Seconds to wait after failed attempt ``attempt`` (from 1); None when none is left."""
        if attempt >= self.max_attempts:
            return None
        exponent = max(0, attempt - 1)
        delay = min(self.base_seconds * self.factor**exponent, self.max_seconds)
        if delivery is not None and self.jitter > 0:
            digest = hashlib.sha256(f"{delivery}:{attempt}".encode()).digest()
            spread = int.from_bytes(digest[:4], "big") / 2**32
            delay = min(delay * (1 + self.jitter * spread), self.max_seconds)
        return delay

    def next_status(self, attempt: int, verdict: Verdict) -> DeliveryStatus:
        """The delivery's status after attempt ``attempt`` (from 1) was judged ``verdict``."""
        if verdict is Verdict.SUCCESS:
            return DeliveryStatus.DELIVERED
        if verdict is Verdict.PERMANENT or attempt >= self.max_attempts:
            return DeliveryStatus.FAILED
        return DeliveryStatus.PENDING
