"""The HTTP app (Starlette on uvicorn): provider webhooks, admin endpoints, health and metrics.

Paths are the seed's Supabase function paths, so dashboards' webhook settings keep working.
"""

from __future__ import annotations

import contextlib
import logging

import httpx
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from runner import admin, metrics, webhooks
from runner.config import Settings
from runner.context import Context
from runner.db import is_unavailable, open_pool
from runner.intake import IngestBatcher, RateLimiter

log = logging.getLogger("storeops.http")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    ctx: Context = request.app.state.ctx
    try:
        async with ctx.pool.connection(timeout=2.0) as conn:
            await conn.execute("select 1")
    except Exception as exc:
        if is_unavailable(exc):
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        raise
    return JSONResponse({"status": "ready", "database": "ok"})


async def refresh_gauges(ctx: Context) -> None:
    """Queue depth, backlog, health, mismatches and refunds owed straight from the database."""
    async with ctx.pool.connection(timeout=2.0) as conn:
        rows = await (await conn.execute(
            "select status, operation_type, count(*) from storeops.operation_retry_queue group by 1, 2")).fetchall()
        metrics.QUEUE_DEPTH.clear()
        for status, op_type, count in rows:
            metrics.QUEUE_DEPTH.labels(status, op_type).set(count)
        oldest = await (await conn.execute(
            """select coalesce(extract(epoch from now() - min(next_retry_at)), 0)
               from storeops.operation_retry_queue where status = 'pending' and next_retry_at <= now()""")).fetchone()
        metrics.QUEUE_OLDEST.set(float(oldest[0]))
        for provider, table in (("razorpay", "payment_webhooks"), ("shiprocket", "shipping_webhooks")):
            row = await (await conn.execute(
                f"select count(*) from storeops.{table} where not processed")).fetchone()  # noqa: S608 (fixed names)
            metrics.WEBHOOK_BACKLOG.labels(provider).set(row[0])
        rows = await (await conn.execute(
            """select distinct on (check_type) check_type, status, response_time_ms
               from storeops.system_health_checks order by check_type, checked_at desc""")).fetchall()
        for check_type, status, ms in rows:
            metrics.HEALTH.labels(check_type).set({"healthy": 1.0, "degraded": 0.5}.get(status, 0.0))
            metrics.HEALTH_LATENCY.labels(check_type).set(ms or 0)
        row = await (await conn.execute(
            "select count(*) from storeops.payment_reconciliation where status = 'mismatch'")).fetchone()
        metrics.RECON_MISMATCHES.set(row[0])
        rows = await (await conn.execute(
            "select currency, count(*) from storeops.refunds_owed group by 1")).fetchall()
        metrics.REFUNDS_OWED.clear()  # how much: `storeops status`, in exact paise
        for currency, count in rows:
            metrics.REFUNDS_OWED.labels(currency).set(count)


async def metrics_endpoint(request: Request) -> Response:
    with contextlib.suppress(Exception):
        await refresh_gauges(request.app.state.ctx)
    return Response(generate_latest(metrics.REGISTRY), media_type=CONTENT_TYPE_LATEST)


OPENAPI = {
    "openapi": "3.0.3",
    "info": {"title": "storeops", "version": "0.1.0"},
    "paths": {
        "/functions/v1/razorpay-webhook": {"post": {
            "summary": "Razorpay webhook (X-Razorpay-Signature: hex HMAC-SHA256 of the raw body)",
            "parameters": [
                {"name": "X-Razorpay-Signature", "in": "header", "required": True, "schema": {"type": "string"}},
                {"name": "x-razorpay-event-id", "in": "header", "required": False, "schema": {"type": "string"}},
            ],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "stored"}, "400": {"description": "malformed"},
                          "401": {"description": "bad signature"}, "413": {"description": "too large"},
                          "429": {"description": "rate limited"}, "503": {"description": "storage down"}},
        }},
        "/functions/v1/shipping-webhook": {"post": {
            "summary": "Shiprocket tracking webhook (token in x-api-key)",
            "parameters": [{"name": "x-api-key", "in": "header", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
            "responses": {"200": {"description": "stored"}, "400": {"description": "malformed"},
                          "401": {"description": "bad token"}, "413": {"description": "too large"},
                          "429": {"description": "rate limited"}, "503": {"description": "storage down"}},
        }},
        "/functions/v1/create-refund": {"post": {
            "summary": "Refund an order (bearer JWT carrying tenant_id). Send an Idempotency-Key to retry safely.",
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["order_id", "amount"],
                "properties": {"order_id": {"type": "string", "format": "uuid"}, "amount": {"type": "number"},
                               "reason": {"type": "string"}}}}}},
            "responses": {"201": {"description": "refund made at Razorpay"},
                          "202": {"description": "recorded; Razorpay did not confirm yet, retried with the same key"},
                          "502": {"description": "Razorpay refused the refund (recorded as failed)"},
                          "400": {"description": "bad input"},
                          "401": {"description": "no or bad token"}, "404": {"description": "no such order"},
                          "409": {"description": "conflict"}, "422": {"description": "not refundable"}},
        }},
        "/functions/v1/verify-domain-dns": {"post": {
            "summary": "Verify a custom domain's DNS now (bearer JWT carrying tenant_id)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["domain_id"],
                "properties": {"domain": {"type": "string"}, "domain_id": {"type": "string", "format": "uuid"}}}}}},
            "responses": {"200": {"description": "result"}, "400": {"description": "bad input"},
                          "401": {"description": "no or bad token"}, "404": {"description": "no such domain"}},
        }},
        "/healthz": {"get": {"responses": {"200": {"description": "alive"}}}},
        "/readyz": {"get": {"responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}}}},
        "/metrics": {"get": {"responses": {"200": {"description": "Prometheus text"}}}},
    },
}
OPENAPI["paths"]["/functions/v1/shiprocket-webhook"] = OPENAPI["paths"]["/functions/v1/shipping-webhook"]


