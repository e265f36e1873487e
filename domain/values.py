"""Value objects of the meter registry and the rules their fields obey."""

from __future__ import annotations

import enum
import ipaddress
import re

import msgspec

from domain.errors import Collector
from domain.text import (
    CODE_RE,
    CODE_RULE,
    NAME_RE,
    NAME_RULE,
    SERIAL_RE,
    SERIAL_RULE,
    check_identifier,
    check_text,
)

HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)"
    r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\Z"
)


class MeterStatus(enum.StrEnum):
    """Lifecycle of a meter in the registry."""

    REGISTERED = "REGISTERED"
    COMMISSIONED = "COMMISSIONED"
    DECOMMISSIONED = "DECOMMISSIONED"


class Transport(enum.StrEnum):
    """How the head-end reaches the meter's DLMS server over TCP (or that it never does)."""

    WRAPPER = "WRAPPER"
    HDLC = "HDLC"
    NONE = "NONE"
    """Never dialled: the meter's data arrives by DLMS push, HTTP or NATS ingest only."""


class SecurityLevel(enum.StrEnum):
    """DLMS association security; keys themselves never appear in events."""

    NONE = "NONE"
    LLS = "LLS"
    HLS_GMAC = "HLS_GMAC"


class ConnectionProfile(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how to open a DLMS association with the meter (no key material)."""

    host: str
    port: int = 4059
    transport: Transport = Transport.WRAPPER
    client_address: int | None = None
    """DLMS client SAP; ``None``: the one the meter's DLMS profile gives its security level
    (IDIS: NONE 16, LLS 17, HLS-GMAC 1)."""
    server_address: int = 1
    physical_address: int | None = None
    """HDLC lower (physical) server address; unused with the wrapper."""
    security: SecurityLevel = SecurityLevel.NONE

    @property
    def dialled(self) -> bool:
        """True when the head-end opens connections to the meter (collection, commands)."""
        return self.transport is not Transport.NONE

    def check(self, errors: Collector, prefix: str = "connection") -> None:
        """Record every rule this profile breaks."""
        if not _valid_host(self.host):
            errors.add(f"{prefix}.host", "host", f"{self.host!r} is not an IP address or host name")
        if not 1 <= self.port <= 65535:
            errors.add(f"{prefix}.port", "range", f"port {self.port} is outside 1..65535")
        if self.client_address is not None and not 1 <= self.client_address <= 0x7F:
            errors.add(
                f"{prefix}.clientAddress",
                "range",
                f"client address {self.client_address} is outside 1..127",
            )
        if not 0 <= self.server_address <= 0x3FFF:
            errors.add(
                f"{prefix}.serverAddress",
                "range",
                f"server address {self.server_address} is outside 0..16383",
            )
        if self.physical_address is not None:
            if self.transport is not Transport.HDLC:
                errors.add(
                    f"{prefix}.physicalAddress",
                    "hdlc-only",
                    "a physical address applies to HDLC only",
                )
            elif not 0 <= self.physical_address <= 0x3FFF:
                errors.add(
                    f"{prefix}.physicalAddress",
                    "range",
                    f"physical address {self.physical_address} is outside 0..16383",
                )
        if self.security is SecurityLevel.NONE and self.client_address not in (None, 16, 1):
            # A public association (client 16) is the only one a meter accepts without auth;
            # management client 1 is tolerated for lab meters configured that way.
            errors.add(
                f"{prefix}.security",
                "public-client",
                "security NONE needs the public client address 16",
            )


class Location(msgspec.Struct, frozen=True, kw_only=True):
    """Where a meter is installed."""

    address: str
    latitude: float | None = None
    longitude: float | None = None

    def check(self, errors: Collector, prefix: str = "location") -> None:
        """Record every rule this location breaks."""
        check_text(errors, f"{prefix}.address", self.address, max_chars=200, multiline=True)
        if (self.latitude is None) != (self.longitude is None):
            errors.add(
                f"{prefix}.latitude", "pair", "latitude and longitude go together or not at all"
            )
        if self.latitude is not None and not -90 <= self.latitude <= 90:
            errors.add(f"{prefix}.latitude", "range", f"latitude {self.latitude} is outside ±90")
        if self.longitude is not None and not -180 <= self.longitude <= 180:
            errors.add(
                f"{prefix}.longitude", "range", f"longitude {self.longitude} is outside ±180"
            )


class MeterSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a utility knows of a meter when it registers it."""

    serial: str
    manufacturer: str
    model: str
    firmware: str
    phases: int
    region: str
    area: str
    connection: ConnectionProfile
    meter_type: str | None = None
    concentrator_id: str | None = None
    sim_card: str | None = None

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every field rule this spec breaks."""
        errors = Collector()
        check_serial(errors, "serial", self.serial)
        for name in ("manufacturer", "model", "region", "area"):
            check_name(errors, name, getattr(self, name))
        check_text(errors, "firmware", self.firmware, max_chars=64)
        if self.meter_type is not None:
            check_text(errors, "meterType", self.meter_type, max_chars=64, multiline=True)
        if self.phases not in (1, 3):
            errors.add("phases", "allowed", f"phases must be 1 or 3, got {self.phases}")
        for name in ("concentrator_id", "sim_card"):
            value = getattr(self, name)
            if value is None:
                continue
            if not value.strip() or len(value) > 64:
                errors.add(camel(name), "length", f"{camel(name)} must have 1..64 characters")
            else:
                check_identifier(errors, camel(name), value, CODE_RE, CODE_RULE)
        self.connection.check(errors)
        errors.raise_if_any()


def check_serial(errors: Collector, field: str, value: str) -> None:
    """Record a broken rule if ``value`` is not a meter serial number."""
    check_identifier(errors, field, value, SERIAL_RE, SERIAL_RULE)


def check_name(errors: Collector, field: str, value: str) -> None:
    """Record a broken rule if ``value`` is not a 1..64 character name (region, area, model)."""
    check_identifier(errors, camel(field), value, NAME_RE, NAME_RULE)


def check_region(errors: Collector, region: str, field: str = "region") -> None:
    """Record a broken rule unless ``region`` (trimmed) is a region name as meters have."""
    name = region.strip()
    if not name or len(name) > 64:
        errors.add(field, "length", f"{field} must have 1..64 characters")
    else:
        check_identifier(errors, field, name, NAME_RE, NAME_RULE)


def check_account(errors: Collector, field: str, value: str) -> None:
    """Record a broken rule if ``value`` is not a valid customer account number."""
    check_identifier(errors, field, value, CODE_RE, CODE_RULE)


def camel(name: str) -> str:
    """Field name as clients see it (camelCase)."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return bool(HOSTNAME_RE.match(host)) and not host.replace(".", "").isdigit()
    return True
