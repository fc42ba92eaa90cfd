"""Admin endpoints the storefront's admin panel calls with a bearer JWT carrying the tenant:
`POST /functions/v1/create-refund` and `POST /functions/v1/verify-domain-dns`."""

from __future__ import annotations

import decimal
import logging
import uuid

import orjson
import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from runner.auth import AuthError, tenant_from_authorization
from runner.db import is_unavailable
from runner.intake import BodyTooLarge, read_body

log = logging.getLogger("storeops.admin")


# A refund above this (₹10 lakh crore) is garbage, and beyond bigint paise it cannot even be stored.
MAX_REFUND_PAISE = 10**17


class BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _error(request: Request, status: int, message: str) -> Response:
    log.warning("admin request refused", extra={
        "path": request.url.path, "status": status, "detail": message, "request_id": request.state.request_id})
    return JSONResponse({"error": message}, status_code=status)


async def _json_body(request: Request) -> dict:
    try:
        body = await read_body(request, 64 * 1024)
    except BodyTooLarge as exc:
        raise BadRequest(413, str(exc)) from exc
    try:
        import json

        data = json.loads(body, parse_float=decimal.Decimal, parse_int=int)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(400, f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(400, "body must be a JSON object")
    return data


def _uuid_field(data: dict, name: str) -> uuid.UUID:
    raw = data.get(name)
    if not isinstance(raw, str):
        raise BadRequest(400, f"\"{name}\" is required and must be a uuid string")
    try:
        return uuid.UUID(raw)
    except ValueError as exc:
        raise BadRequest(400, f"\"{name}\" is not a uuid: {raw!r}") from exc


def _db_error(exc: psycopg.Error) -> BadRequest:
    diag = exc.diag
    message = diag.message_primary or str(exc)
    state = exc.sqlstate or ""
    if state in ("P0002", "02000"):
        return BadRequest(404, message)
    if state.startswith("23") or state == "40001":
        return BadRequest(409, message)
    if state.startswith("22") or state.startswith("P0"):
        return BadRequest(422, message)
    return BadRequest(500, "database error")


async def create_refund(request: Request) -> Response:
    from runner import payments, razorpay

    ctx = request.app.state.ctx
    try:
        tenant_id, _claims = tenant_from_authorization(request.headers.get("authorization"), ctx.settings.jwt_secret)
        data = await _json_body(request)
        order_id = _uuid_field(data, "order_id")
        if "amount" not in data:
            raise BadRequest(400, "\"amount\" is required (major units, e.g. 1000.00)")
        try:
            amount_paise = razorpay.amount_to_paise(data["amount"])
        except (ValueError, TypeError, decimal.DecimalException) as exc:
            raise BadRequest(400, f"\"amount\": {exc}") from exc
        if amount_paise > MAX_REFUND_PAISE:
            raise BadRequest(400, f"\"amount\" is larger than any order can be ({MAX_REFUND_PAISE // 100} at most)")
        reason = data.get("reason")
        if reason is not None and (not isinstance(reason, str) or "\x00" in reason or len(reason) > 1000):
            raise BadRequest(400, "\"reason\" must be a string of at most 1000 characters, without NUL")
        key = request.headers.get("idempotency-key") or data.get("idempotency_key")
        if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= 200 or "\x00" in key):
            raise BadRequest(400, "idempotency key must be a string of 1 to 200 characters, without NUL")
        try:
            client = await ctx.tenant_razorpay_client(str(tenant_id))
        except ValueError as exc:
            return _error(request, 503, f"refunds disabled: {exc} (set RAZORPAY_KEY_ID and RAZORPAY_KEY_SECRET, "
                                        "or the tenant's razorpay_api secret)")
        try:
            result = await payments.create_refund(ctx.pool, client, str(tenant_id), str(order_id), amount_paise,
                                                  reason, key)
        except payments.RefundRejected as exc:
            raise BadRequest(exc.http_status, str(exc)) from exc
        except psycopg.Error as exc:
            if is_unavailable(exc):
                return _error(request, 503, "database unavailable, retry later")
            raise _db_error(exc) from exc
    except AuthError as exc:
        return _error(request, exc.status, str(exc))
    except BadRequest as exc:
        return _error(request, exc.status, str(exc))
    # 201: Razorpay has the refund; 202: recorded and queued for retry; 502: Razorpay refused it.
    if result.get("status") == "failed":
        status = 502
    elif result.get("razorpay_refund_id"):
        status = 201
    else:
        status = 202
    return Response(orjson.dumps(result, default=str), status_code=status, media_type="application/json")


async def verify_domain_dns(request: Request) -> Response:
    from runner import dns_check, domains

    ctx = request.app.state.ctx
    try:
        tenant_id, _claims = tenant_from_authorization(request.headers.get("authorization"), ctx.settings.jwt_secret)
        data = await _json_body(request)
        domain_id = _uuid_field(data, "domain_id")
        domain = data.get("domain")
        if domain is not None:
            if not isinstance(domain, str):
                raise BadRequest(400, "\"domain\" must be a string")
            try:
                domain = dns_check.normalize_domain(domain)
            except ValueError as exc:
                raise BadRequest(400, f"\"domain\": {exc}") from exc
        try:
            async with ctx.pool.connection() as conn:
                row = await (await conn.execute(
                    "select domain from storeops.custom_domains where id = %s and tenant_id = %s",
                    (domain_id, tenant_id))).fetchone()
            if row is None:
                raise BadRequest(404, f"domain {domain_id} not found for this tenant")
            if domain is not None and row[0] != domain:
                raise BadRequest(400, f"domain_id {domain_id} is {row[0]}, not {domain}")
            result = await domains.verify_and_record(ctx.pool, ctx.settings, str(domain_id), str(tenant_id),
                                                      manual=True)
        except LookupError as exc:
            raise BadRequest(404, str(exc)) from exc
        except psycopg.Error as exc:
            if is_unavailable(exc):
                return _error(request, 503, "database unavailable, retry later")
            raise _db_error(exc) from exc
    except AuthError as exc:
        return _error(request, exc.status, str(exc))
    except BadRequest as exc:
        return _error(request, exc.status, str(exc))
    return Response(orjson.dumps(result, default=str), status_code=200, media_type="application/json")
