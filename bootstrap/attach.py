"""Find the servers of a running ``hes up``, for commands that never start servers themselves.

Commands that run one part on its own (``hes events tail``, ``hes workers run``, ``hes
projections run``, …) use the configured URLs; with a URL unset they attach to the embedded
server that ``hes up`` (or ``make up``) runs under ``HES_DATA_DIR``, as ``hes simulate`` does.
"""

from __future__ import annotations

from bootstrap.embedded import running_nats, running_postgres
from config.settings import Settings


class NotRunning(RuntimeError):
    """A server is neither configured nor running embedded under the data directory."""


def attach(settings: Settings, *, database: bool = True, nats: bool = True) -> Settings:
    """Settings with the needed URLs resolved: configured ones, else a running ``hes up``'s."""
    database_url = settings.database.url
    nats_url = settings.nats.url
    if database and database_url is None:
        pg = running_postgres(settings.runtime.data_dir)
        if pg is None:
            raise NotRunning(_missing("HES_DATABASE_URL", "PostgreSQL", settings))
        database_url = pg.url
    if nats and nats_url is None:
        server = running_nats(settings.runtime.data_dir)
        if server is None:
            raise NotRunning(_missing("HES_NATS_URL", "NATS", settings))
        nats_url = server.url
    return settings.replace(database_url=database_url, nats_url=nats_url)


def _missing(variable: str, server: str, settings: Settings) -> str:
    return (
        f"{variable} is not set and no embedded {server} runs under HES_DATA_DIR="
        f"{settings.runtime.data_dir}: start `hes up` (or `make up`) there first, or set {variable}"
    )
