"""The provider webhook endpoints: authenticate, pick the tenant, dedup key, store, acknowledge.

Razorpay: `X-Razorpay-Signature` is the hex HMAC-SHA256 of the raw body keyed with the webhook
secret: the tenant's own (two may be active during a rotation) or, for a tenant without one,
RAZORPAY_WEBHOOK_SECRET. The tenant comes from the URL (`/functions/v1/razorpay-webhook/{tenant}`)
or from the Razorpay order id in the payload. Dedup on `x-razorpay-event-id`, else a body hash.

Shiprocket: the token in `x-api-key`, per tenant with SHIPROCKET_WEBHOOK_SECRET as the platform
default; dedup on awb + shipment_status_id + current_timestamp; success is exactly 200.

These are plain ASGI handlers, not Starlette endpoints: they are the hot path (thousands of
requests a second per process), and Starlette's request objects, routing and middleware cost more
CPU per webhook than the webhook's own work. `runner.app.App` hands a POST to one of the paths
below straight to `handle`; anything else (another method, an odd path) goes through Starlette's
router, which mounts the same handlers, so both ways behave the same.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from http import HTTPStatus
from typing import Any

import orjson
import psycopg

from runner import metrics, razorpay, shiprocket
from runner.db import is_unavailable

log = logging.getLogger("storeops.webhooks")

RAZORPAY_PATHS = ("/functions/v1/razorpay-webhook",)
SHIPROCKET_PATHS = ("/functions/v1/shiprocket-webhook", "/functions/v1/shipping-webhook")


class Rejected(Exception):
    def __init__(self, status: int, reason: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.headers = headers or {}


class _Disconnected(Exception):
    pass


# -- request ids ------------------------------------------------------------------------------------

_ID_PREFIX = os.urandom(10).hex()  # 20 hex digits per process (re-drawn after fork, see reseed_request_ids)
_id_counter = 0


def reseed_request_ids() -> None:
    """A new per-process prefix; called in each forked serve process so ids never repeat across them."""
    global _ID_PREFIX, _id_counter
    _ID_PREFIX, _id_counter = os.urandom(10).hex(), 0


def request_id(given: bytes | None) -> str:
    """The caller's X-Request-Id (first 64 characters), else a new 32-hex-digit id: a random
    per-process prefix and a counter, which is unique like uuid4().hex at a fraction of its cost."""
    global _id_counter
    if given:
        return given.decode("latin-1")[:64]
    _id_counter += 1
    return f"{_ID_PREFIX}{_id_counter:012x}"


os.register_at_fork(after_in_child=reseed_request_ids)


# -- the request ----------------------------------------------------------------------------------

class WebhookRequest:
    """What a webhook handler needs from the ASGI scope: headers by lower-case name, the client,
    the tenant segment of the path, and the request id."""

    __slots__ = ("scope", "receive", "headers", "request_id", "path_tenant", "state", "preread")

    def __init__(self, scope, receive, state, path_tenant: str | None, body: bytes | None = None):
        self.scope = scope
        self.receive = receive
        self.preread = body  # the whole body when the HTTP layer has read it already (runner.fasthttp)
        self.state = state
        self.path_tenant = path_tenant
        self.headers = headers = dict(scope["headers"])
        self.request_id = scope.setdefault("state", {}).get("request_id") or request_id(headers.get(b"x-request-id"))
        scope["state"]["request_id"] = self.request_id

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return value.decode("latin-1") if value is not None else None

    @property
    def source(self) -> str:
        client = self.scope.get("client")
        return client[0] if client else "-"

    async def body(self, limit: int) -> bytes:
        """The raw body, refusing more than `limit` bytes before reading it all."""
        declared = self.headers.get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = 0
            if size > limit:
                raise Rejected(413, "too_large", f"body of {size} bytes exceeds the {limit} byte limit")
        if self.preread is not None:
            _check_size(self.preread, limit)
            return self.preread
        receive = self.receive
        message = await receive()
        if message["type"] != "http.request":
            raise _Disconnected()
        body = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise Rejected(413, "too_large", f"body exceeds the {limit} byte limit")
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise _Disconnected()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Rejected(413, "too_large", f"body exceeds the {limit} byte limit")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


_JSON = b"application/json"


async def _respond(send, status: int, body: bytes, request_id: str, headers: dict | None = None) -> None:
    head = [(b"content-type", _JSON), (b"content-length", b"%d" % len(body)),
            (b"x-request-id", request_id.encode("latin-1"))]
    if headers:
        head.extend((k.lower().encode("latin-1"), str(v).encode("latin-1")) for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


def _reject(provider: str, req: WebhookRequest, exc: Rejected):
    metrics.WEBHOOKS_REJECTED.labels(provider, exc.reason).inc()
    log.warning("webhook rejected", extra={
        "provider": provider, "status": exc.status, "reason": exc.reason, "detail": str(exc),
        "request_id": req.request_id, "source": req.source,
    })
    return exc.status, orjson.dumps({"error": str(exc)}), exc.headers


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


_TENANTS: dict[str, str] = {}


def _path_tenant(raw: str | None) -> str | None:
    """The URL's tenant id in canonical form; 404 when it is not a uuid. Parsed once per id."""
    if raw is None:
        return None
    tenant = _TENANTS.get(raw)
    if tenant is None:
        try:
            tenant = str(uuid.UUID(raw))
        except ValueError as exc:
            raise Rejected(404, "unknown_tenant", f"unknown tenant {raw!r}") from exc
        if len(_TENANTS) >= 100_000:
            _TENANTS.clear()
        _TENANTS[raw] = tenant
    return tenant


