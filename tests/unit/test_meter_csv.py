"""Parsing of the meter import CSV: mapping, every malformed case, and line numbers."""

from __future__ import annotations

import pytest

from commands.meter_csv import (
    TEMPLATE_COLUMNS,
    ParsedCsv,
    RowError,
    parse_meter_csv,
    template_csv,
)
from domain.dlms_profile import Clients
from domain.values import ConnectionProfile, MeterSpec, SecurityLevel, Transport

GOOD: dict[str, str] = {
    "meterNumber": "SN-0001",
    "concentratorId": "DC-0042",
    "meterType": "3-phase CT meter",
    "brand": "Kaifa",
    "model": "MA309M",
    "firmware": "1.0.2",
    "ipAddress": "127.20.30.40",
    "port": "4059",
    "area": "Zone A",
    "customer": "ACC-1001",
    "simCard": "8944500012345678901",
}
CONNECTION_AND_PHASES = ("phases", "transport", "clientAddress", "serverAddress", "security")


def row(columns: tuple[str, ...] = TEMPLATE_COLUMNS, /, **cells: str) -> str:
    """One CSV line of GOOD values with ``cells`` overriding, in ``columns`` order."""
    values = GOOD | cells
    return ",".join(values.get(column, "") for column in columns)


def document(*lines: str, columns: tuple[str, ...] = TEMPLATE_COLUMNS) -> str:
    """A CSV file: the header for ``columns`` followed by ``lines``."""
    return "\n".join([",".join(columns), *lines]) + "\n"


def fields(parsed: ParsedCsv) -> set[tuple[int, str]]:
    """The (line, field) pairs of every error."""
    return {(e.line, e.field) for e in parsed.errors}


# -- good files ------------------------------------------------------------------------


def test_good_file_maps_every_column() -> None:
    parsed = parse_meter_csv(
        document(row(), row(meterNumber="SN-0002", meterType="Single phase", customer=""))
    )

    assert parsed.errors == []
    assert [r.line for r in parsed.rows] == [2, 3]
    first, second = parsed.rows
    assert first.spec == MeterSpec(
        serial="SN-0001",
        manufacturer="Kaifa",
        model="MA309M",
        firmware="1.0.2",
        phases=3,
        region="Zone A",
        area="Zone A",
        connection=ConnectionProfile(host="127.20.30.40", port=4059),
        meter_type="3-phase CT meter",
        concentrator_id="DC-0042",
        sim_card="8944500012345678901",
    )
    assert first.customer == "ACC-1001"
    assert second.spec.phases == 1
    assert second.customer is None


def test_blank_optional_cells_become_none_and_blank_port_defaults() -> None:
    parsed = parse_meter_csv(document(row(concentratorId="", simCard="", customer="", port="")))

    assert parsed.errors == []
    (only,) = parsed.rows
    assert only.spec.concentrator_id is None
    assert only.spec.sim_card is None
    assert only.customer is None
    # A blank client address follows the security level through the meter's DLMS profile
    # (docs/dlms.md: NONE 16, LLS 17, HLS 1), instead of a fixed 16 for every level.
    assert only.spec.connection == ConnectionProfile(
        host="127.20.30.40",
        port=4059,
        transport=Transport.WRAPPER,
        client_address=None,
        server_address=1,
        security=SecurityLevel.NONE,
    )
    assert Clients().for_level(only.spec.connection.security) == 16


def test_cells_are_trimmed() -> None:
    parsed = parse_meter_csv(document(row(meterNumber="  SN-9 ", ipAddress=" 127.0.0.9 ")))

    assert parsed.errors == []
    assert parsed.rows[0].spec.serial == "SN-9"
    assert parsed.rows[0].spec.connection.host == "127.0.0.9"


def test_header_is_case_insensitive_trimmed_and_in_any_order() -> None:
    columns = tuple(reversed(TEMPLATE_COLUMNS))
    header = ",".join(f"  {c.upper()} " for c in columns)
    text = header + "\n" + row(columns) + "\n"

    parsed = parse_meter_csv(text)

    assert parsed.errors == []
    assert parsed.rows[0].spec.serial == "SN-0001"
    assert parsed.rows[0].spec.manufacturer == "Kaifa"


