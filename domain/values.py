"""Value objects of the meter registry and the rules their fields obey."""

from __future__ import annotations

import enum
import ipaddress
import re

import msgspec

from domain.errors import Collector

# \Z, not $: "$" also matches before a trailing newline, which would let "ABC\n" through.
SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
NAME_RE = re.compile(r"^[\w][\w .,'/&()+:-]{0,63}\Z")
ACCOUNT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}\Z")
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
    """How the head-end reaches the meter's DLMS server over TCP."""

    WRAPPER = "WRAPPER"
    HDLC = "HDLC"


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
    client_address: int = 16
    server_address: int = 1
    physical_address: int | None = None
    """HDLC lower (physical) server address; unused with the wrapper."""
    security: SecurityLevel = SecurityLevel.NONE

    def check(self, errors: Collector, prefix: str = "connection") -> None:
        """Record every rule this profile breaks."""
        if not _valid_host(self.host):
            errors.add(f"{prefix}.host", "host", f"{self.host!r} is not an IP address or host name")
        if not 1 <= self.port <= 65535:
            errors.add(f"{prefix}.port", "range", f"port {self.port} is outside 1..65535")
        if not 1 <= self.client_address <= 0x7F:
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
        if self.security is SecurityLevel.NONE and self.client_address not in (16, 1):
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
        if not self.address.strip() or len(self.address) > 200:
            errors.add(f"{prefix}.address", "length", "address must have 1..200 characters")
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
        if not SERIAL_RE.match(self.serial):
            errors.add(
                "serial",
                "format",
                "serial must be 1..64 letters, digits, '.', '_' or '-', starting alphanumeric",
            )
        for name in ("manufacturer", "model", "region", "area"):
            check_name(errors, name, getattr(self, name))
        if not self.firmware.strip() or len(self.firmware) > 64:
            errors.add("firmware", "length", "firmware must have 1..64 characters")
        if self.phases not in (1, 3):
            errors.add("phases", "allowed", f"phases must be 1 or 3, got {self.phases}")
        for name in ("meter_type", "concentrator_id", "sim_card"):
            value = getattr(self, name)
            if value is not None and (not value.strip() or len(value) > 64):
                errors.add(camel(name), "length", f"{camel(name)} must have 1..64 characters")
        self.connection.check(errors)
        errors.raise_if_any()


def check_name(errors: Collector, field: str, value: str) -> None:
    """Record a broken rule if ``value`` is not a 1..64 character display name."""
    if not NAME_RE.match(value):
        errors.add(
            camel(field),
            "format",
            f"{camel(field)} must be 1..64 characters (letters, digits, spaces, .,'/&()+:-)",
        )


def check_account(errors: Collector, field: str, value: str) -> None:
    """Record a broken rule if ``value`` is not a valid customer account number."""
    if not ACCOUNT_RE.match(value):
        errors.add(
            field,
            "format",
            "customer account must be 1..64 letters, digits, '.', '_', ':' or '-'",
        )


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
