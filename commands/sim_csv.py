"""SIM card import CSV: the template's columns, parsed into checked SIM specs and statuses.

``simNumber`` is the operator's own label for a card (often printed on its carrier or used in
the purchase order); it is optional and not unique. The ICCID is the card's identity.
"""

from __future__ import annotations

import csv
import io
from datetime import date

import msgspec

from commands.csv_header import read_header
from commands.meter_csv import _records, _text
from commands.sims import SimImportRow
from domain.errors import ValidationFailed
from domain.sim_rules import SimSpec, SimStatus, normalize_iccid

TEMPLATE_COLUMNS: tuple[str, ...] = (
    "simNumber",
    "iccid",
    "imsi",
    "msisdn",
    "provider",
    "status",
    "ipAddress",
    "apn",
    "dataLimit",
    "activationDate",
)
_CANONICAL = {name.casefold(): name for name in TEMPLATE_COLUMNS}
_COLUMN_OF_FIELD = {"simNumber": "simNumber", "ipAddress": "ipAddress", "dataLimit": "dataLimit"}
_MAX_DIGITS = 12


class SimRowError(msgspec.Struct, frozen=True, rename="camel"):
    """One problem in the file: its physical line, the CSV column and what is wrong."""

    line: int
    field: str
    reason: str
    iccid: str | None = None


class ParsedSimRow(msgspec.Struct, frozen=True):
    """A row that passed every rule: the card to add and the status it should have."""

    line: int
    row: SimImportRow


class ParsedSimCsv(msgspec.Struct, frozen=True):
    """The good rows of a file and every problem found in the others."""

    rows: list[ParsedSimRow]
    errors: list[SimRowError]


def template_csv() -> str:
    """The import template: the header and one realistic example row, CRLF line ends."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(TEMPLATE_COLUMNS)
    writer.writerow(
        (
            "SIM-000123",
            "8944500012345678909",
            "234150123456789",
            "447700900123",
            "Vodafone",
            "ACTIVE",
            "127.30.0.17",
            "iot.example",
            "50",
            "2025-01-31",
        )
    )
    return out.getvalue()


def parse_sim_csv(data: bytes | str, *, max_rows: int = 100_000) -> ParsedSimCsv:
    """Parse an import file into checked SIM specs plus every problem, by physical line.

    The header must name exactly the template's columns, in any order and letter case. A blank
    ``status`` means IN_STOCK; ``dataLimit`` is whole MB; ``activationDate`` is YYYY-MM-DD.
    """
    try:
        text = _text(data)
    except UnicodeDecodeError as exc:
        reason = f"the file is not UTF-8 text (invalid byte at offset {exc.start})"
        return ParsedSimCsv(rows=[], errors=[SimRowError(1, "file", reason)])
    records = _records(text)
    first = next(records, None)
    if first is None:
        reason = "the file is empty; expected a header row: " + ",".join(TEMPLATE_COLUMNS)
        return ParsedSimCsv(rows=[], errors=[SimRowError(1, "file", reason)])
    header_line, header_cells, header_problem = first
    if header_problem is not None:
        return ParsedSimCsv(rows=[], errors=[SimRowError(header_line, "header", header_problem)])
    names, header_errors = _header(header_line, header_cells)
    if header_errors:
        return ParsedSimCsv(rows=[], errors=header_errors)
    rows: list[ParsedSimRow] = []
    errors: list[SimRowError] = []
    first_line_of: dict[str, int] = {}
    count = 0
    for line, cells, problem in records:
        count += 1
        if count > max_rows:
            reason = f"the file has more than {max_rows} SIM rows; split it into smaller files"
            return ParsedSimCsv(rows=[], errors=[SimRowError(1, "file", reason)])
        if problem is not None:
            errors.append(SimRowError(line, "row", problem))
            continue
        cell = dict(zip(names, (c.strip() for c in cells), strict=False))
        iccid = normalize_iccid(cell.get("iccid", "")) or None
        if len(cells) != len(names):
            reason = f"expected {len(names)} cells as in the header, found {len(cells)}"
            errors.append(SimRowError(line, "row", reason, iccid))
            continue
        problems: list[tuple[str, str]] = []
        if iccid is not None:
            earlier = first_line_of.setdefault(iccid, line)
            if earlier != line:
                problems.append(("iccid", f"SIM {iccid} already appears on line {earlier}"))
        parsed = _row(cell, problems)
        if problems:
            errors.extend(SimRowError(line, f, reason, iccid) for f, reason in problems)
        else:
            rows.append(ParsedSimRow(line=line, row=parsed))
    if count == 0:
        reason = "the file has a header but no SIM rows"
        return ParsedSimCsv(rows=[], errors=[SimRowError(1, "file", reason)])
    return ParsedSimCsv(rows=rows, errors=errors)


def _header(line: int, cells: list[str]) -> tuple[list[str], list[SimRowError]]:
    header = read_header(cells, _CANONICAL, TEMPLATE_COLUMNS)
    errors = [SimRowError(line, column, reason) for column, reason in header.problems]
    if header.unknown:
        unknown = ", ".join(header.unknown)
        reason = f"unknown columns {unknown}; the columns are {','.join(TEMPLATE_COLUMNS)}"
        errors.append(SimRowError(line, "header", reason))
    return header.names, errors


def _row(cell: dict[str, str], problems: list[tuple[str, str]]) -> SimImportRow:
    """The row's card and status, adding every broken rule to ``problems`` by CSV column."""
    status = _status(cell["status"], problems)
    spec = SimSpec(
        iccid=cell["iccid"],
        provider=cell["provider"],
        sim_number=cell["simNumber"] or None,
        imsi=cell["imsi"] or None,
        msisdn=cell["msisdn"] or None,
        apn=cell["apn"] or None,
        ip_address=cell["ipAddress"] or None,
        data_limit_mb=_data_limit(cell["dataLimit"], problems),
        activation_date=_date(cell["activationDate"], problems),
    )
    try:
        spec.check()
    except ValidationFailed as failed:
        problems.extend((_COLUMN_OF_FIELD.get(e.field, e.field), e.message) for e in failed.errors)
    return SimImportRow(spec=spec, status=status)


def _status(raw: str, problems: list[tuple[str, str]]) -> SimStatus:
    if not raw:
        return SimStatus.IN_STOCK
    try:
        return SimStatus(raw.upper().replace("-", "_").replace(" ", "_"))
    except ValueError:
        allowed = ", ".join(SimStatus)
        problems.append(("status", f"status must be one of {allowed}, got {raw!r}"))
        return SimStatus.IN_STOCK


def _data_limit(raw: str, problems: list[tuple[str, str]]) -> int | None:
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()):
        problems.append(("dataLimit", f"dataLimit must be a whole number of MB >= 0, got {raw!r}"))
        return None
    if len(raw) > _MAX_DIGITS:
        problems.append(("dataLimit", f"dataLimit {raw} is far too large"))
        return None
    return int(raw)


def _date(raw: str, problems: list[tuple[str, str]]) -> date | None:
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        problems.append(
            ("activationDate", f"activationDate must be a date YYYY-MM-DD, got {raw!r}")
        )
        return None
