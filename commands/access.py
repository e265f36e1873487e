"""Who may call which GraphQL field and REST route: the one table both interfaces enforce.

GraphQL root fields are named ``Query.<field>``, ``Mutation.<field>``, ``Subscription.<field>``;
REST routes ``<METHOD> <path template>`` (``WS`` for websockets). A caller passes when it holds
any listed role or any listed scope; ``PUBLIC`` needs no credentials. Anything missing from the
table is refused (and the authorization-table test fails), so a new field or route cannot go
live unprotected. Mutations take their roles from ``commands.policy.COMMAND_ROLES``, which the
command handlers check again (defence in depth). Finer rules, such as a customer seeing only
their own meters, are checked where the data is read.
"""

from __future__ import annotations

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


def command(*names: str) -> Access:
    """Open to the roles that may run any of the commands ``names``."""
    return Access(roles=frozenset().union(*(COMMAND_ROLES[n] for n in names)))


PUBLIC = Access(public=True)
READERS = Access(roles=READ_ROLES)
"""Everyone with a role; customers are narrowed to their own meters where data is read."""
STAFF = roles(Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR)
AUDITORS = Access(roles=AUDIT_ROLES)
ADMINS = roles(Role.ADMIN)
OPERATORS = roles(Role.OPERATOR, Role.ADMIN)
EXPORT = Access(roles=READ_ROLES, scopes=frozenset({Scope.EXPORT}))
INGEST = Access(scopes=frozenset({Scope.INGEST}))

GRAPHQL: dict[str, Access] = {
    # meters
    "Query.meters": READERS,
    "Query.meter": READERS,
    "Mutation.registerMeter": command("registerMeter"),
    "Mutation.commissionMeter": command("commissionMeter"),
    "Mutation.assignCustomer": command("assignCustomer"),
    "Mutation.unassignCustomer": command("unassignCustomer"),
    "Mutation.changeConnectionProfile": command("changeConnectionProfile"),
    "Mutation.decommissionMeter": command("decommissionMeter"),
    # readings
    "Query.readings": READERS,
    "Query.aggregates": READERS,
    "Query.regionalLoad": STAFF,
    "Query.fleet": STAFF,
    "Subscription.liveReadings": READERS,
    # audit
    "Query.history": AUDITORS,
    "Query.stateAt": AUDITORS,
    "Query.aggregateStateAt": AUDITORS,
    # tariffs
    "Query.tariffs": STAFF,
    "Query.currentTariff": READERS,
    "Query.tariffHistory": STAFF,
    "Mutation.createTariff": command("createTariff"),
    "Mutation.applyTariffOverride": command("applyTariffOverride"),
    "Mutation.clearTariffOverride": command("clearTariffOverride"),
    # alerts (customers see those of their own meters)
    "Query.alerts": READERS,
    "Query.alert": READERS,
    "Mutation.acknowledgeAlert": command("acknowledgeAlert"),
    "Mutation.resolveAlert": command("resolveAlert"),
    "Subscription.alertRaised": READERS,
    "Subscription.tariffChanged": READERS,
    # bulk relay disconnect: a dangerous command above the threshold (api.dangerous)
    "Mutation.disconnectMeters": command("requestDisconnect"),
    # API keys
    "Query.apiKeys": AUDITORS,
    "Mutation.createApiKey": command("createApiKey"),
    "Mutation.rotateApiKey": command("rotateApiKey"),
    "Mutation.revokeApiKey": command("revokeApiKey"),
    # notifications: every role manages its own subscriptions (ownership checked in the store)
    "Query.notificationSubscriptions": READERS,
    "Query.notificationDeliveries": READERS,
    "Mutation.createNotificationSubscription": command("manageNotificationSubscriptions"),
    "Mutation.updateNotificationSubscription": command("manageNotificationSubscriptions"),
    "Mutation.deleteNotificationSubscription": command("manageNotificationSubscriptions"),
    # DLMS: remote commands (operators), keys (admins), meters' DLMS state (staff)
    "Query.remoteCommands": STAFF,
    "Query.remoteCommand": STAFF,
    "Query.meterCommunication": STAFF,
    "Query.meterDlmsState": STAFF,
    "Query.meterLogEvents": STAFF,
    "Query.loadProfileLedger": STAFF,
    "Mutation.disconnectMeter": command("requestDisconnect"),
    "Mutation.reconnectMeter": command("requestReconnect"),
    "Mutation.synchronizeMeterClock": command("requestClockSync"),
    "Mutation.readMeterOnDemand": command("requestOnDemandRead"),
    "Mutation.retryRemoteCommand": OPERATORS,
    "Mutation.setMeterKeys": command("setMeterKeys"),
}

