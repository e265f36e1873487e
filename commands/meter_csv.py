"""Meter import CSV: the utilities' common template, parsed into checked meter specs."""

from __future__ import annotations

import csv
import enum
import io
import re
from collections.abc import Iterator
from typing import TypeVar

import msgspec

from commands.csv_header import read_header
from domain.errors import Collector, ValidationFailed
from domain.values import ConnectionProfile, MeterSpec, SecurityLevel, Transport, check_account

TEMPLATE_COLUMNS: tuple[str, ...] = (
    "meterNumber",
    "concentratorId",
    "meterType",
    "brand",
    "model",
    "firmware",
    "ipAddress",
    "port",
    "area",
    "customer",
    "simCard",
)
OPTIONAL_COLUMNS: tuple[str, ...] = (
    "region",
    "phases",
    "transport",
    "clientAddress",
    "serverAddress",
    "security",
)

_CANONICAL = {name.casefold(): name for name in TEMPLATE_COLUMNS + OPTIONAL_COLUMNS}
_DEFAULT_CONNECTION = ConnectionProfile(host="-")
_COLUMN_OF_FIELD = {
    "serial": "meterNumber",
    "manufacturer": "brand",
    "meterType": "meterType",
    "concentratorId": "concentratorId",
    "simCard": "simCard",
    "connection.host": "ipAddress",
    "connection.port": "port",
    "connection.transport": "transport",
    "connection.clientAddress": "clientAddress",
    "connection.serverAddress": "serverAddress",
    "connection.security": "security",
}
# A phase count is a lone digit: model codes such as "E350" (a single-phase meter) must not
# read as three-phase just because they contain a 3.
_THREE_PHASE = re.compile(r"(?<!\d)3(?!\d)|three|poly", re.IGNORECASE)
_ONE_PHASE = re.compile(r"(?<!\d)1(?!\d)|single|mono", re.IGNORECASE)
_MAX_DIGITS = 9

E = TypeVar("E", bound=enum.StrEnum)


class RowError(msgspec.Struct, frozen=True):
    """One problem in the file: its physical line, the CSV column and what is wrong."""

    line: int
    field: str
    reason: str
    serial: str | None = None


class ParsedRow(msgspec.Struct, frozen=True):
    """A row that passed every rule: the meter to register and its optional customer."""

    line: int
    spec: MeterSpec
    customer: str | None


class ParsedCsv(msgspec.Struct, frozen=True):
    """The good rows of a file and every problem found in the others."""

    rows: list[ParsedRow]
    errors: list[RowError]


def template_csv() -> str:
    """The import template: the header and one realistic example row, CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(TEMPLATE_COLUMNS)
    writer.writerow(
        (
            "SN-2024-000123",
            "DC-0042",
            "Single-phase smart meter",
            "Iskraemeco",
            "AM550",
            "2.1.4",
            "127.20.30.40",
            "4059",
            "Zone A",
            "ACC-10001",
            "8944500012345678901",
        )
    )
    return out.getvalue()


def parse_meter_csv(
    data: bytes | str, *, default_region: str | None = None, max_rows: int = 100_000
) -> ParsedCsv:
    """Parse an import file into checked meter specs plus every problem, by physical line.

    The header (the first non-blank line) must name all template columns, in any order and
    letter case; it may add the optional columns and no others. Any header problem rejects
    the whole file. Blank lines, and lines whose cells are all blank, are skipped.

    A meter's region is its ``region`` cell when the file has that column and the cell is
    not blank, else ``default_region`` when given, else the meter's ``area``. Its phases come
    from the ``phases`` cell likewise, else from a phase count or word in ``meterType``.
    """
    try:
        text = _text(data)
    except UnicodeDecodeError as exc:
        reason = f"the file is not UTF-8 text (invalid byte at offset {exc.start})"
        return ParsedCsv(rows=[], errors=[RowError(1, "file", reason)])
    records = _records(text)
    first = next(records, None)
    if first is None:
        reason = "the file is empty; expected a header row: " + ",".join(TEMPLATE_COLUMNS)
        return ParsedCsv(rows=[], errors=[RowError(1, "file", reason)])
    header_line, header_cells, header_problem = first
    if header_problem is not None:
        return ParsedCsv(rows=[], errors=[RowError(header_line, "header", header_problem)])
    names, header_errors = _header(header_line, header_cells)
    if header_errors:
        return ParsedCsv(rows=[], errors=header_errors)
    parser = _RowParser(names, default_region)
    count = 0
    for line, cells, problem in records:
        count += 1
        if count > max_rows:
            reason = f"the file has more than {max_rows} meter rows; split it into smaller files"
            return ParsedCsv(rows=[], errors=[RowError(1, "file", reason)])
        if problem is not None:
            parser.errors.append(RowError(line, "row", problem))
        else:
            parser.parse(line, cells)
    if count == 0:
        reason = "the file has a header but no meter rows"
        return ParsedCsv(rows=[], errors=[RowError(1, "file", reason)])
    return ParsedCsv(rows=parser.rows, errors=parser.errors)


def _text(data: bytes | str) -> str:
    if isinstance(data, bytes):
        return data.decode("utf-8-sig")
    return data.removeprefix("\ufeff")


def _records(text: str) -> Iterator[tuple[int, list[str], str | None]]:
    """Non-blank records, each with the line it starts on and why it is unreadable, if it is."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    end = 0
    while True:
        start = end + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            # The reader recovers at the next record, so the rest of the file still counts.
            end = reader.line_num
            yield start, [], f"unreadable CSV: {exc}"
            continue
        end = reader.line_num
        if any(cell.strip() for cell in cells):
            yield start, cells, None


