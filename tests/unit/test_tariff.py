"""The Tariff aggregate and the TariffBook application: rules, events, replay, codec, roles."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from functools import reduce
from typing import Any

import pytest

from commands.codec import MsgspecMapper
from commands.context import SYSTEM, Actor, CommandContext, Role
from commands.tariffs import TariffBook
from domain.errors import Conflict, Forbidden, NotFound, ValidationFailed
from domain.meta import EventMeta
from domain.pricing import LoadTier, TariffSpec, TimeOfUsePeriod
from domain.tariff import Tariff, tariff_id

NOW = datetime(2024, 6, 5, 10, tzinfo=UTC)
SPEC = TariffSpec(
    region="North",
    currency="EUR",
    base_price=Decimal("0.2000"),
    timezone="Europe/Amsterdam",
    tou=(
        TimeOfUsePeriod(
            days=frozenset({1, 2, 3, 4, 5}), start=time(7), end=time(9), multiplier=Decimal("1.5")
        ),
    ),
)
EVENT_TYPES = {
    Tariff.Created,
    Tariff.BasePriceChanged,
    Tariff.TiersChanged,
    Tariff.LoadPriceChanged,
    Tariff.OverrideApplied,
    Tariff.OverrideCleared,
    Tariff.OverrideExpired,
}


def meta(correlation_id: str = "c", key: str | None = None, fp: str | None = None) -> EventMeta:
    """Event metadata for a test command."""
    return EventMeta(
        actor="ann", correlation_id=correlation_id, idempotency_key=key, fingerprint=fp
    )


def created() -> Tariff:
    """A new tariff whose creation event is already collected."""
    tariff = Tariff.create(SPEC, meta("create"))
    tariff.collect_events()
    return tariff


def state(tariff: Tariff) -> dict[str, Any]:
    """Everything the aggregate holds except events not yet collected."""
    return {k: v for k, v in vars(tariff).items() if k != "_pending_events"}


def every_event() -> tuple[Tariff, list[Any]]:
    """A tariff taken through one of every event type, and its events."""
    tariff = Tariff.create(SPEC, meta("0", key="k0", fp="f0"))
    tariff.apply_load(85.0, NOW, meta("1"))
    tariff.change_base_price(Decimal("0.2500"), meta("2"))
    tariff.change_tiers((LoadTier(threshold_pct=50.0, surcharge_pct=Decimal(5)),), meta("3"))
    tariff.apply_override(
        Decimal("0.1"), "storm", "ann", NOW + timedelta(hours=1), NOW, meta("4", "k4", "f4")
    )
    tariff.clear_override("storm over", meta("5"))
    tariff.apply_override(Decimal("0.12"), "test", "bob", NOW + timedelta(hours=1), NOW, meta("6"))
    assert tariff.expire_override(NOW + timedelta(hours=2), meta("7"))
    return tariff, list(tariff.collect_events())


# -- creation and rules ----------------------------------------------------------------


def test_create_records_the_spec_with_a_region_id() -> None:
    tariff = Tariff.create(SPEC, meta("c-create"))

    assert tariff.id == tariff_id("north") == tariff_id(" NORTH ")
    assert (tariff.region, tariff.currency, tariff.base_price) == ("North", "EUR", Decimal("0.2"))
    assert tariff.current_price(NOW) == Decimal("0.2000")
    (event,) = tariff.collect_events()
    assert isinstance(event, Tariff.Created)
    assert event.meta == meta("c-create")


def test_create_names_every_broken_rule() -> None:
    bad = TariffSpec(region="North", currency="eur", base_price=Decimal(0), timezone="Nowhere/X")
    with pytest.raises(ValidationFailed) as failed:
        Tariff.create(bad, meta())
    assert {(e.field, e.rule) for e in failed.value.errors} == {
        ("currency", "iso4217"),
        ("basePrice", "positive"),
        ("timezone", "known"),
    }


def test_load_price_is_recorded_only_when_it_moves_enough() -> None:
    tariff = created()

    assert tariff.apply_load(65.0, NOW, meta("a"))  # +10 %
    assert not tariff.apply_load(70.0, NOW + timedelta(minutes=15), meta("b"))  # same tier
    assert tariff.apply_load(95.0, NOW + timedelta(minutes=30), meta("c"))  # +35 %
    assert tariff.apply_load(10.0, NOW + timedelta(minutes=45), meta("d"))  # back to base

    events: list[Any] = list(tariff.collect_events())
    assert [(e.load_pct, e.previous, e.price) for e in events] == [
        (65.0, Decimal("0.2000"), Decimal("0.2200")),
        (95.0, Decimal("0.2200"), Decimal("0.2700")),
        (10.0, Decimal("0.2700"), Decimal("0.2000")),
    ]
    assert all(isinstance(e, Tariff.LoadPriceChanged) for e in events)


def test_small_moves_and_stale_windows_record_nothing() -> None:
    tariff = Tariff.create(
        TariffSpec(
            region="South",
            currency="EUR",
            base_price=Decimal("1"),
            timezone="UTC",
            tiers=(
                LoadTier(threshold_pct=50.0, surcharge_pct=Decimal("1.99")),
                LoadTier(threshold_pct=60.0, surcharge_pct=Decimal(4)),
            ),
        ),
        meta(),
    )
    tariff.collect_events()

    assert not tariff.apply_load(55.0, NOW, meta())  # +1.99 %: below 2 %
    assert tariff.apply_load(65.0, NOW, meta())  # +4 %
    assert not tariff.apply_load(10.0, NOW - timedelta(minutes=15), meta())  # older window
    assert len(tariff.collect_events()) == 1
    assert tariff.load_price == Decimal("1.0400")


def test_time_of_use_is_priced_at_the_window_time() -> None:
    tariff = created()
    wednesday_0730_local = datetime(2024, 6, 5, 5, 30, tzinfo=UTC)

    assert tariff.apply_load(10.0, wednesday_0730_local, meta())

    assert tariff.load_price == Decimal("0.3000")


@pytest.mark.parametrize(
    ("load", "bucket", "field"),
    [
        (-1.0, NOW, "loadPct"),
        (float("nan"), NOW, "loadPct"),
        (float("inf"), NOW, "loadPct"),
        (50.0, datetime(2024, 6, 5, 10), "bucket"),
    ],
)
def test_bad_load_is_refused(load: float, bucket: datetime, field: str) -> None:
    with pytest.raises(ValidationFailed) as failed:
        created().apply_load(load, bucket, meta())
    assert failed.value.errors[0].field == field


def test_base_price_and_tier_changes_reprice_at_the_last_load() -> None:
    tariff = created()
    tariff.apply_load(85.0, NOW, meta())  # +20 % -> 0.2400

    assert tariff.change_base_price(Decimal("0.3"), meta())
    assert tariff.load_price == Decimal("0.3600")
    assert not tariff.change_base_price(Decimal("0.3"), meta())
    assert tariff.change_tiers((LoadTier(threshold_pct=50.0, surcharge_pct=Decimal(50)),), meta())
    assert tariff.load_price == Decimal("0.4500")
    assert not tariff.change_tiers(tariff.tiers, meta())
    with pytest.raises(ValidationFailed):
        tariff.change_base_price(Decimal("-1"), meta())
    with pytest.raises(ValidationFailed):
        tariff.change_tiers((LoadTier(threshold_pct=100.0, surcharge_pct=Decimal(1)),), meta())


def test_override_precedence_clear_and_expiry() -> None:
    tariff = created()
    tariff.apply_load(95.0, NOW, meta())
    expiry = NOW + timedelta(hours=1)

    tariff.apply_override(Decimal("0.15"), "storm", "ann", expiry, NOW, meta())
    assert tariff.current_price(NOW) == Decimal("0.1500")
    assert tariff.current_price(expiry) == Decimal("0.2700")
    assert not tariff.expire_override(NOW, meta())
    assert tariff.expire_override(expiry, meta())
    assert tariff.override is None
    assert not tariff.expire_override(expiry, meta())
    with pytest.raises(Conflict):
        tariff.clear_override("nothing there", meta())

    tariff.apply_override(Decimal("0.15"), "storm", "ann", expiry, NOW, meta())
    tariff.clear_override("storm over", meta())
    assert tariff.current_price(NOW) == Decimal("0.2700")


@pytest.mark.parametrize(
    ("price", "reason", "author", "expires_at", "field"),
    [
        (Decimal(0), "r", "ann", NOW + timedelta(hours=1), "price"),
        (Decimal("0.1"), " ", "ann", NOW + timedelta(hours=1), "reason"),
        (Decimal("0.1"), "r", "", NOW + timedelta(hours=1), "author"),
        (Decimal("0.1"), "r", "ann", NOW, "expiresAt"),
        (Decimal("0.1"), "r", "ann", datetime(2030, 1, 1), "expiresAt"),
    ],
)
def test_override_rules(
    price: Decimal, reason: str, author: str, expires_at: datetime, field: str
) -> None:
    with pytest.raises(ValidationFailed) as failed:
        created().apply_override(price, reason, author, expires_at, NOW, meta())
    assert [e.field for e in failed.value.errors] == [field]


# -- meta, idempotency, replay, codec --------------------------------------------------


def test_the_fixture_covers_every_event_type_and_each_carries_meta() -> None:
    _, events = every_event()
    assert {type(e) for e in events} == EVENT_TYPES
    assert [e.meta.correlation_id for e in events] == [str(i) for i in range(8)]


def test_idempotency_keys_are_remembered_and_checked() -> None:
    tariff, _ = every_event()

    assert tariff.seen(meta(key="k4", fp="f4"))
    assert not tariff.seen(meta(key="other", fp="f4"))
    assert not tariff.seen(meta())
    with pytest.raises(Conflict, match="different arguments"):
        tariff.seen(meta(key="k4", fp="changed"))


def test_replay_from_the_collected_events_rebuilds_the_state() -> None:
    tariff, events = every_event()

    rebuilt = reduce(lambda a, e: e.mutate(a), events, None)

    assert isinstance(rebuilt, Tariff)
    assert state(rebuilt) == state(tariff)


@pytest.mark.parametrize("index", range(8))
def test_every_event_round_trips_through_the_msgspec_mapper(index: int) -> None:
    mapper = MsgspecMapper()
    event = every_event()[1][index]

    decoded: Any = mapper.to_domain_event(mapper.to_stored_event(event))

    assert type(decoded) is type(event)
    assert vars(decoded) == vars(event)
    for name, value in vars(event).items():
        assert type(vars(decoded)[name]) is type(value), name


def test_decoded_events_rebuild_the_tariff_with_decimals_and_times() -> None:
    mapper = MsgspecMapper()
    tariff, events = every_event()

    decoded: list[Any] = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]
    rebuilt: Any = reduce(lambda a, e: e.mutate(a), decoded, None)

    assert state(rebuilt) == state(tariff)
    assert isinstance(rebuilt.base_price, Decimal)
    assert isinstance(rebuilt.tou[0].start, time)
    assert rebuilt.tou[0].days == frozenset({1, 2, 3, 4, 5})


# -- the application -------------------------------------------------------------------


def ctx(role: Role, key: str | None = None) -> CommandContext:
    """Command context of a caller holding one role."""
    return CommandContext(
        actor=Actor(subject=f"{role}-user", roles=frozenset({role})), idempotency_key=key
    )


ADMIN = ctx(Role.ADMIN)
ENGINE = CommandContext(actor=SYSTEM)


@pytest.fixture
def book() -> Iterator[TariffBook]:
    """A tariff book over the in-memory store with the North tariff created."""
    app = TariffBook(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.create_tariff(SPEC, ADMIN)
    yield app
    app.close()


def test_book_creates_once_and_replays_an_identical_keyed_create(book: TariffBook) -> None:
    keyed = ctx(Role.ADMIN, key="create-south")
    south = TariffSpec(region="South", currency="GBP", base_price=Decimal("0.3"), timezone="UTC")

    first = book.create_tariff(south, keyed)
    again = book.create_tariff(south, keyed)

    assert first.notification_id is not None and not first.replayed
    assert again.replayed and again.notification_id is None
    with pytest.raises(Conflict, match="already has a tariff"):
        book.create_tariff(SPEC, ADMIN)
    assert book.tariff_ids() == [tariff_id("North"), tariff_id("South")]


def test_book_apply_load_reports_whether_the_price_changed(book: TariffBook) -> None:
    moved = book.apply_load("north", 85.0, NOW, ENGINE)
    still = book.apply_load("NORTH", 86.0, NOW + timedelta(minutes=15), ENGINE)

    assert moved.changed and moved.notification_id is not None
    assert not still.changed and still.notification_id is None
    assert book.get("North").current_price(NOW) == Decimal("0.2400")
    assert book.get("North").version == 2


def test_book_override_lifecycle_and_expiry_sweep(book: TariffBook) -> None:
    expiry = NOW + timedelta(hours=1)
    applied = book.apply_override("North", Decimal("0.1"), "storm", expiry, ADMIN, now=NOW)
    assert applied.tariff.override is not None
    assert applied.tariff.override.author == "admin-user"
    book.clear_override("North", "calm again", ADMIN)
    book.apply_override("North", Decimal("0.1"), "storm", expiry, ADMIN, now=NOW)

    assert book.expire_overrides(NOW) == []
    (expired,) = book.expire_overrides(expiry)
    assert expired.tariff.override is None
    assert book.expire_overrides(expiry) == []
    stored = list(book.events.get(tariff_id("North")))
    assert isinstance(stored[-1], Tariff.OverrideExpired)
    assert stored[-1].meta.actor == "system"


def test_book_keyed_override_is_applied_once(book: TariffBook) -> None:
    keyed = ctx(Role.ADMIN, key="ov-1")
    expiry = NOW + timedelta(hours=1)

    book.apply_override("North", Decimal("0.1"), "storm", expiry, keyed, now=NOW)
    again = book.apply_override("North", Decimal("0.1"), "storm", expiry, keyed, now=NOW)

    assert again.replayed
    assert book.get("North").version == 2
    with pytest.raises(Conflict):
        book.apply_override("North", Decimal("0.2"), "storm", expiry, keyed, now=NOW)


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER, Role.AUDITOR, Role.CUSTOMER])
def test_only_admins_may_touch_tariffs(book: TariffBook, role: Role) -> None:
    caller = ctx(role)
    expiry = NOW + timedelta(hours=1)
    with pytest.raises(Forbidden):
        book.apply_override("North", Decimal("0.1"), "storm", expiry, caller, now=NOW)
    with pytest.raises(Forbidden):
        book.clear_override("North", "x", caller)
    with pytest.raises(Forbidden):
        book.change_base_price("North", Decimal("0.3"), caller)
    with pytest.raises(Forbidden):
        book.change_tiers("North", (), caller)
    with pytest.raises(Forbidden):
        book.apply_load("North", 50.0, NOW, caller)
    with pytest.raises(Forbidden):
        book.create_tariff(SPEC, caller)
    with pytest.raises(Forbidden):
        book.expire_overrides(NOW, caller)


def test_book_changes_base_and_tiers_and_reports_unknown_regions(book: TariffBook) -> None:
    assert book.change_base_price("North", Decimal("0.3"), ADMIN).changed
    assert not book.change_base_price("North", Decimal("0.3"), ADMIN).changed
    assert book.change_tiers("North", (), ADMIN).tariff.tiers == ()
    with pytest.raises(NotFound):
        book.apply_load("Atlantis", 50.0, NOW, ENGINE)
