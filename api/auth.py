"""Bearer JWT authentication: issue local tokens, verify local and identity-provider tokens.

Local tokens are HS256, signed with the deployment's secret (``hes token``). Tokens of an
external identity provider are verified with its public keys (RS*/PS*/ES*/EdDSA) from a JWKS
URL or file. Every token must name this API's issuer and audience and carry ``exp``, ``iat``
and ``sub``; ``nbf`` is honoured when present. ``alg: none`` and symmetric keys in a JWKS are
never accepted, and a token's ``alg`` must match the key it names (no algorithm confusion).
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
import msgspec
from jwt import PyJWK, PyJWKClient, PyJWKSet

from adapters.key_file import load_or_create_key_file
from commands.context import Actor, Role, Scope
from domain.text import CODE_RE, CODE_RULE, refused_character

ALGORITHM = "HS256"
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


class Unauthenticated(Exception):
    """No credentials, or credentials that cannot be trusted (answer 401)."""


class Verified(msgspec.Struct, frozen=True, kw_only=True):
    """A verified token's actor and when the token stops being valid (epoch seconds)."""

    actor: Actor
    expires_at: float


class JwksKeys:
    """Public keys of an identity provider, from a JWKS URL (cached) or file (re-read on change)."""

    def __init__(self, *, url: str | None = None, file: Path | None = None) -> None:
        if (url is None) == (file is None):
            raise ValueError("give exactly one of url or file")
        self._client = PyJWKClient(url, lifespan=300, timeout=5) if url else None
        self._file = file
        self._lock = threading.Lock()
        self._mtime: float | None = None
        self._set: PyJWKSet | None = None
        self.blocking = url is not None
        """True when a lookup may go to the network (call it off the event loop)."""

    def key(self, kid: str | None) -> PyJWK:
        """The signing key named ``kid`` (or the only key, when the token names none)."""
        try:
            keys = self._client.get_signing_keys() if self._client else list(self._file_set())
            if kid is None and len(keys) == 1:
                return keys[0]
            if kid is None:
                raise Unauthenticated("token header lacks 'kid' and the JWKS has several keys")
            if self._client:
                return self._client.get_signing_key(kid)
            for key in keys:
                if key.key_id == kid:
                    return key
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"no key to verify the token: {exc}") from None
        raise Unauthenticated(f"no key to verify the token: unknown kid {kid[:64]!r}")

    def _file_set(self) -> PyJWKSet:
        assert self._file is not None
        with self._lock:
            mtime = self._file.stat().st_mtime
            if self._set is None or mtime != self._mtime:
                self._set = PyJWKSet.from_json(self._file.read_text())
                self._mtime = mtime
            return self._set