def _rate_limit(key: str, limiter) -> None:
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


_COUNTERS: dict[tuple[bool, str, str], Any] = {}
_LATENCY: dict[str, Any] = {}


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


def _store_error(req: WebhookRequest, accepted: _Accepted, exc: BaseException) -> Rejected:
    """What a failed store is answered: 503 when the database is down or slow (the provider
    retries), 400 for a value Postgres cannot hold, 404 for a tenant deleted meanwhile. Anything
    else is a bug and is re-raised."""
    if is_unavailable(exc) or isinstance(exc, TimeoutError):
        return Rejected(503, "database_unavailable", "storage unavailable, retry later", headers={"Retry-After": "5"})
    state = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.DataError) or state.startswith("54"):  # 1e-20000 in jsonb; a too-big key
        detail = exc.diag.message_primary or str(exc).splitlines()[0]
        return Rejected(400, "malformed", f"body has a value that cannot be stored: {detail}")
    if state == "23503" and accepted.tenant_id:  # the tenant was deleted while its secrets were cached
        req.state.ctx.forget_tenant(accepted.tenant_id)
        return Rejected(404, "unknown_tenant", f"unknown tenant {accepted.tenant_id}")
    raise exc


class _Accepted:
    """A webhook that passed every check and is handed to the batcher: what to store and how to
    answer once its batch has committed. (Log lines are per committed batch, by the batcher.)"""

    __slots__ = ("provider", "kind", "tenant_id", "event_id", "webhook_type", "body", "started", "with_event_id")

    def __init__(self, provider, kind, tenant_id, event_id, webhook_type, body, started, with_event_id):
        self.provider = provider
        self.kind = kind
        self.tenant_id = tenant_id
        self.event_id = event_id
        self.webhook_type = webhook_type
        self.body = body
        self.started = started
        self.with_event_id = with_event_id

    def submit(self, req: WebhookRequest):
        return req.state.batchers[self.kind].enqueue(self.tenant_id, self.event_id, self.webhook_type,
                                                     self.body, req.request_id)

    def answer(self, is_new: bool) -> tuple[int, bytes, None]:
        _counter(is_new, self.provider, self.webhook_type).inc()
        _latency(self.provider).observe(time.perf_counter() - self.started)
        content = {"status": "ok" if is_new else "duplicate"}
        if self.with_event_id:
            content["event_id"] = self.event_id
        return 200, orjson.dumps(content), None


