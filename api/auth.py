"""Bearer JWT authentication: issue tokens locally, verify them on every request."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterable
from pathlib import Path

import jwt

from commands.context import Actor, Role, Scope

ALGORITHM = "HS256"


class Unauthenticated(Exception):
    """No credentials, or credentials that cannot be trusted (answer 401)."""


class TokenService:
    """Signs and verifies HS256 JWTs for one issuer and audience."""

    def __init__(self, secret: str, issuer: str, audience: str) -> None:
        if len(secret) < 32:
            raise ValueError("JWT secret must have at least 32 characters")
        self._secret = secret
        self.issuer = issuer
        self.audience = audience

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

    def verify(self, token: str) -> Actor:
        """The actor a valid token names; raises ``Unauthenticated`` with the reason otherwise."""
        try:
            claims = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp", "iat", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("token audience is not this API") from None
        except jwt.InvalidIssuerError:
            raise Unauthenticated("token issuer is not trusted") from None
        except (jwt.InvalidSignatureError, jwt.DecodeError):
            raise Unauthenticated("token signature is invalid or the token is malformed") from None
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token is invalid: {exc}") from None
        raw_roles = claims.get("roles", [])
        if not isinstance(raw_roles, list):
            raise Unauthenticated("token claim 'roles' must be a list")
        roles: set[Role] = set()
        for name in raw_roles:
            try:
                roles.add(Role(name))
            except ValueError:
                continue  # roles of other systems sharing the identity provider
        raw_scope = claims.get("scope", "")
        if not isinstance(raw_scope, str):
            raise Unauthenticated("token claim 'scope' must be a space-separated string")
        scopes = {Scope(s) for s in raw_scope.split() if s in Scope.__members__.values()}
        customer = claims.get("customer_account")
        if Role.CUSTOMER in roles and not isinstance(customer, str):
            raise Unauthenticated("customer token lacks the 'customer_account' claim")
        return Actor(
            subject=str(claims["sub"]),
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


def load_or_create_secret(data_dir: Path) -> str:
    """The signing secret kept in ``data_dir/jwt-secret`` (created, mode 0600, on first use)."""
    path = data_dir / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(48)
    path.touch(mode=0o600)
    path.write_text(secret)
    return secret
