"""Which command or query each GraphQL root field runs: the transport's side of the access table.

Root fields are named ``Query.<field>``, ``Mutation.<field>``, ``Subscription.<field>``; each maps
to an operation name of ``commands.access.ACCESS``, whose rule decides. ``FIELD_OPERATIONS`` does
the same for single fields of result types that only some callers may read.
"""

from __future__ import annotations

from commands.access import Access, access_table

ROOT_OPERATIONS: dict[str, str] = {
    "Query.me": "identifyCaller",
    # the operations dashboard (live: the subscription)
    "Query.dashboard": "viewDashboard",
    "Subscription.dashboard": "viewDashboard",
    # meters
    "Query.meters": "listMeters",
    "Query.meter": "getMeter",
    "Mutation.registerMeter": "registerMeter",
    "Mutation.commissionMeter": "commissionMeter",
    "Mutation.assignCustomer": "assignCustomer",
    "Mutation.unassignCustomer": "unassignCustomer",
    "Mutation.changeConnectionProfile": "changeConnectionProfile",
    "Mutation.decommissionMeter": "decommissionMeter",
    # customers
    "Query.customers": "listCustomers",
    "Query.customer": "getCustomer",
    "Query.meterCustomer": "getMeterCustomer",
    "Query.customerCountsPerArea": "countCustomersPerArea",
    "Mutation.createCustomer": "createCustomer",
    "Mutation.updateCustomerContact": "updateCustomerContact",
    "Mutation.changeCustomerPlan": "changeCustomerPlan",
    "Mutation.suspendCustomer": "suspendCustomer",
    "Mutation.reactivateCustomer": "reactivateCustomer",
    "Mutation.closeCustomer": "closeCustomer",
    "Mutation.eraseCustomer": "eraseCustomer",
    # readings
    "Query.readings": "listReadings",
    "Query.latestReadings": "readLatestReadings",
    "Query.aggregates": "readAggregates",
    "Query.regionalLoad": "readRegionalLoad",
    "Query.fleet": "readFleet",
    "Subscription.liveReadings": "watchReadings",
    # audit
    "Query.history": "readHistory",
    "Query.stateAt": "readStateAt",
    "Query.aggregateStateAt": "readAggregateStateAt",
    "Query.lastAuditVerification": "readLastAuditVerification",
    # tariffs
    "Query.tariffs": "listTariffs",
    "Query.currentTariff": "readCurrentTariff",
    "Query.tariffHistory": "readTariffHistory",
    "Mutation.createTariff": "createTariff",
    "Mutation.applyTariffOverride": "applyTariffOverride",
    "Mutation.clearTariffOverride": "clearTariffOverride",
    "Mutation.setRegionCapacity": "setRegionCapacity",
    "Subscription.tariffChanged": "watchTariffChanges",
    # alerts
    "Query.alerts": "listAlerts",
    "Query.alert": "getAlert",
    "Mutation.acknowledgeAlert": "acknowledgeAlert",
    "Mutation.resolveAlert": "resolveAlert",
    "Subscription.alertRaised": "watchAlertsRaised",
    "Subscription.alertChanged": "watchAlertChanges",
    # bulk relay disconnect: a dangerous command above the threshold (api.dangerous)
    "Mutation.disconnectMeters": "requestDisconnect",
    # API keys
    "Query.apiKeys": "listApiKeys",
    "Mutation.createApiKey": "createApiKey",
    "Mutation.rotateApiKey": "rotateApiKey",
    "Mutation.revokeApiKey": "revokeApiKey",
    # notifications
    "Query.notificationSubscriptions": "listNotificationSubscriptions",
    "Query.notificationDeliveries": "listNotificationDeliveries",
    "Mutation.createNotificationSubscription": "manageNotificationSubscriptions",
    "Mutation.updateNotificationSubscription": "manageNotificationSubscriptions",
    "Mutation.deleteNotificationSubscription": "manageNotificationSubscriptions",
    # DLMS: remote commands, keys, meters' DLMS state
    "Query.remoteCommands": "listRemoteCommands",
    "Query.remoteCommand": "getRemoteCommand",
    "Query.meterCommunication": "readMeterCommunication",
    "Query.meterDlmsState": "readMeterDlmsState",
    "Query.meterLogEvents": "readMeterLogEvents",
    "Query.loadProfileLedger": "readLoadProfileLedger",
    "Mutation.disconnectMeter": "requestDisconnect",
    "Mutation.reconnectMeter": "requestReconnect",
    "Mutation.synchronizeMeterClock": "requestClockSync",
    "Mutation.readMeterOnDemand": "requestOnDemandRead",
    "Mutation.retryRemoteCommand": "retryRemoteCommand",
    "Mutation.setMeterKeys": "setMeterKeys",
    # DLMS model profiles and capabilities
    "Query.dlmsProfiles": "listDlmsProfiles",
    "Query.dlmsCapabilities": "readDlmsCapabilities",
    "Query.meterCollection": "readMeterCollection",
    "Mutation.setMeterDlmsProfile": "setDlmsProfile",
    "Mutation.refreshDlmsCapabilities": "requestDiscovery",
    # SIM inventory
    "Query.simCards": "listSims",
    "Query.simCard": "getSim",
    "Query.meterSim": "getMeterSim",
    "Query.simCardCounts": "countSims",
    "Mutation.addSimCard": "addSim",
    "Mutation.updateSimCard": "updateSim",
    "Mutation.activateSimCard": "activateSim",
    "Mutation.suspendSimCard": "suspendSim",
    "Mutation.resumeSimCard": "resumeSim",
    "Mutation.terminateSimCard": "terminateSim",
    "Mutation.installSim": "installSim",
    "Mutation.removeSim": "removeSim",
    # fleet operations: firmware images, TOU plans, campaigns, per-meter fleet commands
    "Query.firmwareImages": "listFirmwareImages",
    "Query.touPlans": "listTouPlans",
    "Query.campaigns": "listCampaigns",
    "Query.campaign": "getCampaign",
    "Subscription.campaignProgress": "watchCampaignProgress",
    "Mutation.uploadFirmwareImage": "uploadFirmwareImage",
    "Mutation.deleteFirmwareImage": "deleteFirmwareImage",
    "Mutation.createTouPlan": "createTouPlan",
    "Mutation.startCampaign": "startCampaign",
    "Mutation.startFirmwareCampaign": "startFirmwareCampaign",
    "Mutation.pauseCampaign": "pauseCampaign",
    "Mutation.resumeCampaign": "resumeCampaign",
    "Mutation.cancelCampaign": "cancelCampaign",
    "Mutation.updateFirmware": "requestFirmwareUpdate",
    "Mutation.writeCalendar": "requestCalendarWrite",
    "Mutation.setLoadLimit": "requestLoadLimit",
    # consumption insights
    "Query.consumptionPattern": "readConsumptionPattern",
    "Query.meterForecast": "readMeterForecast",
    "Query.regionForecasts": "readRegionForecasts",
    "Query.anomalyScores": "readAnomalyScores",
    "Query.insights": "listInsights",
    "Query.prioritizedAlerts": "listPrioritizedAlerts",
    "Query.lastAnalysis": "readLastAnalysis",
    "Mutation.analyze": "runAnalysis",
}

FIELD_OPERATIONS: dict[str, str] = {
    # a tariff override's reason and author are internal: customers see price and validity
    "TariffOverride.reason": "readTariffOverrideInternals",
    "TariffOverride.author": "readTariffOverrideInternals",
    # a meter's DLMS capabilities (profile, association view, plan) are for staff
    "Meter.dlmsCapabilities": "readDlmsCapabilities",
}

GRAPHQL: dict[str, Access] = access_table(ROOT_OPERATIONS)
"""The rule of every root field, looked up through its operation."""

FIELDS: dict[str, Access] = access_table(FIELD_OPERATIONS)
"""Fields of result types that only some callers may read: the others get null and a
``FORBIDDEN`` error for the field (the rest of the answer stays)."""
