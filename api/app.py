"""The Litestar application: GraphQL, REST commands, imports, health, OpenAPI and the console."""

from __future__ import annotations

from collections.abc import Sequence

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from api.auth import TokenService
from api.authentication import AuthenticationMiddleware, Authenticator
from api.correlation import CorrelationIdMiddleware
from api.dangerous import DangerousCommands
from api.deps import request_context
from api.graphql.controller import graphql_controller
from api.guards import access_guard
from api.health import Health, PartHealth
from api.metrics import metrics_endpoint
from api.openapi_errors import document_errors
from api.rate_limit import rate_limit
from api.rest.api_keys import ApiKeys
from api.rest.commands import MeterCommands
from api.rest.customers import CustomerCommands, CustomerImports, CustomerQueriesController
from api.rest.dlms import DlmsCommands, DlmsProfiles, MeterDlms
from api.rest.errors import HANDLERS
from api.rest.fleet import FleetCommands, FleetQueries
from api.rest.imports import MeterImports
from api.rest.intervals import meter_billing_determinants, meter_intervals
from api.rest.sims import SimCommands, SimImports, SimQueriesApi
from api.rest.telemetry import telemetry_batch
from api.security_headers import SecurityHeadersMiddleware
from api.services import Services
from api.web.pages import console_page, static_files, swagger_plugin


def create_app(
    container: Services,
    tokens: TokenService,
    *,
    manage_container: bool = True,
    parts: Sequence[PartHealth] = (),
) -> Litestar:
    """Build the HTTP application around an (unopened) container.

    ``parts``: what else this process runs (child processes, listeners, embedded servers),
    shown and judged by ``/health/ready``.
    """

    settings = container.settings
    origins = settings.api.cors_origin_list
    graphql = graphql_controller(origins)
    dangerous = DangerousCommands(
        container.counter("dangerous"),
        bulk_threshold=settings.api.dangerous_bulk_threshold,
        per_hour=settings.api.dangerous_per_hour,
    )

    async def open_container() -> None:
        await container.open()

    async def close_container() -> None:
        await container.close()

    app = Litestar(
        route_handlers=[
            graphql,
            MeterCommands,
            MeterImports,
            SimQueriesApi,
            SimCommands,
            SimImports,
            CustomerQueriesController,
            CustomerCommands,
            CustomerImports,
            Health,
            metrics_endpoint(settings.api.metrics_token),
            telemetry_batch,
            meter_intervals,
            meter_billing_determinants,
            ApiKeys,
            DlmsCommands,
            DlmsProfiles,
            MeterDlms,
            FleetQueries,
            FleetCommands,
            console_page,
            static_files(),
        ],
        guards=[access_guard],  # every route checked against api.rest.operations.REST
        dependencies={"ctx": Provide(request_context)},
        exception_handlers=HANDLERS,
        state=State(
            {
                "container": container,
                "tokens": tokens,
                "authenticator": Authenticator(tokens, container.api_keys),
                "dangerous": dangerous,
                "parts": tuple(parts),
            }
        ),
        on_startup=[open_container] if manage_container else [],
        on_shutdown=[close_container] if manage_container else [],
        openapi_config=OpenAPIConfig(
            title="HES — Head-End System",
            version="0.1.0",
            path="/schema",
            render_plugins=[swagger_plugin()],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                    "apiKey": SecurityScheme(
                        type="apiKey", name="X-API-Key", security_scheme_in="header"
                    ),
                }
            ),
            security=[{"bearer": []}, {"apiKey": []}],
        ),
        cors_config=CORSConfig(
            allow_origins=origins,
            allow_methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "Idempotency-Key",
                "X-Correlation-ID",
            ],
            expose_headers=["X-Correlation-ID", "Retry-After", "RateLimit-Limit"],
            allow_credentials=False,
        ),
        stores={"rate_limit": container.store("rate_limit")},
        middleware=[
            CorrelationIdMiddleware(),
            SecurityHeadersMiddleware(https=settings.api.https),
            AuthenticationMiddleware(),  # before the rate limit: it counts per caller
            rate_limit(settings.api.rate_limit_per_minute, settings.api.trusted_proxy_networks),
        ],
        request_max_body_size=settings.api.max_body_bytes,
        logging_config=None,  # logs go through the root handler `hes` sets up (JSON lines)
    )
    document_errors(app.openapi_schema)  # the problem answers every operation really gives
    return app
