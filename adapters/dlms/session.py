"""Our interface to a DLMS/COSEM association: what the collector and executor may ask a meter.

Implementations (``gurux_session.GuruxSessionFactory`` today) hide the DLMS stack behind it;
values cross it as plain Python (int, float, bool, bytes, str, datetime, lists, None).
Error messages never contain secrets: they name the meter, the step and the rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol
from uuid import UUID

import msgspec

from adapters.dlms.axdr import Data, Tag
from domain.meter_keys import MeterKeys
from domain.values import ConnectionProfile

CosemValue = int | float | bool | bytes | str | datetime | list["CosemValue"] | None


class MeterTarget(msgspec.Struct, frozen=True, kw_only=True):
    """A meter as the DLMS side needs it: identity, model, group and how to reach it."""

    id: UUID
    serial: str
    region: str
    area: str
    status: str
    connection: ConnectionProfile
    phases: int = 3
    key_version: int = 0
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    profile: str | None = None
    """The DLMS model profile assigned to the meter (None: matched or the default)."""


@dataclass(frozen=True, slots=True)
class AttributeRef:
    """One COSEM attribute: interface class, logical name (OBIS) and attribute index."""

    class_id: int
    obis: str
    attribute: int


class SessionError(Exception):
    """A DLMS exchange failed; ``retryable`` says whether a new session may succeed."""

    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(SessionError):
    """No TCP connection to the meter (refused, no route, connect timeout)."""

    retryable = True


class SessionTimeout(SessionError):
    """The meter did not answer in time."""

    retryable = True


class LinkError(SessionError):
    """The connection broke or carried frames that make no sense (retry with a new one)."""

    retryable = True


class AssociationRefused(SessionError):
    """The meter refused the association: wrong password or keys, unknown client.

    ``counter_suspect`` is set when the refusal of an HLS association may be the meter
    rejecting the head-end's invocation counter (not an authentication failure);
    ``counter_hint`` is the least counter the meter said it accepts, when it said one.
    """

    def __init__(
        self, message: str, *, counter_suspect: bool = False, counter_hint: int | None = None
    ) -> None:
        super().__init__(message)
        self.counter_suspect = counter_suspect
        self.counter_hint = counter_hint


class DataAccessError(SessionError):
    """The meter answered a GET, SET or ACTION with a Data-Access-Result / Action-Result
    other than success (``result``: its code, ``result_name``: e.g. ``hardware-fault``),
    or refused the request with an exception response (``result`` None)."""

    def __init__(self, message: str, result: int | None = None, result_name: str = "") -> None:
        super().__init__(message)
        self.result = result
        self.result_name = result_name


class AccessDenied(DataAccessError):
    """The client may not use the attribute or method (read-write-denied, scope violated)."""


class ObjectMissing(DataAccessError):
    """The meter has no such object, not of that class, or it is unavailable."""


class CounterRejected(SessionError):
    """The meter's invocation counter did not increase: possible replay, nothing accepted."""


class MissingKeys(SessionError):
    """The meter's security level needs secrets the head-end does not hold."""


class NotDialled(SessionError):
    """The meter's transport is NONE: it sends its data, the head-end never connects to it."""


class CounterLedger(Protocol):
    """The invocation counters of one meter and key version, persisted before use."""

    async def reserve(self, count: int, at_least: int) -> int:
        """Reserve ``count`` client counters, none below ``at_least``; return the first."""
        ...

    async def accept_server(self, invocation_counter: int) -> None:
        """Record the meter's counter; raise ``CounterRejected`` unless it increased."""
        ...

    async def flush(self) -> None:
        """Persist the meter's last accepted counter if it is not yet (session end)."""
        ...

    async def note_meter_counter(self, value: int) -> None:
        """Keep the counter value the meter reported (0.0.43.1.0.255)."""
        ...


@dataclass(frozen=True, slots=True)
class LinkSizes:
    """What the head-end proposes: xDLMS max receive PDU, HDLC information field, window."""

    max_pdu: int = 1024
    hdlc_max_info: int = 128
    hdlc_window: int = 1


@dataclass(frozen=True, slots=True)
class Credentials:
    """What an association needs besides the address: secrets and, for HLS, counters."""

    keys: MeterKeys = field(default_factory=MeterKeys)
    client_system_title: bytes = b""
    counters: CounterLedger | None = None
    link: LinkSizes = field(default_factory=LinkSizes)


class MeterSession(Protocol):
    """An open association with one meter (logical-name referencing)."""

    @property
    def server_system_title(self) -> bytes | None:
        """The meter's system title learnt in the association (ciphered sessions)."""
        ...

    async def get(self, ref: AttributeRef) -> CosemValue:
        """GET one attribute (block transfer included); ``AccessDenied`` on a data-access error."""
        ...

    async def get_many(self, refs: Sequence[AttributeRef]) -> list[CosemValue | SessionError]:
        """GET several attributes (with-list when the meter supports it); errors per attribute."""
        ...

    async def get_range(self, obis: str, start: datetime, end: datetime) -> list[list[CosemValue]]:
        """Rows of a profile (class 7) whose capture time lies in ``[start, end]``."""
        ...

    async def set_datetime(
        self, ref: AttributeRef, value: datetime, *, deviation_unspecified: bool = False
    ) -> None:
        """SET a date-time attribute (sent as UTC, deviation 0 or not specified).

        Raises ``DataAccessError`` with the meter's Data-Access-Result unless it is success.
        """
        ...

    async def invoke(
        self, class_id: int, obis: str, method: int, argument: int, *, long: bool = False
    ) -> None:
        """ACTION a method with an integer(8) (``long``: a long, int16) argument.

        Raises ``DataAccessError`` with the meter's Action-Result unless it is success.
        """
        ...

    async def set(
        self, ref: AttributeRef, value: Data | CosemValue, *, kind: Tag | None = None
    ) -> None:
        """SET an attribute to a typed value (``Data``, or a plain value of type ``kind``).

        Raises ``DataAccessError`` with the meter's Data-Access-Result unless it is success.
        """
        ...

    async def action(
        self, class_id: int, obis: str, method: int, parameter: Data | None = None
    ) -> CosemValue:
        """ACTION a method with a typed parameter (None: null-data); its return data, if any.

        Raises ``DataAccessError`` with the meter's Action-Result unless it is success.
        """
        ...

    async def close(self) -> None:
        """Release the association and the link as the transport wants (RLRQ / DISC)."""
        ...


class SessionFactory(Protocol):
    """Opens associations."""

    async def open(self, target: MeterTarget, credentials: Credentials) -> MeterSession:
        """Connect and associate with the meter at ``target.connection``'s security level."""
        ...
