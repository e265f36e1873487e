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
from strawberry.litestar import make_graphql_controller

from api.auth import TokenService
from api.correlation import CorrelationIdMiddleware
from api.deps import graphql_context, request_context
from api.graphql.schema import schema
from api.health import Health
from api.metrics import metrics
from api.rest.commands import MeterCommands
from api.rest.errors import HANDLERS
from api.rest.imports import MeterImports
from api.rest.intervals import meter_billing_determinants, meter_intervals
from api.rest.telemetry import telemetry_batch
from hes.container import Container


def create_app(
    container: Container, tokens: TokenService, *, manage_container: bool = True
) -> Litestar:
    """Build the HTTP application around an (unopened) container."""

    graphql = make_graphql_controller(
        schema,
        path="/graphql",
        graphql_ide="graphiql",
        context_getter=graphql_context,
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
            metrics,
            telemetry_batch,
            meter_intervals,
            meter_billing_determinants,
        ],
        dependencies={"ctx": Provide(request_context)},
        exception_handlers=HANDLERS,
        state=State({"container": container, "tokens": tokens}),
        on_startup=[open_container] if manage_container else [],
        on_shutdown=[close_container] if manage_container else [],
        openapi_config=OpenAPIConfig(
            title="HES — Head-End System",
            version="0.1.0",
            path="/schema",
            render_plugins=[ScalarRenderPlugin(), SwaggerRenderPlugin(path="/swagger")],
            components=Components(
                security_schemes={
                    "bearer": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")
                }
            ),
            security=[{"bearer": []}],
        ),
        cors_config=CORSConfig(allow_origins=[]),
        stores={"rate_limit": container.store("rate_limit")},
        middleware=[
            CorrelationIdMiddleware(),
            RateLimitConfig(
                rate_limit=("minute", container.settings.rate_limit_per_minute),
                exclude=["/health", "/schema", "/metrics"],
            ).middleware,
        ],
        request_max_body_size=10 * 1024 * 1024,
    )