async def openapi(request: Request) -> Response:
    return JSONResponse(OPENAPI)


class RequestIdMiddleware:
    """Gives every request an id (or keeps the caller's X-Request-Id) and echoes it back."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                given = value
                break
        request_id = webhooks.request_id(given)
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if not any(name == b"x-request-id" for name, _ in headers):  # the webhook handlers add it
                    headers.append((b"x-request-id", request_id.encode("latin-1")))
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id, "path": scope.get("path")})
            raise


def routes() -> list[Route]:
    rzp, ship = webhooks.razorpay_webhook, webhooks.shiprocket_webhook
    return [
        Route("/functions/v1/razorpay-webhook", rzp, methods=["POST"]),
        Route("/functions/v1/razorpay-webhook/{tenant_id}", rzp, methods=["POST"]),
        Route("/functions/v1/shiprocket-webhook", ship, methods=["POST"]),
        Route("/functions/v1/shiprocket-webhook/{tenant_id}", ship, methods=["POST"]),
        Route("/functions/v1/shipping-webhook", ship, methods=["POST"]),
        Route("/functions/v1/shipping-webhook/{tenant_id}", ship, methods=["POST"]),
        Route("/functions/v1/create-refund", admin.create_refund, methods=["POST"]),
        Route("/functions/v1/verify-domain-dns", admin.verify_domain_dns, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]


class App(Starlette):
    """Starlette, except that a POST to a webhook path goes straight to its handler (no router, no
    middleware objects): the webhook handlers are plain ASGI and set the request id themselves.
    Everything else, including other methods on those paths, takes Starlette's way."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            hit = webhooks.match(scope["path"])
            if hit is not None:
                scope["app"] = self
                await webhooks.handle(hit[0], self.state, scope, receive, send, hit[1])
                return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings, database_url: str, *, pool_size: int = 10, ctx: Context | None = None) -> Starlette:
    """The ASGI app. With `ctx` given (serve shares one with its worker), it uses that context."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        own = ctx is None
        if own:
            pool = await open_pool(database_url, min_size=2, max_size=pool_size, name="http")
            context = Context(settings=settings, pool=pool, http=httpx.AsyncClient(timeout=10.0))
        else:
            context = ctx
        app.state.ctx = context
        app.state.batchers = {
            "payment": IngestBatcher(context.pool, "payment", context=context),
            "shipping": IngestBatcher(context.pool, "shipping", context=context),
        }
        app.state.source_limiter = RateLimiter(settings.rate_limit_source, settings.rate_limit_source * 5)
        app.state.tenant_limiter = RateLimiter(settings.rate_limit_tenant, settings.rate_limit_tenant * 5)
        try:
            yield
        finally:
            for batcher in app.state.batchers.values():
                await batcher.close()
            if own:
                await context.http.aclose()
                await context.pool.close()

    async def not_found(request: Request, exc) -> Response:
        return JSONResponse({"error": f"no route {request.method} {request.url.path}"}, status_code=404)

    async def not_allowed(request: Request, exc) -> Response:
        return JSONResponse({"error": f"method {request.method} not allowed on {request.url.path}"}, status_code=405)

    app = App(routes=routes(), lifespan=lifespan, exception_handlers={404: not_found, 405: not_allowed})
    app.add_middleware(RequestIdMiddleware)

    return app


__all__ = ["create_app", "PlainTextResponse"]
