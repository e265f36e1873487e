"""Invocation-counter resynchronisation after a meter refuses the head-end's counter: the least
value the meter names, else its counter object read again, else a bounded step; recorded."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from adapters.dlms.meter_access import MeterAccess
from adapters.dlms.session import (
    AssociationRefused,
    AttributeRef,
    CosemValue,
    Credentials,
    MeterTarget,
    ObjectMissing,
    SessionError,
)
from domain.dlms_profile import InvocationCounter, ModelProfile, ProfileCatalogue
from domain.values import ConnectionProfile, SecurityLevel


class Ledger:
    """The counters of one meter in memory."""

    def __init__(self, next_: int) -> None:
        self.next = next_

    async def reserve(self, count: int, at_least: int) -> int:
        self.next = max(self.next, at_least)
        first = self.next
        self.next += count
        return first

    async def accept_server(self, invocation_counter: int) -> None:
        return None

    async def note_meter_counter(self, value: int) -> None:
        return None

    async def flush(self) -> None:
        return None


class Session:
    """A public association that answers the counter object (or not)."""

    def __init__(self, value: int | None) -> None:
        self.value = value
        self.asked: list[AttributeRef] = []

    @property
    def server_system_title(self) -> bytes | None:
        return None

    async def get(self, ref: AttributeRef) -> CosemValue:
        self.asked.append(ref)
        if self.value is None:
            raise ObjectMissing("meter M: the meter answered object-undefined", 4)
        return self.value

    async def get_many(self, refs: Sequence[AttributeRef]) -> list[CosemValue | SessionError]:
        return [await self.get(r) for r in refs]

    async def get_range(self, obis: str, start: datetime, end: datetime) -> list[list[CosemValue]]:
        return []

    async def set_datetime(
        self, ref: AttributeRef, value: datetime, *, deviation_unspecified: bool = False
    ) -> None:
        return None

    async def invoke(
        self, class_id: int, obis: str, method: int, argument: int, *, long: bool = False
    ) -> None:
        return None

    async def close(self) -> None:
        return None


class Factory:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.opened: list[MeterTarget] = []

    async def open(self, target: MeterTarget, credentials: Credentials) -> Session:
        self.opened.append(target)
        return self.session


def _access(factory: Factory, profile: ModelProfile, recorded: list[tuple[Any, ...]]) -> Any:
    async def record(*args: Any) -> None:
        recorded.append(args)

    return MeterAccess(
        factory,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        "test",
        None,  # type: ignore[arg-type]
        client_system_title=b"HESHES01",
        concurrency=1,
        retries=0,
        catalogue=ProfileCatalogue([profile], profile.name, ()),
        record_resync=record,
    )


TARGET = MeterTarget(
    id=uuid4(),
    serial="M",
    region="r",
    area="a",
    status="COMMISSIONED",
    connection=ConnectionProfile(host="127.0.0.1", security=SecurityLevel.HLS_GMAC),
    key_version=2,
)
REFUSED = AssociationRefused("meter M refused the HLS_GMAC association", counter_suspect=True)


@pytest.mark.parametrize(
    ("counter", "object_value", "refusal", "strategy", "floor"),
    [
        (InvocationCounter(), 900, REFUSED, "object", 901),
        (InvocationCounter(), None, REFUSED, "step", 1100),
        (InvocationCounter(source="persisted", resync_step=50), 900, REFUSED, "step", 150),
        (
            InvocationCounter(),
            900,
            AssociationRefused("refused", counter_suspect=True, counter_hint=5000),
            "meter-hint",
            5000,
        ),
        (InvocationCounter(), 40, REFUSED, "step", 1100),  # the object is behind us: step
    ],
)
async def test_a_refused_counter_moves_on_by_the_documented_strategy(
    counter: InvocationCounter,
    object_value: int | None,
    refusal: AssociationRefused,
    strategy: str,
    floor: int,
) -> None:
    profile = ModelProfile(format=1, name="p", version="1", invocation_counter=counter)
    factory = Factory(Session(object_value))
    recorded: list[tuple[Any, ...]] = []
    access = _access(factory, profile, recorded)
    ledger = Ledger(100)

    said = await access._resync(access.effective(TARGET), profile, ledger, refusal)

    assert ledger.next == floor
    assert said == f"from 100 to {floor} ({strategy})"
    meter: UUID = TARGET.id
    assert recorded == [(meter, 2, strategy, 100, floor, refusal.message)]
    if counter.source == "object" and refusal.counter_hint is None:
        (public,) = factory.opened  # read through the public client, without security
        assert public.connection.client_address == 16
        assert public.connection.security is SecurityLevel.NONE


async def test_the_client_address_comes_from_the_profile_unless_the_meter_has_one() -> None:
    profile = ModelProfile(format=1, name="p", version="1")
    access = _access(Factory(Session(1)), profile, [])
    assert access.client_of(TARGET) == 1
    lls = ConnectionProfile(host="127.0.0.1", security=SecurityLevel.LLS)
    assert (
        access.effective(
            MeterTarget(**{**_fields(TARGET), "connection": lls})
        ).connection.client_address
        == 17
    )
    own = ConnectionProfile(host="127.0.0.1", security=SecurityLevel.HLS_GMAC, client_address=48)
    assert access.client_of(MeterTarget(**{**_fields(TARGET), "connection": own})) == 48


def _fields(target: MeterTarget) -> dict[str, Any]:
    return {f: getattr(target, f) for f in target.__struct_fields__}
