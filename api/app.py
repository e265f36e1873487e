"""The Litestar application: GraphQL, REST commands, imports, health and OpenAPI."""

from __future__ import annotations

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.di import Provide
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

from api.auth import TokenService
from api.authentication import AuthenticationMiddleware, Authenticator, client_identity
from api.correlation import CorrelationIdMiddleware
from api.dangerous import DangerousCommands
from api.deps import request_context
from api.graphql.controller import graphql_controller
from api.guards import access_guard
from api.health import Health
from api.metrics import metrics_endpoint
from api.rest.api_keys import ApiKeys
from api.rest.commands import MeterCommands
from api.rest.dlms import DlmsCommands, MeterDlms
from api.rest.errors import HANDLERS
from api.rest.imports import MeterImports
from api.rest.intervals import meter_billing_determinants, meter_intervals
from api.rest.telemetry import telemetry_batch
from api.security_headers import SecurityHeadersMiddleware
from hes.container import Container


def create_app(
    container: Container, tokens: TokenService, *, manage_container: bool = True
) -> Litestar:
    """Build the HTTP application around an (unopened) container."""

    settings = container.settings
    origins = settings.cors_origin_list
    graphql = graphql_controller(origins)
    dangerous = DangerousCommands(
        container.counter("dangerous"),
        bulk_threshold=settings.dangerous_bulk_threshold,
        per_hour=settings.dangerous_per_hour,
    )

    async def open_container() -> None:
        await container.open()

    async def close_container() -> None:
        await container.close()

    return Litestar(
        route_handlers=[
            graphql,
            MeterCommands,
            MeterImports,
            Health,
            metrics_endpoint(settings.metrics_token),
            telemetry_batch,
            meter_intervals,
            meter_billing_determinants,
            ApiKeys,
            DlmsCommands,
            MeterDlms,
        ],
        guards=[access_guard],  # every route checked against commands.access.REST
        dependencies={"ctx": Provide(request_context)},
        exception_handlers=HANDLERS,
        state=State(
            {
                "container": container,
                "tokens": tokens,
                "authenticator": Authenticator(tokens, container.api_keys),
                "dangerous": dangerous,
            }
        ),
        on_startup=[open_container] if manage_container else [],
        on_shutdown=[close_container] if manage_container else [],
        openapi_config=OpenAPIConfig(
            title="HES — Head-End System",
            version="0.1.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
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
            SecurityHeadersMiddleware(https=settings.https),
            AuthenticationMiddleware(),  # before the rate limit: it counts per caller
            RateLimitConfig(
                rate_limit=("minute", settings.rate_limit_per_minute),
                exclude=["/health", "/schema", "/metrics"],
                identifier_for_request=client_identity,
            ).middleware,
        ],
        request_max_body_size=settings.max_body_bytes,
        logging_config=None,  # logs go through the root handler `hes` sets up (JSON lines)
    )