def test_optional_columns_fill_the_connection_profile_and_phases() -> None:
    columns = (*TEMPLATE_COLUMNS, *CONNECTION_AND_PHASES)
    line = row(
        columns,
        meterType="Smart meter",
        phases="1",
        transport="hdlc",
        clientAddress="48",
        serverAddress="17",
        security="hls-gmac",
    )

    parsed = parse_meter_csv(document(line, columns=columns))

    assert parsed.errors == []
    spec = parsed.rows[0].spec
    assert spec.phases == 1
    assert spec.connection == ConnectionProfile(
        host="127.20.30.40",
        port=4059,
        transport=Transport.HDLC,
        client_address=48,
        server_address=17,
        security=SecurityLevel.HLS_GMAC,
    )


def test_blank_optional_cells_keep_the_defaults() -> None:
    columns = (*TEMPLATE_COLUMNS, *CONNECTION_AND_PHASES)

    parsed = parse_meter_csv(document(row(columns), columns=columns))

    assert parsed.errors == []
    assert parsed.rows[0].spec.phases == 3
    assert parsed.rows[0].spec.connection == ConnectionProfile(host="127.20.30.40")


@pytest.mark.parametrize(
    ("region_cell", "default_region", "expected"),
    [
        ("North", None, "North"),
        ("North", "South", "North"),
        ("", "South", "South"),
        ("", None, "Zone A"),
        (None, "South", "South"),
        (None, None, "Zone A"),
    ],
)
def test_region_comes_from_column_then_default_then_area(
    region_cell: str | None, default_region: str | None, expected: str
) -> None:
    if region_cell is None:
        text = document(row())
    else:
        columns = (*TEMPLATE_COLUMNS, "region")
        text = document(row(columns, region=region_cell), columns=columns)

    parsed = parse_meter_csv(text, default_region=default_region)

    assert parsed.errors == []
    assert parsed.rows[0].spec.region == expected


@pytest.mark.parametrize(
    ("meter_type", "phases"),
    [
        ("3-phase CT meter", 3),
        ("3P4W", 3),
        ("Three phase", 3),
        ("POLYPHASE direct", 3),
        ("Single phase", 1),
        ("1P2W 100A", 1),
        ("monophase", 1),
        ("E350 single-phase", 1),
    ],
)
def test_phases_are_inferred_from_meter_type(meter_type: str, phases: int) -> None:
    parsed = parse_meter_csv(document(row(meterType=meter_type)))

    assert parsed.errors == []
    assert parsed.rows[0].spec.phases == phases
    assert parsed.rows[0].spec.meter_type == meter_type


def test_bom_is_accepted_in_bytes_and_text() -> None:
    text = document(row()).replace("\n", "\r\n")

    for data in (text.encode("utf-8-sig"), "\ufeff" + text, text.encode()):
        parsed = parse_meter_csv(data)
        assert parsed.errors == []
        assert [r.spec.serial for r in parsed.rows] == ["SN-0001"]


def test_template_round_trips_with_no_errors() -> None:
    template = template_csv()

    parsed = parse_meter_csv(template)

    assert parsed.errors == []
    assert len(parsed.rows) == 1
    assert template.splitlines()[0].split(",") == list(TEMPLATE_COLUMNS)
    assert template.count("\r\n") == template.count("\n") == 2
    assert parse_meter_csv(template.encode()) == parsed


# -- header problems -------------------------------------------------------------------


def test_missing_columns_give_one_error_each_and_no_rows() -> None:
    columns = tuple(c for c in TEMPLATE_COLUMNS if c not in ("port", "simCard"))

    parsed = parse_meter_csv(document(row(columns), columns=columns))

    assert parsed.rows == []
    assert sorted(parsed.errors, key=lambda e: e.field) == [
        RowError(1, "port", "missing column port"),
        RowError(1, "simCard", "missing column simCard"),
    ]


def test_unknown_columns_are_named_and_reject_the_file() -> None:
    columns = (*TEMPLATE_COLUMNS, "Phase", "notes")

    parsed = parse_meter_csv(document(row(columns), columns=columns))

    assert parsed.rows == []
    (error,) = parsed.errors
    assert (error.line, error.field) == (1, "header")
    assert "'Phase'" in error.reason
    assert "'notes'" in error.reason


def test_duplicate_header_column_is_an_error() -> None:
    columns = (*TEMPLATE_COLUMNS, "PORT")

    parsed = parse_meter_csv(document(row(columns), columns=columns))

    assert parsed.rows == []
    assert fields(parsed) == {(1, "port")}


# -- row problems ----------------------------------------------------------------------


