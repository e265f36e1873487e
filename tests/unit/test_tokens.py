"""Token verification: local HS256 and identity-provider keys; every kind of tampering refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from api.auth import JwksKeys, TokenService, Unauthenticated, jwks_from
from commands.context import Role, Scope

SECRET = "unit-secret-" + "s" * 40
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def _claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": "ivy",
        "roles": ["operator"],
        "scope": "ingest",
        "iss": "hes",
        "aud": "hes-api",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwks(tmp_path: Path) -> Path:
    rsa_jwk = json.loads(RSAAlgorithm.to_jwk(RSA_KEY.public_key()))
    ec_jwk = json.loads(ECAlgorithm.to_jwk(EC_KEY.public_key()))
    rsa_jwk.update(kid="rsa-1", alg="RS256", use="sig")
    ec_jwk.update(kid="ec-1", alg="ES256", use="sig")
    # A symmetric key in an IdP's JWKS must never verify anything.
    oct_jwk = {"kty": "oct", "kid": "oct-1", "k": _b64(SECRET.encode()), "alg": "HS256"}
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_jwk, ec_jwk, oct_jwk]}))
    return path


@pytest.fixture
def service(tmp_path: Path) -> TokenService:
    return TokenService(SECRET, "hes", "hes-api", jwks=jwks_from(None, _jwks(tmp_path)))


def test_local_token_round_trip(service: TokenService) -> None:
    token = service.issue("ivy", [Role.OPERATOR], scopes=[Scope.INGEST])
    verified = service.verify_token(token)
    assert verified.actor.subject == "ivy"
    assert verified.actor.roles == {Role.OPERATOR} and verified.actor.scopes == {Scope.INGEST}
    assert verified.expires_at > time.time()


def test_identity_provider_tokens_verify_with_the_jwks(service: TokenService) -> None:
    rs = jwt.encode(_claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    es = jwt.encode(_claims(sub="eve"), EC_KEY, algorithm="ES256", headers={"kid": "ec-1"})
    assert service.verify(rs).subject == "ivy"
    assert service.verify(es).subject == "eve"


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("payload", "signature is invalid"),
        ("alg-none", "algorithm 'none' is not accepted"),
        ("wrong-secret", "signature is invalid"),
        ("wrong-audience", "audience is not this API"),
        ("wrong-issuer", "issuer is not trusted"),
        ("expired", "token expired"),
        ("not-yet-valid", "not valid yet"),
        ("issued-in-future", "not valid yet"),
        ("no-exp", "lacks the 'exp' claim"),
        ("rsa-with-wrong-key", "signature is invalid"),
        ("unknown-kid", "unknown kid"),
        ("alg-swapped-to-hs256-with-public-key", "signature is invalid"),
        ("es256-header-on-rsa-key", "does not match its key"),
        ("symmetric-jwks-key", "algorithm 'HS384' is not accepted"),
        ("garbage", "malformed"),
        ("customer-without-account", "customer_account"),
    ],
)
def test_tampered_tokens_are_refused(service: TokenService, tamper: str, reason: str) -> None:
    good = service.issue("ivy", [Role.OPERATOR])
    now = int(time.time())
    token: str
    if tamper == "payload":
        header, payload, signature = good.split(".")
        claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
        claims["roles"] = ["admin"]
        token = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    elif tamper == "alg-none":
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        token = f"{header}.{_b64(json.dumps(_claims(roles=['admin'])).encode())}."
    elif tamper == "wrong-secret":
        token = jwt.encode(_claims(), "another-secret-" + "z" * 40, algorithm="HS256")
    elif tamper == "wrong-audience":
        token = jwt.encode(_claims(aud="other-api"), SECRET, algorithm="HS256")
    elif tamper == "wrong-issuer":
        token = jwt.encode(_claims(iss="evil"), SECRET, algorithm="HS256")
    elif tamper == "expired":
        token = jwt.encode(_claims(iat=now - 7200, exp=now - 3600), SECRET, algorithm="HS256")
    elif tamper == "not-yet-valid":
        token = jwt.encode(_claims(nbf=now + 3600), SECRET, algorithm="HS256")
    elif tamper == "issued-in-future":
        token = jwt.encode(_claims(iat=now + 3600, exp=now + 7200), SECRET, algorithm="HS256")
    elif tamper == "no-exp":
        token = jwt.encode(_claims(exp=None), SECRET, algorithm="HS256")
    elif tamper == "rsa-with-wrong-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(_claims(), other, algorithm="RS256", headers={"kid": "rsa-1"})
    elif tamper == "unknown-kid":
        token = jwt.encode(_claims(), RSA_KEY, algorithm="RS256", headers={"kid": "rsa-9"})
    elif tamper == "alg-swapped-to-hs256-with-public-key":
        public_pem = RSA_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = _b64(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
        body = _b64(json.dumps(_claims(roles=["admin"])).encode())
        mac = hmac.new(public_pem, f"{header}.{body}".encode(), hashlib.sha256).digest()
        token = f"{header}.{body}.{_b64(mac)}"
    elif tamper == "es256-header-on-rsa-key":
        token = jwt.encode(_claims(), EC_KEY, algorithm="ES256", headers={"kid": "rsa-1"})
    elif tamper == "symmetric-jwks-key":
        token = jwt.encode(_claims(), SECRET, algorithm="HS384", headers={"kid": "oct-1"})
    elif tamper == "garbage":
        token = "eyJhbGciOi.garbage"
    elif tamper == "customer-without-account":
        token = jwt.encode(_claims(roles=["customer"]), SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=reason) as refused:
        service.verify(token)
    assert token not in str(refused.value)


def test_roles_claim_path_and_scp_list(tmp_path: Path) -> None:
    service = TokenService(
        SECRET,
        "https://idp.example/realms/grid",
        "hes-api",
        jwks=JwksKeys(file=_jwks(tmp_path)),
        roles_claim="realm_access.roles",
    )
    claims = _claims(
        iss="https://idp.example/realms/grid",
        realm_access={"roles": ["auditor", "offline_access"]},
        roles=None,
        scope=None,
        scp=["export", "unknown"],
    )
    token = jwt.encode(claims, RSA_KEY, algorithm="RS256", headers={"kid": "rsa-1"})
    actor = service.verify(token)
    assert actor.roles == {Role.AUDITOR} and actor.scopes == {Scope.EXPORT}


def test_jwks_file_is_reread_when_the_provider_rotates_keys(tmp_path: Path) -> None:
    path = _jwks(tmp_path)
    service = TokenService(SECRET, "hes", "hes-api", jwks=jwks_from(None, path))
    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(_claims(), new_key, algorithm="RS256", headers={"kid": "rsa-2"})
    with pytest.raises(Unauthenticated, match="unknown kid"):
        service.verify(token)
    jwk = json.loads(RSAAlgorithm.to_jwk(new_key.public_key())) | {"kid": "rsa-2", "alg": "RS256"}
    path.write_text(json.dumps({"keys": [jwk]}))
    os.utime(path, (time.time() + 5, time.time() + 5))  # a new mtime even within one tick
    assert service.verify(token).subject == "ivy"


def test_a_broken_jwks_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{"keys": "nope"}')
    with pytest.raises(ValueError, match="HES_JWT_JWKS_FILE"):
        jwks_from(None, path)


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"sub": "ivy\x00"}, "control characters"),
        ({"sub": "ivy\nroot"}, "control characters"),
        ({"roles": ["customer"], "customer_account": "ACC\x001"}, "customer_account"),
        ({"roles": ["customer"], "customer_account": "ACC 1"}, "customer_account"),
    ],
)
def test_identity_provider_claims_obey_the_text_rules(
    service: TokenService, claims: dict[str, Any], reason: str
) -> None:
    token = jwt.encode(_claims(iss="hes", **claims), SECRET, algorithm="HS256")
    with pytest.raises(Unauthenticated, match=reason):
        service.verify_token(token)
