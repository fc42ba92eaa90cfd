"""The provider webhook endpoints: authenticate, pick the tenant, dedup key, store, acknowledge.

Razorpay: `X-Razorpay-Signature` is the hex HMAC-SHA256 of the raw body keyed with the webhook
secret: the tenant's own (two may be active during a rotation) or, for a tenant without one,
RAZORPAY_WEBHOOK_SECRET. The tenant comes from the URL (`/functions/v1/razorpay-webhook/{tenant}`)
or from the Razorpay order id in the payload. Dedup on `x-razorpay-event-id`, else a body hash.

Shiprocket: the token in `x-api-key`, per tenant with SHIPROCKET_WEBHOOK_SECRET as the platform
default; dedup on awb + shipment_status_id + current_timestamp; success is exactly 200.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner import metrics
from runner.db import is_unavailable
from runner.intake import BodyTooLarge, read_body

log = logging.getLogger("storeops.webhooks")


class Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


def _reject(provider: str, request: Request, exc: Rejected) -> Response:
    metrics.WEBHOOKS_REJECTED.labels(provider, exc.reason).inc()
    log.warning("webhook rejected", extra={
        "provider": provider, "status": exc.status, "reason": exc.reason, "detail": str(exc),
        "request_id": request.state.request_id, "source": request.client.host if request.client else None,
    })
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)


def _parse_json(body: bytes) -> dict:
    if b"\\u0000" in body:
        raise Rejected(400, "malformed", "body contains a NUL character (\\u0000), which cannot be stored")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, "malformed", f"body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise Rejected(400, "malformed", "body must be a JSON object")
    return payload


def _path_tenant(request: Request) -> str | None:
    raw = request.path_params.get("tenant_id")
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError as exc:
        raise Rejected(404, "unknown_tenant", f"unknown tenant {raw!r}") from exc


def _rate_limit(request: Request, key: str, limiter) -> None:
    if limiter.rate <= 0:  # turned off (0): nothing to check
        return
    wait = limiter.check(key)
    if wait > 0:
        retry = max(1, int(wait + 0.999))
        raise Rejected(429, "rate_limited", f"rate limit exceeded for {key}; retry after {retry}s",
                       headers={"Retry-After": str(retry)})


def _razorpay_order_id(payload: dict) -> str | None:
    entities = payload.get("payload")
    if not isinstance(entities, dict):
        return None
    for name in ("payment", "order", "refund"):
        entity = (entities.get(name) or {}).get("entity") if isinstance(entities.get(name), dict) else None
        if not isinstance(entity, dict):
            continue
        value = entity.get("id") if name == "order" else entity.get("order_id")
        if isinstance(value, str) and value:
            return value
    return None


_COUNTERS: dict[tuple[bool, str, str], object] = {}
_LATENCY: dict[str, object] = {}


def _counter(is_new: bool, provider: str, webhook_type: str):
    """The labelled counter child, looked up once per (outcome, provider, type) instead of per request."""
    key = (is_new, provider, webhook_type)
    child = _COUNTERS.get(key)
    if child is None:
        child = (metrics.WEBHOOKS_RECEIVED if is_new else metrics.WEBHOOKS_DUPLICATE).labels(provider, webhook_type[:64])
        if len(_COUNTERS) < 10_000:
            _COUNTERS[key] = child
    return child


def _latency(provider: str):
    child = _LATENCY.get(provider)
    if child is None:
        child = _LATENCY[provider] = metrics.INGEST_LATENCY.labels(provider)
    return child


def _ok(content: dict) -> Response:
    """The same bytes and headers as JSONResponse(content), serialised by orjson."""
    return Response(orjson.dumps(content), media_type="application/json")


async def _store(request: Request, provider: str, kind: str, tenant_id: str | None, event_id: str,
                 webhook_type: str, body: bytes, started: float) -> bool:
    app_state = request.app.state
    try:
        is_new = await app_state.batchers[kind].submit(tenant_id, event_id, webhook_type, body.decode())
    except Exception as exc:
        if is_unavailable(exc) or isinstance(exc, TimeoutError):
            raise Rejected(503, "database_unavailable", "storage unavailable, retry later",
                           headers={"Retry-After": "5"}) from exc
        if isinstance(exc, psycopg.DataError):  # e.g. a number jsonb cannot hold (1e-20000)
            detail = exc.diag.message_primary or str(exc).splitlines()[0]
            raise Rejected(400, "malformed", f"body has a value that cannot be stored: {detail}") from exc
        raise
    _counter(is_new, provider, webhook_type).inc()
    _latency(provider).observe(time.perf_counter() - started)
    log.info("webhook stored" if is_new else "webhook duplicate", extra={
        "provider": provider, "event_id": event_id, "type": webhook_type, "tenant_id": tenant_id,
        "request_id": request.state.request_id,
    })
    return is_new


async def _receive(request: Request, credential_header: str) -> tuple[str | None, bytes, str]:
    """What both providers' endpoints do first: the per-source rate limit, the URL's tenant, the raw
    body (413 past the limit) and the credential header (401 when missing)."""
    _rate_limit(request, f"source:{request.client.host if request.client else '-'}", request.app.state.source_limiter)
    tenant_id = _path_tenant(request)
    try:
        body = await read_body(request, request.app.state.ctx.settings.max_body_bytes)
    except BodyTooLarge as exc:
        raise Rejected(413, "too_large", str(exc)) from exc
    credential = request.headers.get(credential_header)
    if not credential:
        raise Rejected(401, "unsigned", f"missing {credential_header} header")
    return tenant_id, body, credential


async def _tenant_credentials(request: Request, tenant_id: str | None, lookup: str | None, lookup_args: tuple,
                              kind: str, platform: str | None, what: str):
    """The tenant (from the URL, else from `lookup` over the payload's references) and the secrets
    to check against: the tenant's own when it has any, else the platform's. Returns
    (tenant_id, config or None, secrets). 404 for a URL tenant that does not exist, 503 when the
    database cannot be asked, 401 when nothing is configured."""
    ctx = request.app.state.ctx
    try:
        if tenant_id is None and lookup is not None:
            async with ctx.pool.connection(timeout=4.0) as conn:
                row = await (await conn.execute(lookup, lookup_args)).fetchone()
            tenant_id = str(row[0]) if row and row[0] else None
        cfg = await ctx.tenant_webhook_config(tenant_id, kind) if tenant_id else None
    except Exception as exc:
        if is_unavailable(exc):
            raise Rejected(503, "database_unavailable", "storage unavailable, retry later",
                           headers={"Retry-After": "5"}) from exc
        raise
    if request.path_params.get("tenant_id") is not None and (cfg is None or not cfg.exists):
        raise Rejected(404, "unknown_tenant", f"unknown tenant {tenant_id}")
    secrets = cfg.secrets if cfg and cfg.secrets else [platform] if platform else []
    if not secrets:
        raise Rejected(401, "no_secret", f"no {what} is configured for this tenant")
    return tenant_id, cfg, secrets


async def razorpay_webhook(request: Request) -> Response:
    from runner import razorpay

    started = time.perf_counter()
    settings = request.app.state.ctx.settings
    try:
        tenant_id, body, signature = await _receive(request, "X-Razorpay-Signature")
        payload = _parse_json(body)
        event = payload.get("event")
        if not isinstance(event, str) or not event:
            raise Rejected(400, "malformed", "body has no \"event\" name")
        order_id = _razorpay_order_id(payload)
        tenant_id, cfg, secrets = await _tenant_credentials(
            request, tenant_id, "select storeops.get_tenant_for_razorpay_order(%s)" if order_id else None, (order_id,),
            "razorpay_webhook", settings.razorpay_webhook_secret, "Razorpay webhook secret")
        if not razorpay.verify_signature(body, signature, secrets):
            raise Rejected(401, "bad_signature", "X-Razorpay-Signature does not match the body")
        if cfg and cfg.account_id and payload.get("account_id") != cfg.account_id:
            raise Rejected(401, "account_mismatch", "account_id in the webhook does not belong to this tenant")
        if tenant_id:
            _rate_limit(request, f"tenant:{tenant_id}", request.app.state.tenant_limiter)
        event_id = request.headers.get("x-razorpay-event-id") or "sha256:" + hashlib.sha256(body).hexdigest()
        is_new = await _store(request, "razorpay", "payment", tenant_id, event_id, event, body, started)
    except Rejected as exc:
        return _reject("razorpay", request, exc)
    return _ok({"status": "ok" if is_new else "duplicate", "event_id": event_id})


async def shiprocket_webhook(request: Request) -> Response:
    from runner import shiprocket

    started = time.perf_counter()
    settings = request.app.state.ctx.settings
    try:
        tenant_id, body, token = await _receive(request, "x-api-key")
        payload = _parse_json(body)
        try:
            event_id = shiprocket.event_key(payload)
            webhook_type = shiprocket.webhook_type(payload)
        except (KeyError, TypeError, ValueError, RecursionError) as exc:
            raise Rejected(400, "malformed", f"not a Shiprocket tracking event: {exc}") from exc
        awb, order_ref = payload.get("awb"), payload.get("sr_order_id") or payload.get("order_id")
        tenant_id, _cfg, tokens = await _tenant_credentials(
            request, tenant_id, "select storeops.get_tenant_for_awb(%s, %s)",
            (str(awb) if awb is not None else None, str(order_ref) if order_ref is not None else None),
            "shiprocket_webhook", settings.shiprocket_webhook_secret, "Shiprocket webhook token")
        if not shiprocket.verify_token(token, tokens):
            raise Rejected(401, "bad_token", "x-api-key does not match")
        if tenant_id:
            _rate_limit(request, f"tenant:{tenant_id}", request.app.state.tenant_limiter)
        is_new = await _store(request, "shiprocket", "shipping", tenant_id, event_id, webhook_type, body, started)
    except Rejected as exc:
        return _reject("shiprocket", request, exc)
    return _ok({"status": "ok" if is_new else "duplicate"})
