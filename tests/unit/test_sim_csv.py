"""SIM import CSV: the template, header rules and row-level problems named by column."""

from __future__ import annotations

from datetime import date

from commands.sim_csv import TEMPLATE_COLUMNS, SimRowError, parse_sim_csv, template_csv
from domain.sim_rules import SimStatus, luhn_digit

HEADER = "simNumber,iccid,imsi,msisdn,provider,status,ipAddress,apn,dataLimit,activationDate"


def iccid(body: str = "894450001234567890") -> str:
    return body + luhn_digit(body)


def test_the_template_has_exactly_the_columns_and_a_valid_example() -> None:
    lines = template_csv().split("\r\n")
    assert lines[0] == HEADER == ",".join(TEMPLATE_COLUMNS)
    parsed = parse_sim_csv(template_csv())
    assert parsed.errors == []
    (row,) = parsed.rows
    assert row.row.status is SimStatus.ACTIVE
    assert row.row.spec.activation_date == date(2025, 1, 31)
    assert row.row.spec.data_limit_mb == 50


def test_header_in_any_order_and_case_but_complete_and_known() -> None:
    shuffled = ",".join(reversed(HEADER.upper().split(",")))
    parsed = parse_sim_csv(f"{shuffled}\n,,,,,Vodafone,,,{iccid()},S-1\n")
    assert parsed.errors == [] and parsed.rows[0].row.spec.sim_number == "S-1"
    missing = parse_sim_csv(HEADER.replace(",apn", "") + "\n")
    assert missing.errors == [SimRowError(1, "apn", "missing column apn")]
    extra = parse_sim_csv(HEADER + ",colour\n")
    assert [(e.line, e.field) for e in extra.errors] == [(1, "header")]


def test_blank_status_is_in_stock_and_statuses_read_in_any_spelling() -> None:
    rows = "\n".join(
        f",{iccid('89445000123456789' + str(n))},,,Vodafone,{status},,,,"
        for n, status in enumerate(["", "in stock", "Suspended", "TERMINATED"])
    )
    parsed = parse_sim_csv(f"{HEADER}\n{rows}\n")
    assert [r.row.status for r in parsed.rows] == [
        SimStatus.IN_STOCK,
        SimStatus.IN_STOCK,
        SimStatus.SUSPENDED,
        SimStatus.TERMINATED,
    ]


def test_every_problem_is_named_by_line_and_column() -> None:
    bad = iccid()[:-1] + str((int(iccid()[-1]) + 1) % 10)
    parsed = parse_sim_csv(
        f"{HEADER}\n"
        f"S 1,{bad},123,+0,,gone,1.2.3,_apn,1.5,2025-13-01\n"
        f",{iccid()},,,Vodafone,,,,,\n"
        f",{iccid()},,,Vodafone,,,,,\n"
        f",{iccid()}\n"
    )
    assert sorted((e.line, e.field) for e in parsed.errors) == [
        (2, "activationDate"),
        (2, "apn"),
        (2, "dataLimit"),
        (2, "iccid"),
        (2, "imsi"),
        (2, "ipAddress"),
        (2, "msisdn"),
        (2, "provider"),
        (2, "simNumber"),
        (2, "status"),
        (4, "iccid"),
        (5, "row"),
    ]
    assert [r.line for r in parsed.rows] == [3]


def test_empty_and_headless_files_are_refused_whole() -> None:
    assert parse_sim_csv("").errors[0].field == "file"
    assert parse_sim_csv(HEADER + "\n").errors[0].reason == "the file has a header but no SIM rows"
    assert parse_sim_csv(b"\xff\xfe").errors[0].field == "file"
