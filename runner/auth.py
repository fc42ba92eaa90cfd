"""Bearer JWT (HS256) for the admin endpoints. The token carries the tenant (`tenant_id`, or
`app_metadata.tenant_id` as Supabase puts it) and must not be expired."""

from __future__ import annotations

import uuid

import jwt


class AuthError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def tenant_from_authorization(header: str | None, secret: str | None) -> tuple[uuid.UUID, dict]:
    if not secret:
        raise AuthError(503, "admin API disabled: STOREOPS_JWT_SECRET is not set")
    if not header or not header.lower().startswith("bearer "):
        raise AuthError(401, "missing bearer token")
    token = header[7:].strip()
    try:
        claims = jwt.decode(token, secret, algorithms=["HS256"], options={"require": ["exp"]},
                            leeway=5)
    except jwt.ExpiredSignatureError as exc:
        raise AuthError(401, "token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise AuthError(401, f"invalid token: {exc}") from exc
    raw = claims.get("tenant_id") or (claims.get("app_metadata") or {}).get("tenant_id")
    if not raw:
        raise AuthError(403, "token carries no tenant_id")
    try:
        return uuid.UUID(str(raw)), claims
    except ValueError as exc:
        raise AuthError(403, "token tenant_id is not a uuid") from exc


def make_token(secret: str, tenant_id: str, ttl_seconds: int = 3600, **extra) -> str:
    """Mint a token (tests, `storeops simulate`, and operators scripting the admin API)."""
    import time

    now = int(time.time())
    claims = {"tenant_id": str(tenant_id), "iat": now, "exp": now + ttl_seconds, "role": "authenticated", **extra}
    return jwt.encode(claims, secret, algorithm="HS256")