class TokenService:
    """Signs HS256 JWTs for one issuer and audience; verifies them and identity-provider ones."""

    def __init__(
        self,
        secret: str,
        issuer: str,
        audience: str,
        *,
        jwks: JwksKeys | None = None,
        roles_claim: str = "roles",
        leeway_seconds: int = 30,
    ) -> None:
        if len(secret) < 32:
            raise ValueError("JWT secret must have at least 32 characters")
        self._secret = secret
        self.issuer = issuer
        self.audience = audience
        self.jwks = jwks
        self._roles_path = roles_claim.split(".")
        self._leeway = leeway_seconds

    def __repr__(self) -> str:
        return f"TokenService(issuer={self.issuer!r}, audience={self.audience!r})"

    def issue(
        self,
        subject: str,
        roles: Iterable[Role],
        *,
        scopes: Iterable[Scope] = (),
        customer_account: str | None = None,
        ttl_seconds: int = 12 * 3600,
    ) -> str:
        """A signed token for ``subject`` holding ``roles`` and ``scopes``."""
        now = int(time.time())
        claims: dict[str, object] = {
            "sub": subject,
            "roles": sorted(str(r) for r in roles),
            "scope": " ".join(sorted(str(s) for s in scopes)),
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + ttl_seconds,
        }
        if customer_account is not None:
            claims["customer_account"] = customer_account
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM)

    def blocking(self, token: str) -> bool:
        """True when verifying ``token`` may fetch keys over the network."""
        if self.jwks is None or not self.jwks.blocking:
            return False
        try:
            return jwt.get_unverified_header(token).get("alg") != ALGORITHM
        except jwt.PyJWTError:
            return False

    def verify(self, token: str) -> Actor:
        """The actor a valid token names; raises ``Unauthenticated`` with the reason otherwise."""
        return self.verify_token(token).actor

    def verify_token(self, token: str) -> Verified:
        """The actor and expiry of a valid token; raises ``Unauthenticated`` otherwise."""
        key, algorithm = self._key_for(token)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not valid yet (nbf/iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not this API") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not trusted") from None
        except (jwt.InvalidSignatureError, jwt.DecodeError):
            raise Unauthenticated("token signature is invalid or the token is malformed") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthenticated(f"token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token is invalid: {type(exc).__name__}") from None
        local = algorithm == ALGORITHM  # our own tokens keep their roles in "roles"
        return Verified(actor=self._actor(claims, local), expires_at=float(claims["exp"]))

    def _key_for(self, token: str) -> tuple[Any, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthenticated("token is malformed") from None
        alg = header.get("alg")
        if alg == ALGORITHM:
            return self._secret, ALGORITHM
        if alg in ASYMMETRIC and self.jwks is not None:
            kid = header.get("kid")
            key = self.jwks.key(kid if isinstance(kid, str) else None)
            if key.algorithm_name != alg:
                raise Unauthenticated(f"token algorithm {alg} does not match its key")
            return key, alg
        raise Unauthenticated(f"token algorithm {str(alg)[:16]!r} is not accepted")

    def _actor(self, claims: Mapping[str, Any], local: bool) -> Actor:
        path = ["roles"] if local else self._roles_path
        raw_roles: Any = claims
        for part in path:
            raw_roles = raw_roles.get(part, []) if isinstance(raw_roles, Mapping) else []
        if not isinstance(raw_roles, list):
            raise Unauthenticated(f"token claim {'.'.join(path)!r} must be a list")
        roles: set[Role] = set()
        for name in raw_roles:
            try:
                roles.add(Role(name))
            except ValueError:
                continue  # roles of other systems sharing the identity provider
        raw_scope = claims.get("scope", claims.get("scp", ""))
        if isinstance(raw_scope, list):  # e.g. Azure AD's scp
            raw_scope = " ".join(str(s) for s in raw_scope)
        if not isinstance(raw_scope, str):
            raise Unauthenticated("token claim 'scope' must be a space-separated string")
        known = {s.value for s in Scope}
        scopes = {Scope(s) for s in raw_scope.split() if s in known}
        customer = claims.get("customer_account")
        if Role.CUSTOMER in roles and not isinstance(customer, str):
            raise Unauthenticated("customer token lacks the 'customer_account' claim")
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= 200:
            raise Unauthenticated("token claim 'sub' must be a string of 1..200 characters")
        if refused_character(subject) is not None:
            # the subject is recorded as the actor of every command: text rules apply
            raise Unauthenticated("token claim 'sub' must not hold control characters")
        if isinstance(customer, str) and not CODE_RE.fullmatch(customer):
            raise Unauthenticated(f"token claim 'customer_account' must be {CODE_RULE}")
        return Actor(
            subject=subject,
            roles=frozenset(roles),
            scopes=frozenset(scopes),
            customer_account=customer if isinstance(customer, str) else None,
        )

    def from_header(self, header: str | None) -> Actor:
        """The actor of an ``Authorization: Bearer`` header; ``Unauthenticated`` when absent."""
        if not header:
            raise Unauthenticated("missing Authorization: Bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authorization header must be 'Bearer <token>'")
        return self.verify(token.strip())


def jwks_from(url: str | None, file: Path | None) -> JwksKeys | None:
    """The identity provider's keys configured in settings, or None; checks a file now."""
    if url is not None:
        return JwksKeys(url=url)
    if file is not None:
        try:
            PyJWKSet.from_json(file.read_text())
        except (OSError, json.JSONDecodeError, jwt.PyJWTError) as exc:
            raise ValueError(f"HES_JWT_JWKS_FILE={file}: not a usable JWKS ({exc})") from None
        return JwksKeys(file=file)
    return None


def load_or_create_secret(data_dir: Path) -> str:
    """The signing secret kept in ``data_dir/jwt-secret`` (created, mode 0600, on first use)."""
    return load_or_create_key_file(
        data_dir / "jwt-secret", lambda: secrets.token_urlsafe(48)
    ).strip()