MAX_EVENT_ID = 255


def _check_event_id(event_id: str, source: str) -> None:
    """Event ids are short (Razorpay's are 18 characters). The header is not covered by the
    signature, and an id too big for the unique index would fail its whole batch."""
    if len(event_id) > MAX_EVENT_ID:
        raise Rejected(400, "malformed", f"event id from {source} is longer than {MAX_EVENT_ID} characters")


def _cached_tenant(req: WebhookRequest, body: bytes, kind: str):
    """What both `_*_now` handlers do first: (tenant, its cached config) when the URL names a
    tenant seen before and its secrets are cached, after the per-source rate limit and the body
    limit; None otherwise, having consumed nothing (the waiting path then starts over)."""
    tenant = _TENANTS.get(req.path_tenant) if req.path_tenant is not None else None
    cfg = req.state.ctx.cached_webhook_config(tenant, kind) if tenant is not None else None
    if cfg is None:
        return None
    _check_source(req)
    _check_size(body, req.state.ctx.settings.max_body_bytes)
    return tenant, cfg


def _check_size(body: bytes, limit: int) -> None:
    if len(body) > limit:
        raise Rejected(413, "too_large", f"body exceeds the {limit} byte limit")


def _check_source(req: WebhookRequest) -> None:
    limiter = req.state.source_limiter
    if limiter.rate > 0:
        _rate_limit(f"source:{req.source}", limiter)


def _credential(req: WebhookRequest, header: str) -> str:
    value = req.header(header.lower().encode())
    if not value:
        raise Rejected(401, "unsigned", f"missing {header} header")
    return value


def _secrets(req: WebhookRequest, tenant_id: str | None, cfg, platform: str | None, what: str) -> list[str]:
    """The tenant's own secrets when it has any, else the platform's; 404 for a URL tenant that
    does not exist, 401 when nothing is configured."""
    if req.path_tenant is not None and (cfg is None or not cfg.exists):
        raise Rejected(404, "unknown_tenant", f"unknown tenant {tenant_id}")
    secrets = cfg.secrets if cfg and cfg.secrets else [platform] if platform else []
    if not secrets:
        raise Rejected(401, "no_secret", f"no {what} is configured for this tenant")
    return secrets


async def _tenant_config(req: WebhookRequest, tenant_id: str | None, lookup: str | None, lookup_args: tuple,
                         kind: str):
    """The tenant (from the URL, else from `lookup` over the payload's references) and its webhook
    config. 503 when the database cannot be asked."""
    ctx = req.state.ctx
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
    return tenant_id, cfg


# -- Razorpay ---------------------------------------------------------------------------------------

_RZP_KIND = "razorpay_webhook"


def _razorpay_parse(body: bytes) -> tuple[dict, str]:
    payload = _parse_json(body)
    event = payload.get("event")
    if not isinstance(event, str) or not event:
        raise Rejected(400, "malformed", "body has no \"event\" name")
    return payload, event


def _razorpay_accept(req: WebhookRequest, body: bytes, signature: str, payload: dict, event: str,
                     tenant_id: str | None, cfg, started: float) -> _Accepted:
    secrets = _secrets(req, tenant_id, cfg, req.state.ctx.settings.razorpay_webhook_secret, "Razorpay webhook secret")
    if not razorpay.verify_signature(body, signature, secrets):
        raise Rejected(401, "bad_signature", "X-Razorpay-Signature does not match the body")
    if cfg and cfg.account_id and payload.get("account_id") != cfg.account_id:
        raise Rejected(401, "account_mismatch", "account_id in the webhook does not belong to this tenant")
    if tenant_id and req.state.tenant_limiter.rate > 0:
        _rate_limit(f"tenant:{tenant_id}", req.state.tenant_limiter)
    event_id = req.header(b"x-razorpay-event-id") or "sha256:" + hashlib.sha256(body).hexdigest()
    _check_event_id(event_id, "x-razorpay-event-id")
    return _Accepted("razorpay", "payment", tenant_id, event_id, event, body, started, True)


