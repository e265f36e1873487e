"""What the browser tests put into the running system first: meters (some pointing at simulated
DLMS meters), readings, tariffs and alerts, through the same API and applications as users."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from adapters.dlms.simulator import SimulatedFleet, simulated_keys
from commands.alerts import AlertDesk
from commands.context import SYSTEM, CommandContext, Role
from config.settings import Settings
from domain.alert import AlertType, Severity
from domain.detection import AlertDecision, Verdict
from tests.browser.system import RunningSystem

REGISTER = """mutation($input: RegisterMeterInput!) { registerMeter(input: $input) {
  __typename ... on Meter { id serial } ... on Error { code message } } }"""
ASSIGN = """mutation($id: ID!, $account: String!) {
  assignCustomer(id: $id, customerAccount: $account) {
    __typename ... on Error { code message } } }"""
CUSTOMER = """mutation($a: String!, $c: ContactInput!, $area: String!) {
  createCustomer(accountNumber: $a, contact: $c, area: $area) {
    __typename ... on Error { code message } } }"""
KEYS = """mutation($id: ID!, $input: MeterKeysInput!) {
  setMeterKeys(id: $id, input: $input, confirm: "setMeterKeys 1") {
    __typename ... on MeterKeysSet { keyVersion } ... on Error { code message } } }"""
TARIFF = """mutation($input: CreateTariffInput!) { createTariff(input: $input) {
  __typename ... on Error { code message } } }"""


def unique(prefix: str) -> str:
    """A serial, region or account no other test uses."""
    return f"{prefix}{uuid.uuid4().hex[:8].upper()}"


async def register(
    system: RunningSystem,
    serial: str,
    region: str,
    *,
    host: str = "127.0.0.1",
    port: int = 4059,
    security: str = "NONE",
    customer: str | None = None,
) -> str:
    """Register a meter (and assign a customer); its id."""
    admin = system.token(Role.ADMIN)
    made = await system.gql(
        admin,
        REGISTER,
        {
            "input": {
                "serial": serial,
                "manufacturer": "HES",
                "model": "Simulated",
                "firmware": "1.0",
                "phases": 1,
                "region": region,
                "area": f"{region} Zone 1",
                "connection": {
                    "host": host,
                    "port": port,
                    "transport": "WRAPPER",
                    "security": security,
                    "clientAddress": 1 if security == "HLS_GMAC" else 16,
                },
            }
        },
    )
    result = made["registerMeter"]
    assert result["__typename"] == "Meter", result
    if customer is not None:
        await open_customer(system, customer, region)
        assigned = await system.gql(admin, ASSIGN, {"id": result["id"], "account": customer})
        assert assigned["assignCustomer"]["__typename"] == "Meter", assigned
    return str(result["id"])


async def open_customer(system: RunningSystem, account: str, area: str) -> None:
    """Open the customer account ``account`` unless it exists (meters go to existing ones)."""
    contact = {
        "name": f"Name {account}",
        "address": f"Street {account}",
        "phone": "+1 555 0100",
        "email": f"{account.lower()}@example.org",
    }
    made = await system.gql(
        system.token(Role.ADMIN), CUSTOMER, {"a": account, "c": contact, "area": area}
    )
    result = made["createCustomer"]
    exists = result["__typename"] == "ConflictError" and "already exists" in result["message"]
    assert result["__typename"] == "Customer" or exists, result


async def dlms_meter(system: RunningSystem, fleet: SimulatedFleet, index: int, region: str) -> str:
    """A meter reaching simulated DLMS meter ``index`` with HLS-GMAC, its keys set."""
    serial = fleet.serials[index]
    meter = await register(
        system,
        unique("DL"),
        region,
        port=fleet.ports[index],
        security="HLS_GMAC",
    )
    keys = simulated_keys(serial)
    stored = await system.gql(
        system.token(Role.ADMIN),
        KEYS,
        {
            "id": meter,
            "input": {
                "llsPassword": keys.lls_password.decode(),
                "ek": keys.ek.hex(),
                "ak": keys.ak.hex(),
            },
        },
    )
    assert stored["setMeterKeys"]["__typename"] == "MeterKeysSet", stored
    return meter


async def readings(system: RunningSystem, serial: str, hours: int = 24) -> int:
    """A day of quarter-hourly gateway readings (energy grows 0.1-0.4 kWh each); accepted count."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=hours)
    energy = 10_000.0
    batch: list[dict[str, Any]] = []
    at = start
    step = 0
    while at <= now:
        energy += 0.1 + 0.3 * ((step * 7) % 10) / 10
        batch.append(
            {
                "meter_id": serial,
                "timestamp": at.isoformat(),
                "voltage": 229.0 + (step % 5),
                "power_kw": 0.4 + (step % 8) / 10,
                "energy_kwh": round(energy, 3),
            }
        )
        at += timedelta(minutes=15)
        step += 1
    async with httpx.AsyncClient(base_url=system.base, timeout=30) as client:
        answer = await client.post(
            "/telemetry/batch",
            json=batch,
            headers={"Authorization": f"Bearer {system.ingest_token()}"},
        )
    assert answer.status_code == 200, answer.text
    accepted: int = answer.json()["accepted"]
    return accepted


async def tariff(system: RunningSystem, region: str, base_price: str = "0.2000") -> None:
    """Create the region's tariff (EUR, default load tiers)."""
    made = await system.gql(
        system.token(Role.ADMIN),
        TARIFF,
        {
            "input": {
                "region": region,
                "currency": "EUR",
                "basePrice": base_price,
                "timezone": "Europe/Amsterdam",
            }
        },
    )
    assert made["createTariff"]["__typename"] == "Tariff", made


def _settings(system: RunningSystem) -> Settings:
    return Settings.of(
        database_url=system.database_url,
        nats_url=system.nats_url,
        db_schema=system.schema,
        nats_prefix=system.prefix,
    )


async def raise_alert(
    system: RunningSystem,
    region: str,
    *,
    severity: Severity = Severity.HIGH,
    alert_type: AlertType = AlertType.THRESHOLD,
    meter: str | None = None,
) -> str:
    """Raise an alert as the detectors do (the system actor through the alert desk); its id.

    THRESHOLD by default: no detector runs for that type here, so none resolves it meanwhile.
    """

    def run() -> str:
        desk = AlertDesk(env=_settings(system).database.eventsourcing_env())
        try:
            outcome = desk.raise_or_recur(
                AlertDecision(
                    verdict=Verdict.RAISE,
                    alert_type=alert_type,
                    severity=severity,
                    region=region,
                    dedup_key=f"{alert_type.value.upper()}:{region}:{uuid.uuid4().hex[:6]}",
                    message=f"{region}: load above the alarm threshold for three windows",
                    observed_at=datetime.now(UTC),
                    meter=None if meter is None else uuid.UUID(meter),
                    evidence={"loadPct": 97.5, "windows": 3},
                ),
                CommandContext(actor=SYSTEM),
            )
        finally:
            desk.close()
        return str(outcome.alert.id)

    return await asyncio.to_thread(run)
