"""The one place that constructs the command applications (from the database section)."""

from __future__ import annotations

from adapters.customer_keys import CustomerKeys, customer_master_key
from commands.alerts import AlertDesk
from commands.api_keys import ApiKeyRegistry
from commands.customers import CustomerBook
from commands.fleet import FleetOperations
from commands.meters import MeterRegistry
from commands.operations import OperationsLog
from commands.sims import SimInventory
from commands.tariffs import TariffBook
from config.settings import DatabaseSettings, Settings, SettingsError


def _env(database: DatabaseSettings, create_tables: bool) -> dict[str, str]:
    env = database.eventsourcing_env()
    return env | {"CREATE_TABLE": "y"} if create_tables else env


def meter_registry(database: DatabaseSettings, *, create_tables: bool = False) -> MeterRegistry:
    """The meters application on the configured event store."""
    return MeterRegistry(env=_env(database, create_tables))


def tariff_book(database: DatabaseSettings, *, create_tables: bool = False) -> TariffBook:
    """The tariffs application on the configured event store."""
    return TariffBook(env=_env(database, create_tables))


def alert_desk(database: DatabaseSettings, *, create_tables: bool = False) -> AlertDesk:
    """The alerts application on the configured event store."""
    return AlertDesk(env=_env(database, create_tables))


def api_key_registry(database: DatabaseSettings, *, create_tables: bool = False) -> ApiKeyRegistry:
    """The API-key application on the configured event store."""
    return ApiKeyRegistry(env=_env(database, create_tables))


def sim_inventory(database: DatabaseSettings, *, create_tables: bool = False) -> SimInventory:
    """The SIM-card inventory application on the configured event store."""
    return SimInventory(env=_env(database, create_tables))


def fleet_operations(database: DatabaseSettings, *, create_tables: bool = False) -> FleetOperations:
    """The fleet operations application (images, TOU plans, campaigns) on the event store."""
    return FleetOperations(env=_env(database, create_tables))


def operations_log(database: DatabaseSettings, *, create_tables: bool = False) -> OperationsLog:
    """The operators' interventions log on the configured event store."""
    return OperationsLog(env=_env(database, create_tables))


def customer_book(
    database: DatabaseSettings, master_key: bytes | None = None, *, create_tables: bool = False
) -> CustomerBook:
    """The customer book on the configured event store (``master_key`` opens personal data)."""
    if master_key is None:
        return CustomerBook(env=_env(database, create_tables))
    key = master_key
    return CustomerBook(
        env=_env(database, create_tables), keys=lambda datastore: CustomerKeys(datastore, key)
    )


def keyed_customer_book(settings: Settings) -> CustomerBook:
    """The customer book with the customer master key of ``settings``."""
    try:
        key = customer_master_key(settings.customers.master_key, settings.runtime.data_dir)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    return customer_book(settings.database, key)


def checked_registry(settings: Settings) -> tuple[MeterRegistry, CustomerBook]:
    """A meter registry that (per ``HES_CUSTOMER_LINKS_CHECKED``) checks customer accounts."""
    registry = meter_registry(settings.database)
    book = keyed_customer_book(settings)
    if settings.customers.links_checked:
        registry.customers = book
    return registry, book


def create_event_stores(database: DatabaseSettings) -> None:
    """Create every application's event-store tables (an application does so when built)."""
    for build in (
        meter_registry,
        tariff_book,
        alert_desk,
        api_key_registry,
        sim_inventory,
        operations_log,
        customer_book,
        fleet_operations,
    ):
        build(database, create_tables=True).close()
