"""Which command or query each REST route runs: the transport's side of the access table.

Routes are named ``<METHOD> <path template>`` (``WS`` for websockets). Each maps to an operation
name of ``commands.access.ACCESS``, whose rule decides; ``OPEN_ROUTES`` are the transport's own
public doors (probes, metrics, the API description, the console's files and the GraphQL
endpoint, whose fields ``api.graphql.operations`` checks one by one).
"""

from __future__ import annotations

from commands.access import PUBLIC, Access, access_table

OPEN_ROUTES: frozenset[str] = frozenset(
    {
        # GraphQL over HTTP and websocket: each field is checked by api.graphql.operations
        "GET /graphql",
        "POST /graphql",
        "WS /graphql",
        # probes, metrics, API description
        "GET /health/live",
        "GET /health/ready",
        "GET /metrics",
        "GET /schema",
        "GET /schema/openapi.json",
        "GET /schema/openapi.yaml",
        "GET /schema/openapi.yml",
        "GET /schema/swagger",
        "GET /schema/oauth2-redirect.html",
        "GET /schema/{path}",
        # the operator console and the files of the browser pages (api/web)
        "GET /console",
        "GET /static/{file_path}",
    }
)

ROUTE_OPERATIONS: dict[str, str] = {
    # meter commands and import
    "POST /api/v1/commands/meters/register": "registerMeter",
    "POST /api/v1/commands/meters/{meter_id}/commission": "commissionMeter",
    "POST /api/v1/commands/meters/{meter_id}/assign-customer": "assignCustomer",
    "POST /api/v1/commands/meters/{meter_id}/unassign-customer": "unassignCustomer",
    "POST /api/v1/commands/meters/{meter_id}/connection-profile": "changeConnectionProfile",
    "POST /api/v1/commands/meters/{meter_id}/decommission": "decommissionMeter",
    "GET /api/v1/templates/meters": "readMeterImportTemplate",
    "POST /api/v1/imports/meters": "importMeters",
    # SIM inventory: queries, commands, CSV template and import
    "GET /api/v1/sims": "listSims",
    "GET /api/v1/sims/counts": "countSims",
    "GET /api/v1/sims/{iccid}": "getSim",
    "GET /api/v1/meters/{meter}/sim": "getMeterSim",
    "POST /api/v1/commands/sims": "addSim",
    "POST /api/v1/commands/sims/{iccid}/update": "updateSim",
    "POST /api/v1/commands/sims/{iccid}/activate": "activateSim",
    "POST /api/v1/commands/sims/{iccid}/suspend": "suspendSim",
    "POST /api/v1/commands/sims/{iccid}/resume": "resumeSim",
    "POST /api/v1/commands/sims/{iccid}/terminate": "terminateSim",
    "POST /api/v1/commands/sims/{iccid}/install": "installSim",
    "POST /api/v1/commands/sims/remove": "removeSim",
    "GET /api/v1/templates/sims": "readSimImportTemplate",
    "POST /api/v1/imports/sims": "importSims",
    # customers: queries, commands, CSV template and import
    "GET /api/v1/customers": "listCustomers",
    "GET /api/v1/customers/{account}": "getCustomer",
    "GET /api/v1/meters/{meter}/customer": "getMeterCustomer",
    "GET /api/v1/customer-counts": "countCustomersPerArea",
    "POST /api/v1/commands/customers": "createCustomer",
    "POST /api/v1/commands/customers/{account}/contact": "updateCustomerContact",
    "POST /api/v1/commands/customers/{account}/plan": "changeCustomerPlan",
    "POST /api/v1/commands/customers/{account}/suspend": "suspendCustomer",
    "POST /api/v1/commands/customers/{account}/reactivate": "reactivateCustomer",
    "POST /api/v1/commands/customers/{account}/close": "closeCustomer",
    "POST /api/v1/commands/customers/{account}/erase": "eraseCustomer",
    "GET /api/v1/templates/customers": "readCustomerImportTemplate",
    "POST /api/v1/imports/customers": "importCustomers",
    # telemetry ingest (machine clients)
    "POST /telemetry/batch": "ingestTelemetry",
    "POST /api/v1/telemetry/batch": "ingestTelemetry",
    # MDM and billing export
    "GET /api/v1/meters/{meter}/intervals": "exportIntervals",
    "GET /api/v1/meters/{meter}/billing-determinants": "exportBillingDeterminants",
    # API keys
    "GET /api/v1/api-keys": "listApiKeys",
    "POST /api/v1/api-keys": "createApiKey",
    "POST /api/v1/api-keys/{prefix}/rotate": "rotateApiKey",
    "POST /api/v1/api-keys/{prefix}/revoke": "revokeApiKey",
    # DLMS remote commands, their status, communication statistics, keys
    "POST /api/v1/commands/meters/{meter_id}/disconnect": "requestDisconnect",
    "POST /api/v1/commands/meters/{meter_id}/reconnect": "requestReconnect",
    "POST /api/v1/commands/meters/{meter_id}/sync-clock": "requestClockSync",
    "POST /api/v1/commands/meters/{meter_id}/read": "requestOnDemandRead",
    "POST /api/v1/commands/meters/{meter_id}/remote-commands/{command_id}/retry": (
        "retryRemoteCommand"
    ),
    "GET /api/v1/meters/{meter_id}/remote-commands": "listRemoteCommands",
    "GET /api/v1/meters/{meter_id}/remote-commands/{command_id}": "getRemoteCommand",
    "GET /api/v1/meters/{meter_id}/communication": "readMeterCommunication",
    "PUT /api/v1/meters/{meter_id}/keys": "setMeterKeys",
    # DLMS model profiles and capabilities
    "GET /api/v1/dlms/profiles": "listDlmsProfiles",
    "GET /api/v1/meters/{meter_id}/dlms-capabilities": "readDlmsCapabilities",
    "GET /api/v1/meters/{meter_id}/collection": "readMeterCollection",
    "PUT /api/v1/meters/{meter_id}/dlms-profile": "setDlmsProfile",
    "POST /api/v1/commands/meters/{meter_id}/discover": "requestDiscovery",
    # fleet operations: per-meter commands, firmware images, TOU plans, campaigns
    "POST /api/v1/commands/meters/{meter_id}/firmware-update": "requestFirmwareUpdate",
    "POST /api/v1/commands/meters/{meter_id}/calendar": "requestCalendarWrite",
    "POST /api/v1/commands/meters/{meter_id}/load-limit": "requestLoadLimit",
    "GET /api/v1/firmware-images": "listFirmwareImages",
    "POST /api/v1/commands/firmware-images": "uploadFirmwareImage",
    "POST /api/v1/commands/firmware-images/{image_id}/delete": "deleteFirmwareImage",
    "GET /api/v1/tou-plans": "listTouPlans",
    "POST /api/v1/commands/tou-plans": "createTouPlan",
    "GET /api/v1/campaigns": "listCampaigns",
    "GET /api/v1/campaigns/{campaign_id}": "getCampaign",
    "GET /api/v1/campaigns/{campaign_id}/meters": "getCampaign",
    "POST /api/v1/commands/campaigns": "startCampaign",
    "POST /api/v1/commands/firmware-campaigns": "startFirmwareCampaign",
    "POST /api/v1/commands/campaigns/{campaign_id}/pause": "pauseCampaign",
    "POST /api/v1/commands/campaigns/{campaign_id}/resume": "resumeCampaign",
    "POST /api/v1/commands/campaigns/{campaign_id}/cancel": "cancelCampaign",
}

REST: dict[str, Access] = {
    **dict.fromkeys(sorted(OPEN_ROUTES), PUBLIC),
    **access_table(ROUTE_OPERATIONS),
}
"""The rule of every route: public for the open ones, else looked up through its operation."""
