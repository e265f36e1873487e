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
    "retryRemoteCommand": _OPERATORS,
    # Fleet operations (docs/fleet-operations.md): operators write calendars and load limits
    # per meter and by campaign and steer any campaign; firmware is for administrators only
    # (images, per-meter updates, firmware campaigns). The campaign runner records as SYSTEM.
    "requestFirmwareUpdate": _ADMINS,
    "requestCalendarWrite": _OPERATORS,
    "requestLoadLimit": _OPERATORS,
    "uploadFirmwareImage": _ADMINS,
    "deleteFirmwareImage": _ADMINS,
    "createTouPlan": _OPERATORS,
    "startCampaign": _OPERATORS,
    "startFirmwareCampaign": _ADMINS,
    "pauseCampaign": _OPERATORS,
    "resumeCampaign": _OPERATORS,
    "cancelCampaign": _OPERATORS,
    "recordCampaignProgress": _ADMINS,  # the handler also checks the retried kind's permission
    "recordRemoteCommand": _ADMINS,
    "recordMeterEvents": _ADMINS,
    "setMeterKeys": _ADMINS,
    # DLMS model profiles: operators choose a meter's profile and refresh its model's view;
    # the DLMS side records counter resynchronisations as SYSTEM (role admin).
    "setDlmsProfile": _OPERATORS,
    "requestDiscovery": _OPERATORS,
    "recordCounterResync": _ADMINS,
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
    # A region's capacity is the 100 % of its load percentage, so it moves prices: admin-only.
    "setRegionCapacity": _ADMINS,
    "runAnalysis": _ADMINS,
    # SIM inventory: operators stock, configure and (un)install cards; ending a card's service
    # for good is an administrator's decision.
    "addSim": _OPERATORS,
    "updateSim": _OPERATORS,
    "activateSim": _OPERATORS,
    "suspendSim": _OPERATORS,
    "resumeSim": _OPERATORS,
    "terminateSim": _ADMINS,
    "installSim": _OPERATORS,
    "removeSim": _OPERATORS,
    "importSims": _OPERATORS,
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
    # Customers: operators keep accounts; erasing personal data is admin-only (docs/customers.md)
    "createCustomer": _OPERATORS,
    "updateCustomerContact": _OPERATORS,
    "changeCustomerPlan": _OPERATORS,
    "suspendCustomer": _OPERATORS,
    "reactivateCustomer": _OPERATORS,
    "closeCustomer": _OPERATORS,
    "importCustomers": _OPERATORS,
    "eraseCustomer": _ADMINS,
    "adoptCustomers": _ADMINS,
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


CONTACT_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})
"""Staff who see customers' phone numbers and e-mail addresses (viewers and auditors do not)."""


def may_read_customer(actor: Actor, account: str) -> bool:
    """True when the actor may see the customer ``account`` (customers: only their own)."""
    return may_read_meter(actor, account)


def may_read_contact(actor: Actor, account: str) -> bool:
    """True when the actor may see the customer's phone and e-mail (docs/customers.md)."""
    if not actor.roles.isdisjoint(CONTACT_ROLES):
        return True
    return Role.CUSTOMER in actor.roles and actor.customer_account == account


def may_read_meter(actor: Actor, customer_account: str | None) -> bool:
    """True when the actor may see a meter owned by ``customer_account``."""
    if actor.roles.isdisjoint(READ_ROLES):
        return False
    if actor.roles == {Role.CUSTOMER}:
        return customer_account is not None and customer_account == actor.customer_account
    return True
