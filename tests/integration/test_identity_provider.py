"""An external identity provider's tokens, verified with keys fetched from its JWKS URL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from litestar.testing import AsyncTestClient

from api.app import create_app
from bootstrap.container import Container
from bootstrap.runtime import token_service
from bootstrap.workers import SupervisedProjection
from commands.context import Role
from config.settings import Settings

pytestmark = pytest.mark.integration
ISSUER = "https://idp.example/realms/grid"
KEY = ec.generate_private_key(ec.SECP256R1())


class _Jwks(BaseHTTPRequestHandler):
    fetched = 0

    def do_GET(self) -> None:
        jwk = json.loads(ECAlgorithm.to_jwk(KEY.public_key())) | {"kid": "idp-1", "alg": "ES256"}
        body = json.dumps({"keys": [jwk]}).encode()
        type(self).fetched += 1
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def jwks_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Jwks)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/certs"
    server.shutdown()


def _token(**claims: Any) -> str:
    now = int(time.time())
    body = {
        "sub": "idp-user-7",
        "iss": ISSUER,
        "aud": "hes-api",
        "iat": now,
        "exp": now + 300,
        "realm_access": {"roles": ["auditor", "uma_authorization"]},
    } | claims
    return jwt.encode(body, KEY, algorithm="ES256", headers={"kid": "idp-1"})


async def test_identity_provider_tokens_open_the_api_by_their_roles(
    settings: Settings, jwks_url: str, projection: SupervisedProjection
) -> None:
    configured = settings.replace(
        jwt_issuer=ISSUER,
        jwt_jwks_url=jwks_url,
        jwt_roles_claim="realm_access.roles",
    )
    app = create_app(Container(configured), token_service(configured))
    async with AsyncTestClient(app=app) as client:
        auditor = {"Authorization": f"Bearer {_token()}"}
        listed = await client.get("/api/v1/api-keys", headers=auditor)
        assert listed.status_code == 200, listed.text
        refused = await client.post("/api/v1/api-keys", json={"name": "x"}, headers=auditor)
        assert refused.status_code == 403
        for bad, reason in (
            (_token(aud="other"), "audience"),
            (_token(iss="https://evil.example"), "issuer"),
            (_token(exp=int(time.time()) - 600), "expired"),
        ):
            answer = await client.get(
                "/api/v1/api-keys", headers={"Authorization": f"Bearer {bad}"}
            )
            assert answer.status_code == 401 and reason in answer.json()["detail"]
        # The key set is cached: many requests, one fetch.
        for _ in range(5):
            await client.get("/api/v1/api-keys", headers=auditor)
        assert _Jwks.fetched == 1
        # Local tokens of `hes token` keep working next to the provider's.
        local = app.state.tokens.issue("ops", [Role.AUDITOR])
        answer = await client.get("/api/v1/api-keys", headers={"Authorization": f"Bearer {local}"})
        assert answer.status_code == 200


def test_settings_refuse_a_plain_http_jwks_url_off_localhost() -> None:
    from config.settings import SettingsError

    with pytest.raises(SettingsError, match="HES_JWT_JWKS_URL"):
        Settings.from_env({"HES_JWT_JWKS_URL": "http://idp.example/certs"})
    with pytest.raises(SettingsError, match="at most one"):
        Settings.from_env(
            {"HES_JWT_JWKS_URL": "https://idp.example/certs", "HES_JWT_JWKS_FILE": "/tmp/x"}
        )