@pytest.mark.parametrize("port", ["abc", "40.59", "-1", "4059.0", "1e3", "99999999999999"])
def test_port_must_be_a_whole_number(port: str) -> None:
    parsed = parse_meter_csv(document(row(port=port)))

    assert parsed.rows == []
    assert fields(parsed) == {(2, "port")}
    assert parsed.errors[0].serial == "SN-0001"


@pytest.mark.parametrize("port", ["0", "65536"])
def test_port_out_of_range_is_reported_on_the_port_column(port: str) -> None:
    parsed = parse_meter_csv(document(row(port=port)))

    assert fields(parsed) == {(2, "port")}
    assert "outside 1..65535" in parsed.errors[0].reason


@pytest.mark.parametrize("ip", ["999.1.1.1", "10.0.0", "bad host!", "", "-lead.example"])
def test_bad_ip_address(ip: str) -> None:
    parsed = parse_meter_csv(document(row(ipAddress=ip)))

    assert parsed.rows == []
    assert fields(parsed) == {(2, "ipAddress")}


@pytest.mark.parametrize("meter_type", ["Smart meter", "", "E350", "1 or 3 phase", "DTSY1352"])
def test_phases_that_cannot_be_inferred_ask_for_a_phases_column(meter_type: str) -> None:
    parsed = parse_meter_csv(document(row(meterType=meter_type)))

    assert parsed.rows == []
    (error,) = parsed.errors
    assert (error.line, error.field) == (2, "phases")
    assert "phases column" in error.reason


@pytest.mark.parametrize(("cell", "words"), [("2", "1 or 3"), ("three", "whole number")])
def test_bad_phases_cell(cell: str, words: str) -> None:
    columns = (*TEMPLATE_COLUMNS, "phases")

    parsed = parse_meter_csv(document(row(columns, phases=cell), columns=columns))

    (error,) = parsed.errors
    assert (error.line, error.field) == (2, "phases")
    assert words in error.reason


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("transport", "TCP"),
        ("security", "AES"),
        ("clientAddress", "x"),
        ("clientAddress", "200"),
        ("serverAddress", "20000"),
    ],
)
def test_bad_connection_cells(column: str, cell: str) -> None:
    # LLS, so that a non-public client address breaks no rule but its own range.
    columns = (*TEMPLATE_COLUMNS, *dict.fromkeys((column, "security")))
    cells = {"security": "LLS", column: cell}

    parsed = parse_meter_csv(document(row(columns, **cells), columns=columns))

    assert parsed.rows == []
    assert fields(parsed) == {(2, column)}


def test_non_public_client_without_security_is_reported_on_security() -> None:
    columns = (*TEMPLATE_COLUMNS, "clientAddress")

    parsed = parse_meter_csv(document(row(columns, clientAddress="32"), columns=columns))

    assert fields(parsed) == {(2, "security")}


@pytest.mark.parametrize(
    ("column", "cell"),
    [
        ("meterNumber", "-starts-with-dash"),
        ("brand", ""),
        ("model", "x" * 65),
        ("firmware", " "),
        ("area", "#zone"),
        ("customer", "bad account!"),
        ("concentratorId", "c" * 65),
        ("simCard", "s" * 65),
        ("meterType", "3-phase " + "x" * 60),
    ],
)
def test_each_field_rule_is_reported_on_its_csv_column(column: str, cell: str) -> None:
    parsed = parse_meter_csv(document(row(**{column: cell})))

    assert parsed.rows == []
    assert fields(parsed) == {(2, column)}


def test_bad_default_region_is_reported_on_region() -> None:
    parsed = parse_meter_csv(document(row()), default_region="#north")

    assert fields(parsed) == {(2, "region")}


def test_bad_area_used_as_region_is_reported_once() -> None:
    parsed = parse_meter_csv(document(row(area="#zone")))

    assert fields(parsed) == {(2, "area")}
    assert len(parsed.errors) == 1


def test_every_bad_field_of_a_row_is_reported_and_good_rows_survive() -> None:
    bad = row(
        meterNumber="bad serial",
        brand="Kaifa*",
        port="x",
        ipAddress="300.1.1.1",
        customer="no spaces allowed",
        meterType="Smart meter",
    )

    parsed = parse_meter_csv(document(row(), bad, row(meterNumber="SN-0003")))

    assert [r.line for r in parsed.rows] == [2, 4]
    assert fields(parsed) == {
        (3, "meterNumber"),
        (3, "brand"),
        (3, "port"),
        (3, "ipAddress"),
        (3, "customer"),
        (3, "phases"),
    }
    assert {e.serial for e in parsed.errors} == {"bad serial"}


