"""Field rules of SIM cards: ICCID (with its Luhn check digit), IMSI, MSISDN, APN, IP address."""

from __future__ import annotations

import enum
import ipaddress
import re
from datetime import date

import msgspec

from domain.errors import Collector
from domain.text import CODE_RE, CODE_RULE, NAME_RE, NAME_RULE, check_identifier

ICCID_RULE = "19 or 20 digits starting with 89 (ITU-T E.118) whose last digit is the Luhn check"
IMSI_RULE = "15 digits (ITU-T E.212)"
MSISDN_RE = re.compile(r"\+?[1-9][0-9]{7,14}")
MSISDN_RULE = "8..15 digits in international form (E.164), optionally after '+', no leading 0"
APN_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,99})")
APN_RULE = "1..100 letters, digits, '.' or '-', starting alphanumeric"
MAX_DATA_LIMIT_MB = 10**9
"""1 PB a month: more than any metering SIM plan; a larger figure is a typo or a unit mix-up."""


class SimStatus(enum.StrEnum):
    """Where a SIM card is in its life: bought, in service, paused, or ended for good."""

    IN_STOCK = "IN_STOCK"
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    TERMINATED = "TERMINATED"


TRANSITIONS: dict[SimStatus, frozenset[SimStatus]] = {
    SimStatus.IN_STOCK: frozenset({SimStatus.ACTIVE, SimStatus.TERMINATED}),
    SimStatus.ACTIVE: frozenset({SimStatus.SUSPENDED, SimStatus.TERMINATED}),
    SimStatus.SUSPENDED: frozenset({SimStatus.ACTIVE, SimStatus.TERMINATED}),
    SimStatus.TERMINATED: frozenset(),
}
"""The lifecycle: in stock → active ↔ suspended; any state but terminated → terminated."""


def luhn_valid(digits: str) -> bool:
    """True when the last digit of ``digits`` is the Luhn check digit of the others."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def luhn_digit(payload: str) -> str:
    """The Luhn check digit to append to ``payload`` (all digits)."""
    for digit in "0123456789":
        if luhn_valid(payload + digit):
            return digit
    raise AssertionError("unreachable: one of ten digits always completes the sum")


def normalize_iccid(value: str) -> str:
    """The ICCID as stored: spaces and dashes between digit groups removed."""
    return value.strip().replace(" ", "").replace("-", "")


def check_iccid(errors: Collector, value: str, field: str = "iccid") -> None:
    """Record a broken rule unless ``value`` is an ICCID with a correct Luhn check digit."""
    iccid = normalize_iccid(value)
    if not (iccid.isascii() and iccid.isdigit() and 19 <= len(iccid) <= 20):
        errors.add(field, "format", f"{field} must be {ICCID_RULE}")
    elif not iccid.startswith("89"):
        errors.add(field, "prefix", f"{field} must start with 89 (telecom industry identifier)")
    elif not luhn_valid(iccid):
        errors.add(
            field,
            "luhn",
            f"{field} {iccid} fails its Luhn check: the last digit should be "
            f"{luhn_digit(iccid[:-1])}",
        )


class SimSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What an operator knows of a SIM card when it enters the stock."""

    iccid: str
    provider: str
    sim_number: str | None = None
    """The operator's own label for the card (e.g. printed on the carrier); not unique."""
    imsi: str | None = None
    msisdn: str | None = None
    apn: str | None = None
    ip_address: str | None = None
    data_limit_mb: int | None = None
    activation_date: date | None = None

    def check(self) -> None:
        """Raise ``ValidationFailed`` naming every field rule this spec breaks."""
        errors = Collector()
        check_iccid(errors, self.iccid)
        if self.sim_number is not None:
            check_identifier(errors, "simNumber", self.sim_number, CODE_RE, CODE_RULE)
        if self.imsi is not None and not (
            self.imsi.isascii() and self.imsi.isdigit() and len(self.imsi) == 15
        ):
            errors.add("imsi", "format", f"imsi must be {IMSI_RULE}")
        if self.msisdn is not None:
            check_identifier(errors, "msisdn", self.msisdn, MSISDN_RE, MSISDN_RULE)
        check_service(
            errors,
            provider=self.provider,
            apn=self.apn,
            ip_address=self.ip_address,
            data_limit_mb=self.data_limit_mb,
        )
        errors.raise_if_any()

    def normalized(self) -> SimSpec:
        """The spec as recorded: ICCID without separators, IP address in canonical form."""
        return msgspec.structs.replace(
            self,
            iccid=normalize_iccid(self.iccid),
            provider=self.provider.strip(),
            ip_address=canonical_ip(self.ip_address),
        )


def check_service(
    errors: Collector,
    *,
    provider: str,
    apn: str | None,
    ip_address: str | None,
    data_limit_mb: int | None,
) -> None:
    """Record the broken rules of a SIM's service fields (those an update may change)."""
    check_identifier(errors, "provider", provider.strip(), NAME_RE, NAME_RULE)
    if apn is not None:
        check_identifier(errors, "apn", apn, APN_RE, APN_RULE)
    if ip_address is not None:
        try:
            ipaddress.ip_address(ip_address.strip())
        except ValueError:
            reason = f"ipAddress must be an IPv4 or IPv6 address, got {ip_address!r}"
            errors.add("ipAddress", "format", reason)
    if data_limit_mb is not None:
        if isinstance(data_limit_mb, bool) or not isinstance(data_limit_mb, int):
            errors.add("dataLimit", "number", "dataLimit must be a whole number of MB")
        elif data_limit_mb < 0:
            errors.add("dataLimit", "non-negative", "dataLimit must be 0 MB or more")
        elif data_limit_mb > MAX_DATA_LIMIT_MB:
            errors.add("dataLimit", "maximum", f"dataLimit must be at most {MAX_DATA_LIMIT_MB} MB")


def canonical_ip(value: str | None) -> str | None:
    """An IP address in its canonical text form (None stays None; invalid text is kept)."""
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return value