async def _razorpay(req: WebhookRequest) -> _Accepted:
    started = time.perf_counter()
    _check_source(req)
    tenant_id = _path_tenant(req.path_tenant)
    body = await req.body(req.state.ctx.settings.max_body_bytes)
    signature = _credential(req, "X-Razorpay-Signature")
    payload, event = _razorpay_parse(body)
    order_id = _razorpay_order_id(payload) if tenant_id is None else None
    tenant_id, cfg = await _tenant_config(
        req, tenant_id, "select storeops.get_tenant_for_razorpay_order(%s)" if order_id else None, (order_id,), _RZP_KIND)
    return _razorpay_accept(req, body, signature, payload, event, tenant_id, cfg, started)


def _razorpay_now(req: WebhookRequest, body: bytes) -> _Accepted | None:
    """_razorpay without waiting: None when it needs the database first (no tenant in the URL, or
    the tenant's secrets are not cached)."""
    started = time.perf_counter()
    cached = _cached_tenant(req, body, _RZP_KIND)
    if cached is None:
        return None
    tenant_id, cfg = cached
    signature = _credential(req, "X-Razorpay-Signature")
    payload, event = _razorpay_parse(body)
    return _razorpay_accept(req, body, signature, payload, event, tenant_id, cfg, started)


# -- Shiprocket -------------------------------------------------------------------------------------

_SR_KIND = "shiprocket_webhook"


def _shiprocket_parse(body: bytes) -> tuple[dict, str, str]:
    payload = _parse_json(body)
    try:
        return payload, shiprocket.event_key(payload), shiprocket.webhook_type(payload)
    except (KeyError, TypeError, ValueError, RecursionError) as exc:
        raise Rejected(400, "malformed", f"not a Shiprocket tracking event: {exc}") from exc


def _shiprocket_accept(req: WebhookRequest, body: bytes, token: str, event_id: str, webhook_type: str,
                       tenant_id: str | None, cfg, started: float) -> _Accepted:
    tokens = _secrets(req, tenant_id, cfg, req.state.ctx.settings.shiprocket_webhook_secret, "Shiprocket webhook token")
    if not shiprocket.verify_token(token, tokens):
        raise Rejected(401, "bad_token", "x-api-key does not match")
    if tenant_id and req.state.tenant_limiter.rate > 0:
        _rate_limit(f"tenant:{tenant_id}", req.state.tenant_limiter)
    _check_event_id(event_id, "awb, shipment_status_id and current_timestamp")
    return _Accepted("shiprocket", "shipping", tenant_id, event_id, webhook_type, body, started, False)


async def _shiprocket(req: WebhookRequest) -> _Accepted:
    started = time.perf_counter()
    _check_source(req)
    tenant_id = _path_tenant(req.path_tenant)
    body = await req.body(req.state.ctx.settings.max_body_bytes)
    token = _credential(req, "x-api-key")
    payload, event_id, webhook_type = _shiprocket_parse(body)
    # Whose it is, found as processing will find it (by AWB, then sr_order_id or the store's own order
    # reference, then our order uuid in order_id), so that the token checked is that tenant's.
    refs = [payload.get(k) for k in ("awb", "sr_order_id", "order_id")]
    tenant_id, cfg = await _tenant_config(
        req, tenant_id,
        "select coalesce(storeops.get_tenant_for_awb(%s, %s), storeops.get_tenant_for_awb(null, %s))",
        tuple(str(v) if v is not None else None for v in refs), _SR_KIND)
    return _shiprocket_accept(req, body, token, event_id, webhook_type, tenant_id, cfg, started)


def _shiprocket_now(req: WebhookRequest, body: bytes) -> _Accepted | None:
    started = time.perf_counter()
    cached = _cached_tenant(req, body, _SR_KIND)
    if cached is None:
        return None
    tenant_id, cfg = cached
    token = _credential(req, "x-api-key")
    _payload, event_id, webhook_type = _shiprocket_parse(body)
    return _shiprocket_accept(req, body, token, event_id, webhook_type, tenant_id, cfg, started)