def test_duplicate_serial_is_an_error_on_each_later_occurrence() -> None:
    parsed = parse_meter_csv(
        document(
            row(meterNumber="SN-7"),
            row(meterNumber="SN-8"),
            row(meterNumber="sn-7"),
            row(meterNumber="Sn-7"),
        )
    )

    assert [r.line for r in parsed.rows] == [2, 3]
    assert fields(parsed) == {(4, "meterNumber"), (5, "meterNumber")}
    assert all("line 2" in e.reason for e in parsed.errors)
    assert [e.serial for e in parsed.errors] == ["sn-7", "Sn-7"]


@pytest.mark.parametrize("cells", [",".join(["x"] * 10), row() + ",extra"])
def test_wrong_number_of_cells(cells: str) -> None:
    parsed = parse_meter_csv(document(row(meterNumber="SN-1"), cells))

    assert [r.line for r in parsed.rows] == [2]
    (error,) = parsed.errors
    assert (error.line, error.field) == (3, "row")
    assert "expected 11 cells" in error.reason


def test_serial_of_error_is_none_when_meter_number_is_blank() -> None:
    parsed = parse_meter_csv(document(row(meterNumber="")))

    assert [(e.field, e.serial) for e in parsed.errors] == [("meterNumber", None)]


def test_broken_quoting_is_reported_and_the_rest_still_parses() -> None:
    parsed = parse_meter_csv(document(row(), '"SN-2"x,' + row()[8:], row(meterNumber="SN-3")))

    assert [r.line for r in parsed.rows] == [2, 4]
    assert fields(parsed) == {(3, "row")}


# -- file problems ---------------------------------------------------------------------


def test_non_utf8_bytes_give_a_single_file_error() -> None:
    data = document(row(brand="Müller")).encode("latin-1")

    parsed = parse_meter_csv(data)

    assert parsed.rows == []
    (error,) = parsed.errors
    assert (error.line, error.field) == (1, "file")
    assert "UTF-8" in error.reason


@pytest.mark.parametrize("data", [b"", "", "\n\r\n  \n", "\ufeff"])
def test_empty_file(data: bytes | str) -> None:
    parsed = parse_meter_csv(data)

    assert parsed.rows == []
    assert fields(parsed) == {(1, "file")}


def test_header_only_is_an_error() -> None:
    parsed = parse_meter_csv(document())

    assert parsed.rows == []
    (error,) = parsed.errors
    assert (error.line, error.field) == (1, "file")
    assert "no meter rows" in error.reason


def test_more_than_max_rows_rejects_the_file() -> None:
    lines = [row(meterNumber=f"SN-{i}") for i in range(3)]

    assert len(parse_meter_csv(document(*lines), max_rows=3).rows) == 3
    parsed = parse_meter_csv(document(*lines, "x"), max_rows=3)

    assert parsed.rows == []
    (error,) = parsed.errors
    assert (error.line, error.field) == (1, "file")
    assert "more than 3" in error.reason


# -- line numbers ----------------------------------------------------------------------


def test_line_numbers_are_physical_lines_despite_blank_and_multiline_records() -> None:
    text = "\r\n".join(
        [
            ",".join(TEMPLATE_COLUMNS),  # 1
            "",  # 2
            row(meterNumber="SN-1"),  # 3
            "",  # 4
            "," * 10,  # 5: all cells blank, skipped
            row(meterNumber="SN-2", meterType='"Single\nphase"'),  # 6-7
            row(meterNumber="SN-3", port="bad"),  # 8
            "   ",  # 9
            row(meterNumber="SN-4", ipAddress="1.2.3"),  # 10
        ]
    )

    parsed = parse_meter_csv(text)

    assert [(r.line, r.spec.serial) for r in parsed.rows] == [(3, "SN-1"), (6, "SN-2")]
    assert parsed.rows[1].spec.meter_type == "Single\nphase"
    assert fields(parsed) == {(8, "port"), (10, "ipAddress")}


def test_header_after_leading_blank_lines_is_reported_on_its_own_line() -> None:
    text = "\n\n" + ",".join(TEMPLATE_COLUMNS[:-1]) + "\n" + row()[:-20] + "\n"

    parsed = parse_meter_csv(text)

    assert parsed.errors == [RowError(3, "simCard", "missing column simCard")]
