"""Customer import CSV: the template's ten columns, parsed into checked customers."""

from __future__ import annotations

import csv
import io
from datetime import date

import msgspec

from commands.csv_header import read_header
from commands.customers import NewCustomer
from commands.meter_csv import _records, _text
from domain.customer import CustomerProfile, CustomerType
from domain.errors import Collector, ValidationFailed
from domain.personal_data import PersonalData
from domain.text import SERIAL_RE, SERIAL_RULE
from domain.values import check_account

TEMPLATE_COLUMNS: tuple[str, ...] = (
    "customerName",
    "accountNumber",
    "address",
    "phoneNumber",
    "email",
    "area",
    "meterAssigned",
    "customerType",
    "tariffPlan",
    "connectionDate",
)
_CANONICAL = {name.casefold(): name for name in TEMPLATE_COLUMNS}
_COLUMN_OF_FIELD = {"name": "customerName", "phone": "phoneNumber"}
DEFAULT_TARIFF_PLAN = "standard"


class CustomerRowError(msgspec.Struct, frozen=True, rename="camel"):
    """One problem in the file: its physical line, the CSV column and what is wrong."""

    line: int
    field: str
    reason: str
    account: str | None = None


class ParsedCustomer(msgspec.Struct, frozen=True):
    """A row that passed every rule: the customer and the meter to assign, if any."""

    line: int
    customer: NewCustomer
    meter: str | None


class ParsedCustomers(msgspec.Struct, frozen=True):
    """The good rows of a file and every problem found in the others."""

    rows: list[ParsedCustomer]
    errors: list[CustomerRowError]


def template_csv() -> str:
    """The import template: the header and one realistic example row, CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(TEMPLATE_COLUMNS)
    writer.writerow(
        (
            "Jane Example",
            "ACC-10001",
            "12 Example Street, Springfield",
            "+1 555 0100",
            "jane@example.org",
            "Zone A",
            "SN-2024-000123",
            "residential",
            "standard",
            "2024-01-31",
        )
    )
    return out.getvalue()


def parse_customer_csv(data: bytes | str, *, max_rows: int = 100_000) -> ParsedCustomers:
    """Parse an import file into checked customers plus every problem, by physical line.

    The header must name exactly the template's columns, in any order and letter case. Blank
    ``customerType`` means residential, blank ``tariffPlan`` standard; ``connectionDate`` is
    ``YYYY-MM-DD`` or blank; ``meterAssigned`` is one meter serial or blank.
    """
    try:
        text = _text(data)
    except UnicodeDecodeError as exc:
        reason = f"the file is not UTF-8 text (invalid byte at offset {exc.start})"
        return ParsedCustomers(rows=[], errors=[CustomerRowError(1, "file", reason)])
    records = _records(text)
    first = next(records, None)
    if first is None:
        reason = "the file is empty; expected a header row: " + ",".join(TEMPLATE_COLUMNS)
        return ParsedCustomers(rows=[], errors=[CustomerRowError(1, "file", reason)])
    header_line, header_cells, header_problem = first
    if header_problem is not None:
        return ParsedCustomers(
            rows=[], errors=[CustomerRowError(header_line, "header", header_problem)]
        )
    names, header_errors = _header(header_line, header_cells)
    if header_errors:
        return ParsedCustomers(rows=[], errors=header_errors)
    rows: list[ParsedCustomer] = []
    errors: list[CustomerRowError] = []
    first_line_of: dict[str, int] = {}
    count = 0
    for line, cells, problem in records:
        count += 1
        if count > max_rows:
            reason = f"the file has more than {max_rows} customer rows; split it"
            return ParsedCustomers(rows=[], errors=[CustomerRowError(1, "file", reason)])
        if problem is not None:
            errors.append(CustomerRowError(line, "row", problem))
            continue
        cell = dict(zip(names, (c.strip() for c in cells), strict=False))
        account = cell.get("accountNumber") or None
        if len(cells) != len(names):
            reason = f"expected {len(names)} cells as in the header, found {len(cells)}"
            errors.append(CustomerRowError(line, "row", reason, account))
            continue
        problems: list[tuple[str, str]] = []
        if account is not None:
            earlier = first_line_of.setdefault(account, line)
            if earlier != line:
                problems.append(
                    ("accountNumber", f"account {account} already appears on line {earlier}")
                )
        parsed = _row(line, cell, problems)
        if problems or parsed is None:
            errors.extend(CustomerRowError(line, f, reason, account) for f, reason in problems)
        else:
            rows.append(parsed)
    if count == 0:
        reason = "the file has a header but no customer rows"
        return ParsedCustomers(rows=[], errors=[CustomerRowError(1, "file", reason)])
    return ParsedCustomers(rows=rows, errors=errors)


def _header(line: int, cells: list[str]) -> tuple[list[str], list[CustomerRowError]]:
    header = read_header(cells, _CANONICAL, TEMPLATE_COLUMNS)
    errors = [CustomerRowError(line, column, reason) for column, reason in header.problems]
    if header.unknown:
        unknown = ", ".join(header.unknown)
        errors.append(CustomerRowError(line, "header", f"unknown columns {unknown}"))
    return header.names, errors


def _row(line: int, cell: dict[str, str], problems: list[tuple[str, str]]) -> ParsedCustomer | None:
    kind_text = cell["customerType"].lower() or CustomerType.RESIDENTIAL.value
    try:
        kind = CustomerType(kind_text)
    except ValueError:
        allowed = ", ".join(t.value for t in CustomerType)
        problems.append(("customerType", f"customerType must be one of {allowed}"))
        kind = CustomerType.RESIDENTIAL
    connected: date | None = None
    if cell["connectionDate"]:
        try:
            connected = date.fromisoformat(cell["connectionDate"])
        except ValueError:
            problems.append(("connectionDate", "connectionDate must be a date YYYY-MM-DD"))
    meter = cell["meterAssigned"] or None
    if meter is not None and not SERIAL_RE.fullmatch(meter):
        problems.append(("meterAssigned", f"meterAssigned must be a meter serial: {SERIAL_RULE}"))
    new = NewCustomer(
        account=cell["accountNumber"],
        personal=PersonalData(
            name=cell["customerName"],
            address=cell["address"],
            phone=cell["phoneNumber"],
            email=cell["email"],
        ),
        profile=CustomerProfile(
            area=cell["area"],
            customer_type=kind,
            tariff_plan=cell["tariffPlan"] or DEFAULT_TARIFF_PLAN,
            connection_date=connected,
        ),
    )
    errors = Collector()
    check_account(errors, "accountNumber", new.account)
    new.personal.check(errors)
    new.profile.check(errors)
    try:
        errors.raise_if_any()
    except ValidationFailed as exc:
        problems.extend((_COLUMN_OF_FIELD.get(e.field, e.field), e.message) for e in exc.errors)
    if problems:
        return None
    return ParsedCustomer(line=line, customer=new, meter=meter)
