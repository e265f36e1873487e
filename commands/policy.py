"""Which roles may run which command: one table for GraphQL, REST and the CLI."""

from __future__ import annotations

from commands.context import Actor, Role
from domain.errors import Forbidden

_OPERATORS = frozenset({Role.OPERATOR, Role.ADMIN})
_ADMINS = frozenset({Role.ADMIN})

COMMAND_ROLES: dict[str, frozenset[Role]] = {
    "registerMeter": _OPERATORS,
    "commissionMeter": _OPERATORS,
    "assignCustomer": _OPERATORS,
    "unassignCustomer": _OPERATORS,
    "changeConnectionProfile": _OPERATORS,
    "decommissionMeter": _ADMINS,
    "importMeters": _OPERATORS,
    # DLMS remote commands: operators request them; the executor records sent/confirmed/failed
    # and the collector records meter event logs as SYSTEM (role admin). Keys are admin-only.
    "requestDisconnect": _OPERATORS,
    "requestReconnect": _OPERATORS,
    "requestClockSync": _OPERATORS,
    "requestOnDemandRead": _OPERATORS,
    "recordRemoteCommand": _ADMINS,
    "recordMeterEvents": _ADMINS,
    "setMeterKeys": _ADMINS,
    # Alerts: operators work them; detectors raise and auto-resolve them as SYSTEM (role admin).
    "acknowledgeAlert": _OPERATORS,
    "resolveAlert": _OPERATORS,
    "raiseAlert": _ADMINS,
    "autoResolveAlert": _ADMINS,
    # Tariffs: configuration and overrides are admin-only; load-based price updates and
    # override expiry are issued by the tariff engine as the SYSTEM actor (role admin).
    "createTariff": _ADMINS,
    "changeTariffBasePrice": _ADMINS,
    "changeTariffTiers": _ADMINS,
    "applyTariffOverride": _ADMINS,
    "clearTariffOverride": _ADMINS,
    "applyTariffLoad": _ADMINS,
    "expireTariffOverrides": _ADMINS,
    # API keys of machine clients: administrators create, rotate and revoke them.
    "createApiKey": _ADMINS,
    "rotateApiKey": _ADMINS,
    "revokeApiKey": _ADMINS,
    # Notifications: every role but the (read-only) auditor manages its own subscriptions;
    # admins may manage anyone's, operators may read anyone's delivery log.
    "manageNotificationSubscriptions": frozenset(
        {Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.CUSTOMER}
    ),
    "manageAnyNotificationSubscription": _ADMINS,
    "readAnyNotificationDeliveries": _OPERATORS,
}

READ_ROLES = frozenset({Role.VIEWER, Role.OPERATOR, Role.ADMIN, Role.AUDITOR, Role.CUSTOMER})
AUDIT_ROLES = frozenset({Role.AUDITOR, Role.ADMIN})


def authorize(actor: Actor, command: str) -> None:
    """Raise ``Forbidden`` unless the actor holds a role allowed to run ``command``."""
    allowed = COMMAND_ROLES[command]
    if actor.roles.isdisjoint(allowed):
        needed = " or ".join(sorted(allowed))
        raise Forbidden(f"{command} needs role {needed}; {actor.subject} has none of them")


def authorize_audit(actor: Actor) -> None:
    """Raise ``Forbidden`` unless the actor may read the event history (auditor or admin)."""
    if actor.roles.isdisjoint(AUDIT_ROLES):
        raise Forbidden(f"audit needs role admin or auditor; {actor.subject} has neither")


def may_read_meter(actor: Actor, customer_account: str | None) -> bool:
    """True when the actor may see a meter owned by ``customer_account``."""
    if actor.roles.isdisjoint(READ_ROLES):
        return False
    if actor.roles == {Role.CUSTOMER}:
        return customer_account is not None and customer_account == actor.customer_account
    return True
