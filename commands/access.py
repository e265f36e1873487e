"""Who may run which command or query: one table keyed by operation name, for every interface.

Commands take their names and roles from ``commands.policy.COMMAND_ROLES`` (the command handlers
check them again: defence in depth); queries, subscriptions and reads are named here. The
transports map their doors to these names (``api.graphql.operations`` each root field,
``api.rest.operations`` each ``METHOD /path`` route) and look the rule up through them, so the
commands layer names no transport. A caller passes when it holds any listed role or any listed
scope; ``PUBLIC`` needs no credentials. A door missing from its transport's mapping is refused
(and the authorization-table test fails), so a new field or route cannot go live unprotected.
Finer rules, such as a customer seeing only their own meters, are checked where the data is read.
"""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from commands.context import Actor, Role, Scope
from commands.policy import AUDIT_ROLES, COMMAND_ROLES, READ_ROLES


class Access(msgspec.Struct, frozen=True, kw_only=True):
    """The roles or scopes that open a door (or none needed, when public)."""

    roles: frozenset[Role] = frozenset()
    scopes: frozenset[Scope] = frozenset()
    public: bool = False

    def allows(self, actor: Actor) -> bool:
        """True when the actor holds one of the roles or one of the scopes."""
        return self.public or not (
            self.roles.isdisjoint(actor.roles) and self.scopes.isdisjoint(actor.scopes)
        )

    def describe(self) -> str:
        """Human-readable requirement, for refusal messages."""
        if self.public:
            return "nothing"
        parts = []
        if self.roles:
            parts.append("role " + " or ".join(sorted(self.roles)))
        if self.scopes:
            parts.append("scope " + " or ".join(sorted(self.scopes)))
        return ", or ".join(parts) or "a grant nobody has"


def roles(*names: Role) -> Access:
    """Open to these roles."""
    return Access(roles=frozenset(names))


PUBLIC = Access(public=True)
READERS = Access(roles=READ_ROLES)
"""Everyone with a role; customers are narrowed to their own meters where data is read."""
STAFF = roles(Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR)
AUDITORS = Access(roles=AUDIT_ROLES)
EXPORT = Access(roles=READ_ROLES, scopes=frozenset({Scope.EXPORT}))

INGEST = Access(scopes=frozenset({Scope.INGEST}))

QUERIES: dict[str, Access] = {
    # who is calling and what they may use (the console builds its pages from it)
    "identifyCaller": READERS,
    # the operations dashboard (read once or watched live)
    "viewDashboard": STAFF,
    # meters
    "listMeters": READERS,
    "getMeter": READERS,
    "readMeterImportTemplate": PUBLIC,
    # customers (customers see only their own; phone and e-mail only for operators and admins)
    "listCustomers": READERS,
    "getCustomer": READERS,
    "getMeterCustomer": READERS,
    "countCustomersPerArea": STAFF,
    "readCustomerImportTemplate": PUBLIC,
    # readings
    "listReadings": READERS,
    "readLatestReadings": READERS,
    "readAggregates": READERS,
    "readRegionalLoad": STAFF,
    "readFleet": STAFF,
    "watchReadings": READERS,
    # telemetry ingest (machine clients) and MDM / billing export
    "ingestTelemetry": INGEST,
    "exportIntervals": EXPORT,
    "exportBillingDeterminants": EXPORT,
    # audit
    "readHistory": AUDITORS,
    "readStateAt": AUDITORS,
    "readAggregateStateAt": AUDITORS,
    "readLastAuditVerification": AUDITORS,
    # tariffs; an override's reason and author are internal: customers see price and validity
    "listTariffs": STAFF,
    "readCurrentTariff": READERS,
    "readTariffHistory": STAFF,
    "readTariffOverrideInternals": STAFF,
    "watchTariffChanges": READERS,
    # alerts (customers see those of their own meters)
    "listAlerts": READERS,
    "getAlert": READERS,
    "watchAlertsRaised": READERS,
    "watchAlertChanges": READERS,
    # API keys
    "listApiKeys": AUDITORS,
    # notifications: every role reads its own subscriptions and deliveries (checked in the store)
    "listNotificationSubscriptions": READERS,
    "listNotificationDeliveries": READERS,
    # DLMS: remote commands, communication, a meter's DLMS state, profiles and capabilities
    "listRemoteCommands": STAFF,
    "getRemoteCommand": STAFF,
    "readMeterCommunication": STAFF,
    "readMeterDlmsState": STAFF,
    "readMeterLogEvents": STAFF,
    "readLoadProfileLedger": STAFF,
    "listDlmsProfiles": STAFF,
    "readDlmsCapabilities": STAFF,
    "readMeterCollection": STAFF,
    # SIM inventory: staff read it (customers do not: a SIM's numbers are the utility's)
    "listSims": STAFF,
    "getSim": STAFF,
    "getMeterSim": STAFF,
    "countSims": STAFF,
    "readSimImportTemplate": PUBLIC,
    # fleet operations: staff (viewers included) follow images, TOU plans and campaigns
    "listFirmwareImages": STAFF,
    "listTouPlans": STAFF,
    "listCampaigns": STAFF,
    "getCampaign": STAFF,
    "watchCampaignProgress": STAFF,
    # consumption insights: a meter's own figures for its customer too; the feed is for staff
    "readConsumptionPattern": READERS,
    "readMeterForecast": READERS,
    "readAnomalyScores": READERS,
    "readRegionForecasts": STAFF,
    "listInsights": STAFF,
    "listPrioritizedAlerts": STAFF,
    "readLastAnalysis": STAFF,
}
"""Queries, subscriptions and other reads, by name."""

ACCESS: dict[str, Access] = {
    **{name: Access(roles=allowed) for name, allowed in COMMAND_ROLES.items()},
    **QUERIES,
}
"""Every command and query by name: the one table all interfaces enforce."""

INTERNAL: frozenset[str] = frozenset(
    {
        # issued by the system actor (DLMS side, detectors, tariff engine), never by a caller
        "recordRemoteCommand",
        "recordMeterEvents",
        "recordCounterResync",
        "raiseAlert",
        "autoResolveAlert",
        "applyTariffLoad",
        "expireTariffOverrides",
        # tariff changes that no interface offers yet
        "changeTariffBasePrice",
        "changeTariffTiers",
        # finer grants checked inside another operation (whose subscriptions, whose deliveries)
        "manageAnyNotificationSubscription",
        "readAnyNotificationDeliveries",
        # customers: adopting meters' free-text accounts is a command-line migration step
        "adoptCustomers",
        # fleet operations: the campaign runner records as SYSTEM
        "recordCampaignProgress",
    }
)
"""Names in ``ACCESS`` that no API transport maps a door to, on purpose (commands of the
system actor or of the command line only, and grants checked inside another operation)."""


def access_table(doors: Mapping[str, str]) -> dict[str, Access]:
    """Each door's rule, looked up through the operation name it maps to."""
    unknown = sorted({name for name in doors.values() if name not in ACCESS})
    if unknown:
        raise KeyError(f"no access rule for operations {unknown}; add them to commands.access")
    return {door: ACCESS[name] for door, name in doors.items()}