# -- running a handler ------------------------------------------------------------------------------

_PROVIDER = {_razorpay: "razorpay", _shiprocket: "shiprocket"}
_NOW = {_razorpay: _razorpay_now, _shiprocket: _shiprocket_now}
_INTERNAL_ERROR = b'{"error":"internal error"}'

STATUS_LINES = {status: f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n".encode()
                for status in (200, 400, 401, 404, 413, 429, 500, 503)}


def _bug(req: WebhookRequest) -> tuple[int, bytes, None]:
    log.exception("unhandled error", extra={"request_id": req.request_id, "path": req.scope.get("path")})
    return 500, _INTERNAL_ERROR, None


def stored_answer(req: WebhookRequest, accepted: _Accepted, future) -> tuple[int, bytes, dict | None]:
    """The answer once the batcher has resolved `future` (stored, duplicate, or failed)."""
    try:
        exc = future.exception()
        if exc is None:
            return accepted.answer(future.result())
        return _reject(accepted.provider, req, _store_error(req, accepted, exc))
    except Exception:
        return _bug(req)


async def process(handler, state, scope, receive, path_tenant: str | None, body: bytes | None = None):
    """Run one webhook handler: (status, response body, extra headers, request id), or None when
    the client went away before sending its body (nothing stored, nobody to answer). A bug is
    logged and answered 500."""
    req = WebhookRequest(scope, receive, state, path_tenant, body)
    try:
        accepted = await handler(req)
        future = accepted.submit(req)
        try:
            await future
        except Exception:
            pass  # stored_answer reads it from the future
        status, out, headers = stored_answer(req, accepted, future)
    except Rejected as exc:
        status, out, headers = _reject(_PROVIDER[handler], req, exc)
    except _Disconnected:
        return None
    except Exception:
        status, out, headers = _bug(req)
    return status, out, headers, req.request_id


def accept_now(handler, state, scope, path_tenant: str | None, body: bytes):
    """The webhook checked and handed to the batcher without waiting for anything, when that is
    possible (the tenant is in the URL and its secrets are cached): the common case, and the
    cheapest, since no task has to run. Returns None when it is not possible (use process()),
    else (request, answer) for an immediate answer or (request, (accepted, future)) to answer with
    stored_answer() when the future is done."""
    req = WebhookRequest(scope, None, state, path_tenant, body)
    try:
        accepted = _NOW[handler](req, body)
        if accepted is None:
            return None
        return req, (accepted, accepted.submit(req))
    except Rejected as exc:
        return req, _reject(_PROVIDER[handler], req, exc)
    except Exception:
        return req, _bug(req)


async def handle(handler, state, scope, receive, send, path_tenant: str | None) -> None:
    """Run one webhook handler over ASGI and send its answer."""
    answer = await process(handler, state, scope, receive, path_tenant)
    if answer is not None:
        await _respond(send, answer[0], answer[1], answer[3], answer[2])


def match(path: str):
    """(handler, tenant segment or None) for a webhook path, else None."""
    for prefixes, handler in ((RAZORPAY_PATHS, _razorpay), (SHIPROCKET_PATHS, _shiprocket)):
        for prefix in prefixes:
            if path.startswith(prefix):
                rest = path[len(prefix):]
                if not rest:
                    return handler, None
                if rest[0] == "/" and len(rest) > 1 and "/" not in rest[1:]:
                    return handler, rest[1:]
    return None


class Endpoint:
    """A webhook handler mounted as a Starlette route (an ASGI app, not a request function)."""

    def __init__(self, handler):
        self.handler = handler

    async def __call__(self, scope, receive, send) -> None:
        await handle(self.handler, scope["app"].state, scope, receive, send,
                     scope.get("path_params", {}).get("tenant_id"))


razorpay_webhook = Endpoint(_razorpay)
shiprocket_webhook = Endpoint(_shiprocket)
