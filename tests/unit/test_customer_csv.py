"""Customer import CSV: exact template columns, row rules by column, duplicates (no I/O)."""

from __future__ import annotations

from datetime import date

from commands.customer_csv import TEMPLATE_COLUMNS, parse_customer_csv, template_csv
from domain.customer import CustomerType

HEADER = ",".join(TEMPLATE_COLUMNS)


def test_template_has_exactly_the_agreed_columns_and_parses_clean() -> None:
    assert HEADER == (
        "customerName,accountNumber,address,phoneNumber,email,area,meterAssigned,"
        "customerType,tariffPlan,connectionDate"
    )
    parsed = parse_customer_csv(template_csv())
    assert parsed.errors == []
    [row] = parsed.rows
    assert row.customer.account == "ACC-10001" and row.meter == "SN-2024-000123"
    assert row.customer.profile.connection_date == date(2024, 1, 31)


def test_blank_type_and_plan_take_defaults_and_columns_may_be_reordered() -> None:
    header = ",".join(reversed(TEMPLATE_COLUMNS)).upper()
    parsed = parse_customer_csv(f"{header}\n,,,,Zone,,,Road,A-1,Ann\n")
    assert parsed.errors == []
    new = parsed.rows[0].customer
    assert new.profile.customer_type is CustomerType.RESIDENTIAL
    assert new.profile.tariff_plan == "standard" and new.profile.connection_date is None
    assert parsed.rows[0].meter is None


def test_every_broken_rule_is_reported_by_line_and_column() -> None:
    text = "\n".join(
        [
            HEADER,
            ",bad acc!,,12,x@,,SN 1,alien,,2024-02-30",
            "Ann,A-1,Road,,,Zone,,,,",
            "Ann again,A-1,Road,,,Zone,,,,",
            "Short,row",
        ]
    )
    parsed = parse_customer_csv(text)
    assert [r.customer.account for r in parsed.rows] == ["A-1"]
    assert {(e.line, e.field) for e in parsed.errors} == {
        (2, "customerName"),
        (2, "accountNumber"),
        (2, "address"),
        (2, "phoneNumber"),
        (2, "email"),
        (2, "area"),
        (2, "meterAssigned"),
        (2, "customerType"),
        (2, "connectionDate"),
        (4, "accountNumber"),
        (5, "row"),
    }


def test_header_problems_reject_the_whole_file() -> None:
    parsed = parse_customer_csv("customerName,accountNumber,extra\nA,B,C\n")
    assert parsed.rows == []
    fields = {e.field for e in parsed.errors}
    assert "header" in fields and "address" in fields and "connectionDate" in fields
    assert parse_customer_csv("").errors[0].field == "file"
    assert parse_customer_csv(HEADER + "\n").errors[0].reason.endswith("no customer rows")
