"""The Region aggregate and the TariffBook's capacity command: rules, events, replay, roles."""

from __future__ import annotations

import math
from collections.abc import Iterator
from functools import reduce
from typing import Any

import pytest

from commands.codec import MsgspecMapper
from commands.context import Actor, CommandContext, Role
from commands.tariffs import TariffBook
from domain.errors import Conflict, Forbidden, ValidationFailed
from domain.meta import EventMeta
from domain.region import MAX_CAPACITY_KW, Region, region_id


def meta(correlation_id: str = "c", key: str | None = None, fp: str | None = None) -> EventMeta:
    """Event metadata for a test command."""
    return EventMeta(
        actor="ann", correlation_id=correlation_id, idempotency_key=key, fingerprint=fp
    )


def state(region: Region) -> dict[str, Any]:
    """Everything the aggregate holds except events not yet collected."""
    return {k: v for k, v in vars(region).items() if k != "_pending_events"}


def test_create_then_set_records_two_events_with_watts_and_meta() -> None:
    region = Region.create(" North ", meta("0"))
    assert region.set_capacity(2500, meta("1"))
    created, capacity = region.collect_events()

    assert isinstance(created, Region.Created) and created.region == "North"
    assert isinstance(capacity, Region.CapacitySet)
    assert (capacity.region, capacity.capacity_w, capacity.previous_w) == ("North", 2.5e6, None)
    assert capacity.meta.actor == "ann" and capacity.meta.correlation_id == "1"
    assert region.id == region_id("North") and region.capacity_kw == 2500


def test_a_change_names_the_previous_capacity_and_the_same_value_records_nothing() -> None:
    region = Region.create("North", meta())
    region.set_capacity(2500, meta())
    region.collect_events()

    assert not region.set_capacity(2500.0, meta())
    assert region.set_capacity(60, meta())
    (changed,) = region.collect_events()
    assert isinstance(changed, Region.CapacitySet)
    assert (changed.capacity_w, changed.previous_w) == (60_000.0, 2.5e6)


def test_region_ids_keep_case_as_meters_regions_and_the_read_model_do() -> None:
    assert region_id("North") == region_id(" North")
    assert region_id("North") != region_id("NORTH")


@pytest.mark.parametrize(
    ("kw", "rule"),
    [
        (0, "positive"),
        (-1.5, "positive"),
        (math.nan, "finite"),
        (math.inf, "finite"),
        (MAX_CAPACITY_KW * 1.01, "maximum"),
        (True, "number"),
    ],
)
def test_bad_capacities_are_refused_naming_the_field(kw: float, rule: str) -> None:
    region = Region.create("North", meta())
    with pytest.raises(ValidationFailed) as failed:
        region.set_capacity(kw, meta())
    assert [(e.field, e.rule) for e in failed.value.errors] == [("kw", rule)]
    assert region.capacity_w is None


def test_a_bad_region_name_is_refused() -> None:
    with pytest.raises(ValidationFailed) as failed:
        Region.create("  ", meta())
    assert failed.value.errors[0].field == "region"


def test_events_round_trip_through_the_msgspec_mapper_and_replay() -> None:
    region = Region.create("North", meta("0", key="k0", fp="f0"))
    region.set_capacity(2500, meta("1"))
    region.set_capacity(60.5, meta("2", key="k2", fp="f2"))
    events = list(region.collect_events())
    mapper = MsgspecMapper()

    decoded: list[Any] = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]
    rebuilt: Any = reduce(lambda a, e: e.mutate(a), decoded, None)

    assert [vars(d) for d in decoded] == [vars(e) for e in events]
    assert state(rebuilt) == state(region)
    assert rebuilt.commands == {"k0": "f0", "k2": "f2"}


# -- the command on the TariffBook ----------------------------------------------------


def ctx(role: Role, key: str | None = None) -> CommandContext:
    """Command context of a caller holding one role."""
    return CommandContext(
        actor=Actor(subject=f"{role}-user", roles=frozenset({role})), idempotency_key=key
    )


@pytest.fixture
def book() -> Iterator[TariffBook]:
    """A tariff book over the in-memory store."""
    app = TariffBook(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    yield app
    app.close()


def test_book_sets_changes_and_reports_unchanged(book: TariffBook) -> None:
    first = book.set_region_capacity("North", 2500, ctx(Role.ADMIN))
    same = book.set_region_capacity("North", 2500, ctx(Role.ADMIN))
    moved = book.set_region_capacity("North", 60, ctx(Role.ADMIN))

    assert first.changed and first.notification_id is not None
    assert not same.changed and same.notification_id is None
    assert moved.region.capacity_kw == 60 and moved.region.version == 3
    stored: Region = book.repository.get(region_id("North"))
    assert stored.capacity_w == 60_000 and stored.region == "North"


def test_book_replays_a_keyed_command_and_refuses_the_key_with_other_arguments(
    book: TariffBook,
) -> None:
    first = book.set_region_capacity("North", 2500, ctx(Role.ADMIN, key="cap-1"))
    again = book.set_region_capacity("North", 2500, ctx(Role.ADMIN, key="cap-1"))
    assert again.replayed and again.region.version == first.region.version
    book.set_region_capacity("North", 70, ctx(Role.ADMIN))
    with pytest.raises(Conflict):
        book.set_region_capacity("North", 80, ctx(Role.ADMIN, key="cap-1"))


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER, Role.AUDITOR, Role.CUSTOMER])
def test_only_admins_may_set_a_capacity(book: TariffBook, role: Role) -> None:
    with pytest.raises(Forbidden, match="setRegionCapacity needs role admin"):
        book.set_region_capacity("North", 2500, ctx(role))


def test_book_names_every_broken_rule_at_once(book: TariffBook) -> None:
    with pytest.raises(ValidationFailed) as failed:
        book.set_region_capacity("", -1, ctx(Role.ADMIN))
    assert {e.field for e in failed.value.errors} == {"region", "kw"}