def _header(line: int, cells: list[str]) -> tuple[list[str], list[RowError]]:
    """The canonical column names of a header row, or the reasons it is unusable."""
    header = read_header(cells, _CANONICAL, TEMPLATE_COLUMNS)
    errors = [RowError(line, column, reason) for column, reason in header.problems]
    if header.unknown:
        unknown = ", ".join(header.unknown)
        optional = ", ".join(OPTIONAL_COLUMNS)
        reason = f"unknown columns {unknown}; the optional columns are {optional}"
        errors.append(RowError(line, "header", reason))
    return header.names, errors


class _RowParser:
    """Turns data rows into meter specs, remembering serials to catch duplicates."""

    def __init__(self, names: list[str], default_region: str | None) -> None:
        self.names = names
        self.default_region = default_region
        self.rows: list[ParsedRow] = []
        self.errors: list[RowError] = []
        self.first_line_of: dict[str, int] = {}

    def parse(self, line: int, cells: list[str]) -> None:
        """Add the row to ``rows`` when it is good, else its every problem to ``errors``."""
        cell = dict(zip(self.names, (c.strip() for c in cells), strict=False))
        serial = cell.get("meterNumber") or None
        if len(cells) != len(self.names):
            reason = f"expected {len(self.names)} cells as in the header, found {len(cells)}"
            self.errors.append(RowError(line, "row", reason, serial))
            return
        problems: list[tuple[str, str]] = []
        if serial is not None:
            first = self.first_line_of.setdefault(serial.upper(), line)
            if first != line:
                problems.append(("meterNumber", f"meter {serial} already appears on line {first}"))
        spec, customer = _spec(cell, self.default_region, problems)
        if problems:
            self.errors.extend(RowError(line, f, reason, serial) for f, reason in problems)
        else:
            self.rows.append(ParsedRow(line=line, spec=spec, customer=customer))


def _spec(
    cell: dict[str, str], default_region: str | None, problems: list[tuple[str, str]]
) -> tuple[MeterSpec, str | None]:
    """Build the row's spec, adding every broken rule to ``problems`` by CSV column."""
    unparsed = len(problems)
    connection = ConnectionProfile(
        host=cell["ipAddress"],
        port=_whole(cell, "port", _DEFAULT_CONNECTION.port, problems),
        transport=_choice(cell, "transport", Transport, _DEFAULT_CONNECTION.transport, problems),
        client_address=(
            _whole(cell, "clientAddress", 0, problems) if cell.get("clientAddress") else None
        ),
        server_address=_whole(cell, "serverAddress", _DEFAULT_CONNECTION.server_address, problems),
        security=_choice(cell, "security", SecurityLevel, _DEFAULT_CONNECTION.security, problems),
    )
    region_given = bool(cell.get("region") or default_region)
    spec = MeterSpec(
        serial=cell["meterNumber"],
        manufacturer=cell["brand"],
        model=cell["model"],
        firmware=cell["firmware"],
        phases=_phases(cell, problems),
        region=cell.get("region") or default_region or cell["area"],
        area=cell["area"],
        connection=connection,
        meter_type=cell["meterType"] or None,
        concentrator_id=cell["concentratorId"] or None,
        sim_card=cell["simCard"] or None,
    )
    # Cells that did not parse were given stand-in values; their own error already names them.
    reported = {column for column, _ in problems[unparsed:]}
    try:
        spec.check()
    except ValidationFailed as failed:
        for error in failed.errors:
            if error.field == "region" and not region_given:
                continue  # the region is the area, whose own error says the same
            column = _COLUMN_OF_FIELD.get(error.field, error.field)
            if column not in reported:
                problems.append((column, error.message))
    customer = cell["customer"] or None
    if customer is not None:
        errors = Collector()
        check_account(errors, "customer", customer)
        problems.extend((e.field, e.message) for e in errors.errors)
    return spec, customer


def _phases(cell: dict[str, str], problems: list[tuple[str, str]]) -> int:
    """The row's phase count: its ``phases`` cell, else what ``meterType`` says."""
    if cell.get("phases"):
        return _whole(cell, "phases", 1, problems)
    meter_type = cell["meterType"]
    three = _THREE_PHASE.search(meter_type) is not None
    one = _ONE_PHASE.search(meter_type) is not None
    if three != one:
        return 3 if three else 1
    problems.append(
        (
            "phases",
            f"cannot tell the phases from meterType {meter_type!r}; "
            "add a phases column with 1 or 3",
        )
    )
    return 1


def _whole(cell: dict[str, str], column: str, default: int, problems: list[tuple[str, str]]) -> int:
    """The cell as a non-negative whole number; ``default`` when blank or absent."""
    raw = cell.get(column, "")
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit()):
        problems.append((column, f"{column} must be a whole number, got {raw!r}"))
        return default
    if len(raw) > _MAX_DIGITS:
        problems.append((column, f"{column} {raw} is far too large"))
        return default
    return int(raw)


def _choice(
    cell: dict[str, str],
    column: str,
    kind: type[E],
    default: E,
    problems: list[tuple[str, str]],
) -> E:
    """The cell as a member of ``kind`` (any case, '-' for '_'); ``default`` when blank."""
    raw = cell.get(column, "")
    if not raw:
        return default
    try:
        return kind(raw.upper().replace("-", "_"))
    except ValueError:
        allowed = ", ".join(kind)
        problems.append((column, f"{column} must be one of {allowed}, got {raw!r}"))
        return default
