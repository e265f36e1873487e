"""Notification rules: validation, matching and visibility, signature, retry schedule."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st
from standardwebhooks import Webhook, WebhookVerificationError

from adapters.notify.secret_box import new_webhook_secret
from domain.alert import AlertType, Severity
from domain.errors import ValidationFailed
from domain.notifications import (
    AlertFacts,
    Channel,
    DeliveryStatus,
    EventKind,
    Notable,
    Owner,
    Preferences,
    RetryPolicy,
    Subscription,
    SubscriptionDraft,
    SubscriptionSpec,
    TariffFacts,
    Verdict,
    Visibility,
    judge_http,
    judge_smtp,
    kind_of,
    matches,
    signature,
    signature_header,
    summary,
    validate,
    verify_signature,
    wants,
    webhook_headers,
    webhook_key,
)
from domain.webhook_policy import WebhookPolicy

T0 = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
METER_A = UUID("00000000-0000-0000-0000-00000000000a")
METER_B = UUID("00000000-0000-0000-0000-00000000000b")
ALL_KINDS = frozenset(EventKind)


def draft(**overrides: Any) -> SubscriptionDraft:
    """A valid webhook draft with ``overrides``."""
    fields: dict[str, Any] = {
        "channel": "WEBHOOK",
        "url": "https://hooks.example.com/hes",
        "kinds": ["ALERT_RAISED"],
    }
    fields.update(overrides)
    return SubscriptionDraft(**fields)


def rules(exc: pytest.ExceptionInfo[ValidationFailed]) -> set[tuple[str, str]]:
    """(field, rule) pairs of a validation failure."""
    return {(e.field, e.rule) for e in exc.value.errors}


def alert_event(
    kind: EventKind = EventKind.ALERT_RAISED,
    *,
    region: str = "North",
    alert_type: AlertType = AlertType.OVERLOAD,
    severity: Severity = Severity.HIGH,
    meter: UUID | None = None,
    time: datetime = T0,
) -> Notable:
    """An alert event as the matching rules see it."""
    return Notable(
        kind=kind, time=time, region=region, alert_type=alert_type, severity=severity, meter=meter
    )


def tariff_event(region: str = "North", time: datetime = T0) -> Notable:
    """A tariff price change as the matching rules see it."""
    return Notable(kind=EventKind.TARIFF_PRICE_CHANGED, time=time, region=region)


def subscription(
    owner: Owner, preferences: Preferences | None = None, *, enabled: bool = True
) -> Subscription:
    """A stored subscription created an hour before T0."""
    return Subscription(
        id=uuid4(),
        owner=owner,
        spec=SubscriptionSpec(
            channel=Channel.WEBHOOK,
            target="https://hooks.example.com/x",
            preferences=preferences or Preferences(kinds=ALL_KINDS),
            enabled=enabled,
        ),
        created_at=T0 - timedelta(hours=1),
    )


OPERATOR = Owner(subject="olga", roles=frozenset({"operator"}))
CUSTOMER = Owner(subject="carl", roles=frozenset({"customer"}), customer_account="ACC-1")
NOBODY = Owner(subject="machine", roles=frozenset())


# -- validation -------------------------------------------------------------------------


def test_a_valid_webhook_draft_becomes_a_spec() -> None:
    spec = validate(
        draft(
            url="  https://hooks.example.com/hes?x=1  ",
            kinds=["ALERT_RAISED", "TARIFF_PRICE_CHANGED", "ALERT_RAISED"],
            regions=[" North ", "South"],
            alert_types=["OVERLOAD"],
            min_severity="medium",
        )
    )
    assert spec.channel is Channel.WEBHOOK
    assert spec.target == "https://hooks.example.com/hes?x=1"
    assert spec.preferences == Preferences(
        kinds=frozenset({EventKind.ALERT_RAISED, EventKind.TARIFF_PRICE_CHANGED}),
        regions=frozenset({"North", "South"}),
        alert_types=frozenset({AlertType.OVERLOAD}),
        min_severity=Severity.MEDIUM,
    )


def test_a_valid_email_draft_becomes_a_spec() -> None:
    spec = validate(
        SubscriptionDraft(
            channel="EMAIL", email="ops.team+hes@grid.example.org", kinds=["ALERT_RESOLVED"]
        )
    )
    assert spec.channel is Channel.EMAIL
    assert spec.target == "ops.team+hes@grid.example.org"


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("http://hooks.example.com/x", "https"),
        ("ftp://hooks.example.com/x", "scheme"),
        ("hooks.example.com/x", "scheme"),
        ("https:///path-only", "host"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com:99999/x", "format"),
        ("https://hooks.example.com:0/x", "port"),
        ("https://hooks.example.com/a b", "characters"),
        ("https://hooks.example.com/\r\nX-Evil: 1", "characters"),
        ("", "length"),
        ("https://hooks.example.com/" + "a" * 2048, "length"),
        ("http://127.evil.example/x", "https"),
    ],
)
def test_webhook_url_rules(url: str, rule: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate(draft(url=url))
    assert ("url", rule) in rules(exc)


LOCAL = WebhookPolicy.parse("localhost, 127.0.0.1, ::1, receiver.localhost", "127.0.0.0/8, ::1")


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost:8080/hook",
        "http://127.0.0.1:9000/hook",
        "http://[::1]:9000/hook",
        "http://receiver.localhost/hook",
        "https://hooks.example.com:8443/a/b?c=d",
    ],
)
def test_http_and_loopback_need_both_allow_lists(url: str) -> None:
    assert validate(draft(url=url), policy=LOCAL).target == url
    if url.startswith("http://"):
        with pytest.raises(ValidationFailed) as exc:
            validate(draft(url=url))
        assert {("url", "https"), ("url", "destination")} <= rules(exc)
        https = "https://" + url.removeprefix("http://")
        with pytest.raises(ValidationFailed) as exc:
            validate(draft(url=https))  # https alone does not open loopback
        assert rules(exc) == {("url", "destination")}


def test_http_elsewhere_needs_the_host_in_the_list() -> None:
    url = "http://intranet.example/hook"
    with pytest.raises(ValidationFailed):
        validate(draft(url=url))
    assert (
        validate(draft(url=url), policy=WebhookPolicy.parse("intranet.example", "")).target == url
    )


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://10.0.0.1/hook", "private"),
        ("https://192.168.1.20/hook", "private"),
        ("https://172.16.5.4/hook", "private"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://localhost/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://[fd00::1]/hook", "private"),
        ("https://[::ffff:10.0.0.1]/hook", "private"),
        ("https://224.0.0.251/hook", "multicast"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://2852039166/latest/meta-data", "link-local"),  # 169.254.169.254 as one number
        ("https://0xa9fea9fe/", "link-local"),
        ("https://0251.0376.0251.0376/", "link-local"),
        ("https://100.64.0.1/hook", "reserved"),
    ],
)
def test_non_public_destinations_are_refused(url: str, kind: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate(draft(url=url))
    [error] = [e for e in exc.value.errors if e.rule == "destination"]
    assert error.field == "url"
    assert kind in error.message and "HES_WEBHOOK_ALLOWED_NETWORKS" in error.message


def test_allowed_networks_open_exactly_their_addresses() -> None:
    policy = WebhookPolicy.parse("", "10.20.0.0/16")
    assert validate(draft(url="https://10.20.3.4/hook"), policy=policy)
    with pytest.raises(ValidationFailed):
        validate(draft(url="https://10.21.3.4/hook"), policy=policy)
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        WebhookPolicy.parse("", "10.0.0.0/33")


@pytest.mark.parametrize(
    "address",
    [
        "no-at-sign",
        "two@@example.com",
        "trailing.dot.@example.com",
        "name@localhost",
        "name@-bad.example.com",
        "name@example.com\r\nBcc: victim@example.com",
        "spaces in@example.com",
        "x" * 65 + "@example.com",
        "name@" + "a" * 64 + ".com",
        "",
    ],
)
def test_email_rules(address: str) -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate(SubscriptionDraft(channel="EMAIL", email=address, kinds=["ALERT_RAISED"]))
    assert {f for f, _ in rules(exc)} == {"email"}


def test_every_broken_rule_is_named_at_once() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate(
            SubscriptionDraft(
                channel="WEBHOOK",
                email="a@example.com",
                kinds=["ALERT_RAISED", "METER_STOLEN"],
                regions=["", "x" * 65, *(f"R{i}" for i in range(50))],
                alert_types=["EARTHQUAKE"],
                min_severity="apocalyptic",
            )
        )
    assert rules(exc) >= {
        ("email", "channel"),
        ("url", "required"),
        ("kinds[1]", "allowed"),
        ("regions", "size"),
        ("regions[0]", "length"),
        ("regions[1]", "length"),
        ("alertTypes[0]", "allowed"),
        ("minSeverity", "allowed"),
    }
    assert "ALERT_RAISED" in next(e.message for e in exc.value.errors if e.field == "kinds[1]")


def test_channel_kinds_and_targets_are_required() -> None:
    with pytest.raises(ValidationFailed) as exc:
        validate(SubscriptionDraft(channel="PIGEON"))
    assert rules(exc) == {("channel", "allowed"), ("kinds", "required")}
    with pytest.raises(ValidationFailed) as exc:
        validate(
            SubscriptionDraft(channel="EMAIL", url="https://x.example", kinds=["ALERT_RAISED"])
        )
    assert rules(exc) == {("url", "channel"), ("email", "required")}


@given(
    channel=st.sampled_from(["WEBHOOK", "EMAIL", "SMS", ""]),
    url=st.none() | st.text(max_size=60),
    email=st.none() | st.text(max_size=60),
    kinds=st.lists(st.sampled_from([*EventKind, "X"]) | st.text(max_size=8), max_size=4),
    regions=st.lists(st.text(max_size=70), max_size=4),
    severity=st.sampled_from([*Severity, "nope"]),
)
def test_validation_either_passes_or_names_known_fields(
    channel: str,
    url: str | None,
    email: str | None,
    kinds: list[str],
    regions: list[str],
    severity: str,
) -> None:
    candidate = SubscriptionDraft(
        channel=channel, url=url, email=email, kinds=kinds, regions=regions, min_severity=severity
    )
    try:
        spec = validate(candidate)
    except ValidationFailed as exc:
        fields = {e.field.split("[")[0] for e in exc.errors}
        assert fields <= {"channel", "url", "email", "kinds", "regions", "minSeverity"}
        assert all(e.message for e in exc.errors)
    else:
        assert spec.preferences.kinds and spec.target == spec.target.strip()
        assert "\n" not in spec.target and "\r" not in spec.target


# -- kinds, matching and visibility ----------------------------------------------------


def test_relayed_events_map_to_kinds() -> None:
    assert kind_of("alert", "Raised") is EventKind.ALERT_RAISED
    assert kind_of("alert", "Escalated") is EventKind.ALERT_ESCALATED
    assert kind_of("alert", "Acknowledged") is EventKind.ALERT_ACKNOWLEDGED
    assert kind_of("alert", "Resolved") is EventKind.ALERT_RESOLVED
    assert kind_of("alert", "AutoResolved") is EventKind.ALERT_RESOLVED
    assert kind_of("alert", "Recurred") is None
    assert kind_of("alertseries", "Opened") is None
    assert kind_of("meter", "Registered") is None
    for name in ("Created", "LoadPriceChanged", "OverrideApplied", "OverrideExpired"):
        assert kind_of("tariff", name) is EventKind.TARIFF_PRICE_CHANGED


def test_staff_sees_everything_and_nobody_sees_nothing() -> None:
    staff = Visibility.of(OPERATOR, [])
    none = Visibility.of(NOBODY, [])
    for event in (alert_event(), alert_event(meter=METER_A), tariff_event("Far")):
        assert staff.allows(event)
        assert not none.allows(event)


def test_customer_sees_own_regions_tariffs_and_own_meters_alerts() -> None:
    visibility = Visibility.of(CUSTOMER, [(METER_A, "North")])
    assert visibility.allows(tariff_event("north"))  # regions compare case-insensitively
    assert not visibility.allows(tariff_event("South"))
    assert visibility.allows(alert_event(meter=METER_A))
    assert not visibility.allows(alert_event(meter=METER_B))
    assert not visibility.allows(alert_event(meter=None))  # a regional alert is not theirs


def test_customer_without_account_sees_nothing() -> None:
    owner = Owner(subject="c", roles=frozenset({"customer"}))
    visibility = Visibility.of(owner, [(METER_A, "North")])
    assert not visibility.allows(tariff_event("North"))


def test_preferences_filter_kind_region_type_and_severity() -> None:
    prefs = Preferences(
        kinds=frozenset({EventKind.ALERT_RAISED, EventKind.TARIFF_PRICE_CHANGED}),
        regions=frozenset({"North"}),
        alert_types=frozenset({AlertType.OVERLOAD, AlertType.TAMPER}),
        min_severity=Severity.HIGH,
    )
    assert wants(prefs, alert_event())
    assert wants(prefs, alert_event(region="NORTH", severity=Severity.CRITICAL))
    assert not wants(prefs, alert_event(EventKind.ALERT_RESOLVED))
    assert not wants(prefs, alert_event(region="South"))
    assert not wants(prefs, alert_event(alert_type=AlertType.ANOMALY))
    assert not wants(prefs, alert_event(severity=Severity.MEDIUM))
    assert wants(prefs, tariff_event("North"))  # severity and type filter alerts only
    assert not wants(prefs, tariff_event("South"))


def test_a_subscription_gets_only_events_after_it_was_created() -> None:
    sub = subscription(OPERATOR)
    assert matches(sub, Visibility.of(OPERATOR, []), alert_event())
    early = alert_event(time=sub.created_at - timedelta(seconds=1))
    assert not matches(sub, Visibility.of(OPERATOR, []), early)


def test_a_disabled_subscription_gets_nothing() -> None:
    sub = subscription(OPERATOR, enabled=False)
    assert not matches(sub, Visibility.of(OPERATOR, []), alert_event())


@given(
    own=st.sets(st.uuids(), max_size=4),
    meter=st.none() | st.uuids(),
    kind=st.sampled_from(sorted(EventKind)),
    severity=st.sampled_from(list(Severity)),
    region=st.sampled_from(["North", "South", "north"]),
)
def test_a_customer_is_never_told_about_anothers_meter(
    own: set[UUID], meter: UUID | None, kind: EventKind, severity: Severity, region: str
) -> None:
    visibility = Visibility.of(CUSTOMER, [(m, "North") for m in own])
    sub = subscription(CUSTOMER)
    event = Notable(
        kind=kind,
        time=T0,
        region=region,
        alert_type=AlertType.OVERLOAD if kind.is_alert else None,
        severity=severity if kind.is_alert else None,
        meter=meter,
    )
    told = matches(sub, visibility, event)
    if kind.is_alert:
        assert told == (meter is not None and meter in own)
    else:
        assert told == (bool(own) and region.casefold() == "north")


@given(
    kind=st.sampled_from(sorted(EventKind)),
    severity=st.sampled_from(list(Severity)),
    alert_type=st.sampled_from(list(AlertType)),
    region=st.text(min_size=1, max_size=10),
)
def test_empty_filters_let_every_event_of_the_chosen_kinds_through(
    kind: EventKind, severity: Severity, alert_type: AlertType, region: str
) -> None:
    event = Notable(kind=kind, time=T0, region=region, alert_type=alert_type, severity=severity)
    assert wants(Preferences(kinds=frozenset({kind})), event)
    others = frozenset(EventKind) - {kind}
    assert not wants(Preferences(kinds=others), event)


@given(
    minimum=st.sampled_from(list(Severity)),
    severity=st.sampled_from(list(Severity)),
)
def test_minimum_severity_is_a_threshold(minimum: Severity, severity: Severity) -> None:
    prefs = Preferences(kinds=ALL_KINDS, min_severity=minimum)
    assert wants(prefs, alert_event(severity=severity)) == (severity.rank >= minimum.rank)


# -- signature ----------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"kind":"ALERT_RAISED"}'
    expected = hmac.new(b"whsec_k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert signature("whsec_k", 1700000000, body) == expected
    assert signature_header("whsec_k", 1700000000, body) == f"t=1700000000,v1={expected}"


def test_verification_refuses_tampering_wrong_secret_and_stale_timestamps() -> None:
    body = b'{"a":1}'
    header = signature_header("s3cret", 1000, body)
    assert verify_signature("s3cret", header, body, now=1000)
    assert verify_signature("s3cret", header, body, now=1299)
    assert not verify_signature("s3cret", header, body, now=1301)
    assert not verify_signature("s3cret", header, b'{"a":2}', now=1000)
    assert not verify_signature("other", header, body, now=1000)
    assert not verify_signature("s3cret", "v1=abc", body, now=1000)
    assert not verify_signature("s3cret", header.replace("t=1000", "t=1001"), body, now=1000)


@given(
    secret=st.text(min_size=1, max_size=40),
    body=st.binary(max_size=200),
    timestamp=st.integers(min_value=0, max_value=4_000_000_000),
    flip=st.integers(min_value=0, max_value=10_000),
)
def test_signatures_verify_and_any_body_change_breaks_them(
    secret: str, body: bytes, timestamp: int, flip: int
) -> None:
    header = signature_header(secret, timestamp, body)
    assert verify_signature(secret, header, body, now=timestamp)
    if body:
        i = flip % len(body)
        changed = body[:i] + bytes([body[i] ^ 0x01]) + body[i + 1 :]
        assert not verify_signature(secret, header, changed, now=timestamp)
    assert not verify_signature(secret, header, body + b" ", now=timestamp)


# -- retries and verdicts -----------------------------------------------------------------


def test_default_schedule_is_three_attempts_with_growing_waits() -> None:
    policy = RetryPolicy(jitter=0.0)
    assert policy.delay_after(1) == 10.0
    assert policy.delay_after(2) == 30.0
    assert policy.delay_after(3) is None  # the third attempt was the last
    assert RetryPolicy(max_attempts=5, jitter=0.0).delay_after(4) == 270.0
    assert policy.next_status(1, Verdict.RETRY) is DeliveryStatus.PENDING
    assert policy.next_status(3, Verdict.RETRY) is DeliveryStatus.FAILED
    assert policy.next_status(1, Verdict.PERMANENT) is DeliveryStatus.FAILED
    assert policy.next_status(3, Verdict.SUCCESS) is DeliveryStatus.DELIVERED


@given(
    max_attempts=st.integers(min_value=1, max_value=20),
    base=st.floats(min_value=0, max_value=600),
    factor=st.floats(min_value=1, max_value=10),
    cap=st.floats(min_value=0, max_value=7200),
    jitter=st.floats(min_value=0, max_value=1),
    delivery=st.uuids(),
)
def test_backoff_grows_stays_capped_and_ends_at_the_last_attempt(
    max_attempts: int, base: float, factor: float, cap: float, jitter: float, delivery: UUID
) -> None:
    policy = RetryPolicy(
        max_attempts=max_attempts, base_seconds=base, factor=factor, max_seconds=cap, jitter=jitter
    )
    plain = RetryPolicy(
        max_attempts=max_attempts, base_seconds=base, factor=factor, max_seconds=cap, jitter=0
    )
    previous = 0.0
    for attempt in range(1, max_attempts + 3):
        delay = policy.delay_after(attempt, delivery)
        exact = plain.delay_after(attempt)
        if attempt >= max_attempts:
            assert delay is None and exact is None
            assert policy.next_status(attempt, Verdict.RETRY) is DeliveryStatus.FAILED
            continue
        assert delay is not None and exact is not None
        assert exact >= previous  # exponential: never shorter than the wait before
        assert exact <= delay <= min(cap, exact * (1 + jitter)) + 1e-9
        assert delay == policy.delay_after(attempt, delivery)  # deterministic per delivery
        assert policy.next_status(attempt, Verdict.RETRY) is DeliveryStatus.PENDING
        previous = exact


def test_policy_numbers_are_checked() -> None:
    from domain.errors import Collector

    errors = Collector()
    RetryPolicy(max_attempts=0, base_seconds=-1, factor=0.5, max_seconds=-1, jitter=2).check(errors)
    assert {e.field for e in errors.errors} == {
        "max_attempts",
        "base_seconds",
        "factor",
        "max_seconds",
        "jitter",
    }


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.SUCCESS),
        (204, Verdict.SUCCESS),
        (301, Verdict.RETRY),
        (404, Verdict.RETRY),
        (500, Verdict.RETRY),
        (None, Verdict.RETRY),
    ],
)
def test_http_verdicts(status: int | None, verdict: Verdict) -> None:
    assert judge_http(status) is verdict


@pytest.mark.parametrize(
    ("code", "verdict"),
    [
        (250, Verdict.SUCCESS),
        (421, Verdict.RETRY),
        (451, Verdict.RETRY),
        (550, Verdict.PERMANENT),
        (None, Verdict.RETRY),
    ],
)
def test_smtp_verdicts(code: int | None, verdict: Verdict) -> None:
    assert judge_smtp(code) is verdict


# -- summaries ----------------------------------------------------------------------------


def test_summaries_read_like_a_sentence() -> None:
    alert = AlertFacts(
        id=uuid4(),
        alert_type=AlertType.OVERLOAD,
        severity=Severity.HIGH,
        region="North",
        message="region North overloaded",
    )
    assert (
        summary("Raised", alert) == "OVERLOAD alert in North raised (high): region North overloaded"
    )
    assert (
        summary("Acknowledged", alert, actor="olga")
        == "OVERLOAD alert in North acknowledged by olga"
    )
    assert summary("AutoResolved", alert).endswith("its cause cleared")
    tariff = TariffFacts(id=uuid4(), region="North", currency="EUR", price="0.3375")
    assert summary("LoadPriceChanged", tariff=tariff) == (
        "Tariff North: price now 0.3375 EUR/kWh (regional load changed)"
    )
    cleared = TariffFacts(id=uuid4(), region="North", currency="EUR")
    assert summary("OverrideCleared", tariff=cleared) == "Tariff North: override cleared"


# -- Standard Webhooks --------------------------------------------------------------------


def test_standard_webhooks_library_verifies_our_headers() -> None:
    secret = new_webhook_secret()
    body = b'{"kind":"ALERT_RAISED","n":1}'
    now = int(time.time())
    headers = webhook_headers(secret, "3e242d06-897d-5751-9fd5-833f7c43fbaf", now, body)
    assert Webhook(secret).verify(body, headers) == {"kind": "ALERT_RAISED", "n": 1}
    assert headers["webhook-signature"].startswith("v1,")
    # The deprecated header is still sent, and still verifies.
    assert verify_signature(secret, headers["X-HES-Signature"], body, now=now)
    for tampered in (
        {**headers, "webhook-id": "other"},
        {**headers, "webhook-timestamp": str(now - 1)},
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, tampered)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_webhook_secret()).verify(body, headers)


def test_new_secrets_are_standard_base64_of_32_bytes() -> None:
    secret = new_webhook_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret[6:], validate=True)) == 32
    assert webhook_key(secret) == base64.b64decode(secret[6:])


def test_secrets_issued_before_standard_webhooks_keep_their_32_byte_key() -> None:
    raw = bytes(range(32))
    old = "whsec_" + base64.urlsafe_b64encode(bytes([251] * 32)).decode().rstrip("=")
    assert "-" in old or "_" in old
    assert webhook_key(old) == bytes([251] * 32)
    plain = "whsec_" + base64.urlsafe_b64encode(raw).decode().rstrip("=")
    assert webhook_key(plain) == raw
    # A receiver converts an old secret to the standard form once:
    converted = "whsec_" + base64.b64encode(webhook_key(old)).decode()
    body, now = b"{}", int(time.time())
    assert Webhook(converted).verify(body, webhook_headers(old, "m-1", now, body)) == {}