REST: dict[str, Access] = {
    # GraphQL over HTTP and websocket: each field is checked by the GRAPHQL table
    "GET /graphql": PUBLIC,
    "POST /graphql": PUBLIC,
    "WS /graphql": PUBLIC,
    # probes, metrics, API description
    "GET /health/live": PUBLIC,
    "GET /health/ready": PUBLIC,
    "GET /metrics": PUBLIC,
    "GET /schema": PUBLIC,
    "GET /schema/openapi.json": PUBLIC,
    "GET /schema/openapi.yaml": PUBLIC,
    "GET /schema/openapi.yml": PUBLIC,
    "GET /schema/scalar": PUBLIC,
    "GET /schema/swagger": PUBLIC,
    "GET /schema/oauth2-redirect.html": PUBLIC,
    "GET /schema/{path}": PUBLIC,
    # meter commands and import
    "POST /api/v1/commands/meters/register": command("registerMeter"),
    "POST /api/v1/commands/meters/{meter_id}/commission": command("commissionMeter"),
    "POST /api/v1/commands/meters/{meter_id}/assign-customer": command("assignCustomer"),
    "POST /api/v1/commands/meters/{meter_id}/unassign-customer": command("unassignCustomer"),
    "POST /api/v1/commands/meters/{meter_id}/connection-profile": command(
        "changeConnectionProfile"
    ),
    "POST /api/v1/commands/meters/{meter_id}/decommission": command("decommissionMeter"),
    "GET /api/v1/templates/meters": PUBLIC,
    "POST /api/v1/imports/meters": command("importMeters"),
    # telemetry ingest (machine clients)
    "POST /telemetry/batch": INGEST,
    "POST /api/v1/telemetry/batch": INGEST,
    # MDM and billing export
    "GET /api/v1/meters/{meter}/intervals": EXPORT,
    "GET /api/v1/meters/{meter}/billing-determinants": EXPORT,
    # API keys
    "GET /api/v1/api-keys": AUDITORS,
    "POST /api/v1/api-keys": command("createApiKey"),
    "POST /api/v1/api-keys/{prefix}/rotate": command("rotateApiKey"),
    "POST /api/v1/api-keys/{prefix}/revoke": command("revokeApiKey"),
    # DLMS remote commands, their status, communication statistics, keys
    "POST /api/v1/commands/meters/{meter_id}/disconnect": command("requestDisconnect"),
    "POST /api/v1/commands/meters/{meter_id}/reconnect": command("requestReconnect"),
    "POST /api/v1/commands/meters/{meter_id}/sync-clock": command("requestClockSync"),
    "POST /api/v1/commands/meters/{meter_id}/read": command("requestOnDemandRead"),
    "POST /api/v1/commands/meters/{meter_id}/remote-commands/{command_id}/retry": OPERATORS,
    "GET /api/v1/meters/{meter_id}/remote-commands": STAFF,
    "GET /api/v1/meters/{meter_id}/remote-commands/{command_id}": STAFF,
    "GET /api/v1/meters/{meter_id}/communication": STAFF,
    "PUT /api/v1/meters/{meter_id}/keys": command("setMeterKeys"),
}
