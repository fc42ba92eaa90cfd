"""Payments service: refunds and missed-webhook recovery, as the runner's HTTP handlers, CLI and
worker call them. The state machines are SQL (migrations 0010-0014); this module only moves data
between them and Razorpay, and never holds a transaction or a row lock across a network call:

    request_refund (commit)  ->  POST /v1/payments/{id}/refund  ->  record_refund_result (commit)

A refund is recorded `pending` with its idempotency key before Razorpay is called, and every retry
(here, or later from the retry queue as operation 'refund_create') sends the same key and the same
body, so Razorpay makes at most one refund however often we ask.

Missed-webhook recovery (hourly, by the scheduler) lists Razorpay's payments of the last day and
applies the states that never reached us (recover_missed_payments), and asks Razorpay about each
refund still pending here under a rfnd_ id whose outcome webhook has not come
(recover_missed_refunds, migration 0050).

A cancelled order still holding the customer's money (storeops.refunds_owed, migration 0054) is
refunded by the runner itself when its tenant opted in (tenants.auto_refund_cancelled_since; the
orders noted from then on): once per order, under a key derived from the order
(refund_cancelled_orders).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import psycopg
from psycopg.rows import class_row, scalar_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runner.razorpay import RazorpayClient, RazorpayError

log = logging.getLogger("storeops.payments")

REFUND_OPERATION = "refund_create"
# A pending refund is also queued this far ahead when it is recorded, so one whose request was cut
# off by a crash is still sent (with the same key); for a refund that settled it is a no-op.
SAFETY_NET_DELAY = "15 minutes"

# SQLSTATEs raised by storeops.request_refund / record_refund_result -> HTTP status.
REFUND_SQLSTATES: dict[str, int] = {
    "SO400": 400,  # amount not above zero, malformed idempotency key, unknown status
    "SO404": 404,  # order (or refund) not found for this tenant
    "SO409": 409,  # order not paid (nothing captured)
    "SO412": 409,  # idempotency key already used for a different refund
    "SO422": 422,  # more than is left to refund
}


class RefundRejected(Exception):
    """The refund request was refused by the database's checks; `http_status` is the 4xx to answer
    and the message says what was wrong, in one line."""

    def __init__(self, message: str, http_status: int, sqlstate: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.sqlstate = sqlstate
        self.hint = hint

    def __str__(self) -> str:
        return self.message


@dataclass
class Refund:
    id: uuid.UUID
    tenant_id: uuid.UUID
    order_id: uuid.UUID
    razorpay_payment_id: str | None
    razorpay_refund_id: str | None
    amount: int
    currency: str
    reason: str | None
    status: str
    source: str
    idempotency_key: str
    error: str | None
    processed_at: datetime | None
    created_at: datetime

    def as_dict(self, note: str | None = None) -> dict[str, Any]:
        """JSON-ready: ids and times as strings, amounts in minor units."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, uuid.UUID):
                value = str(value)
            elif isinstance(value, datetime):
                value = value.isoformat()
            out[key] = value
        if note:
            out["note"] = note
        return out


_REFUND_COLUMNS = ("id, tenant_id, order_id, razorpay_payment_id, razorpay_refund_id, amount, currency, reason, "
                   "status, source, idempotency_key, error, processed_at, created_at")

REQUEST_REFUND = (
    f"select {_REFUND_COLUMNS} from storeops.request_refund("
    "%(tenant_id)s, %(order_id)s, %(amount)s, %(reason)s, %(idempotency_key)s)"
)
RECORD_REFUND_RESULT = (
    f"select {_REFUND_COLUMNS} from storeops.record_refund_result("
    "%(refund_id)s, %(razorpay_refund_id)s, %(status)s, %(error)s)"
)
GET_REFUND = f"select {_REFUND_COLUMNS} from storeops.refunds where id = %(refund_id)s"
ENQUEUE_SAFETY_NET = (
    "select storeops.enqueue_operation(%(tenant_id)s, %(operation_type)s, %(operation_id)s, %(payload)s, "
    "now() + %(delay)s::interval)"
)
SCHEDULE_RETRY = (
    "select storeops.schedule_operation_retry(%(tenant_id)s, %(operation_type)s, %(operation_id)s, "
    "%(payload)s, %(error)s)"
)
RECORD_MISSED_PAYMENTS = "select storeops.record_missed_payments(%(payments)s, %(tenant_id)s) as new"
PROCESS_PAYMENT_WEBHOOKS = "select storeops.process_payment_webhooks(%(limit)s) as handled"
LIST_REFUNDS_TO_RECOVER = ("select refund_id, tenant_id, razorpay_refund_id from storeops.list_refunds_to_recover("
                           "%(older_than)s, %(recheck)s, %(limit)s)")
RECORD_REFUND_CHECK = "select storeops.record_refund_check(%(refund_id)s, %(refund)s) as webhook_id"
# Tenants take turns: each one's first due order, then each one's second, ... so a bulk RTO at one
# store does not hold up the others' refunds for hours. Within a tenant, orders not tried yet first.
LIST_AUTO_REFUNDS = """
select tenant_id, order_id, owed, currency, storeops.cancelled_order_refund_key(order_id) from (
  select tenant_id, order_id, owed, currency, flagged_at,
         row_number() over (partition by tenant_id order by auto_retry_at nulls first, flagged_at, order_id) as turn
  from storeops.refunds_owed
  where auto_refund and auto_refund_id is null and (auto_retry_at is null or auto_retry_at <= now())
) due
order by turn, flagged_at, order_id
limit %(limit)s
"""
RECORD_AUTO_REFUND_FAILURE = "select storeops.record_auto_refund_failure(%(order_id)s, %(error)s)"
AUTO_REFUND_REASON = "order cancelled: refunded automatically"
ALREADY_REQUESTED = "this refund was already requested with the same idempotency key"  # create_refund's note
# A refund's own webhook gets this long before recovery asks Razorpay; then at most every REFUND_RECHECK.
REFUND_GRACE = timedelta(minutes=30)
REFUND_RECHECK = timedelta(hours=6)


@contextlib.contextmanager
def _refund_errors() -> Iterator[None]:
    """Turns the SO-class SQLSTATEs of the refund functions into RefundRejected."""
    try:
        yield
    except psycopg.Error as exc:
        status = REFUND_SQLSTATES.get(exc.sqlstate or "")
        if status is None:
            raise
        raise RefundRejected(exc.diag.message_primary or str(exc), status, exc.sqlstate or "",
                             exc.diag.message_hint) from exc


async def _one_refund(pool: AsyncConnectionPool, query: str, params: dict[str, Any]) -> Refund | None:
    with _refund_errors():
        async with pool.connection() as conn, conn.cursor(row_factory=class_row(Refund)) as cur:
            await cur.execute(query, params)
            return await cur.fetchone()


def refund_notes(refund: Refund) -> dict[str, str]:
    """The notes sent with a refund. Derived only from the stored row, so every retry sends the
    identical body (Razorpay refuses a different body under a used idempotency key); the key in
    them lets a refund.* webhook find our row even before we stored the rfnd_ id."""
    notes = {"storeops_refund_id": str(refund.id), "storeops_order_id": str(refund.order_id),
             "idempotency_key": refund.idempotency_key}
    if refund.reason:
        notes["reason"] = refund.reason[:255]
    return notes


async def _record_result(pool: AsyncConnectionPool, refund: Refund, razorpay_refund_id: str | None,
                         status: str, error: str | None) -> Refund:
    row = await _one_refund(pool, RECORD_REFUND_RESULT, {
        "refund_id": refund.id, "razorpay_refund_id": razorpay_refund_id, "status": status, "error": error})
    assert row is not None
    return row


async def _send(client: RazorpayClient, refund: Refund) -> dict:
    if not refund.razorpay_payment_id:
        raise RazorpayError(f"refund {refund.id} has no Razorpay payment to refund", None, False)
    try:
        return await client.create_refund(refund.razorpay_payment_id, refund.amount, refund.idempotency_key,
                                          notes=refund_notes(refund))
    except ValueError as exc:  # ids or key Razorpay would refuse anyway
        raise RazorpayError(str(exc), None, False) from exc


def _gateway_status(result: dict) -> str:
    status = result.get("status")
    return status if status in ("pending", "processed", "failed") else "pending"


async def create_refund(pool: AsyncConnectionPool, client: RazorpayClient, tenant_id: uuid.UUID | str,
                        order_id: uuid.UUID | str, amount_paise: int, reason: str | None,
                        idempotency_key: str | None = None) -> dict[str, Any]:
    """Refund `amount_paise` of an order: record it pending (validated under the order lock), ask
    Razorpay with the refund's idempotency key, record the answer. Returns the refund as a dict.

    - The same idempotency key again returns the same refund without a second request.
    - Razorpay unreachable, 5xx, 429, timeout (after the client's own quick retries): the refund
      stays pending, a 'refund_create' retry is queued, and the dict carries a `note` saying so.
    - Every pending refund is also queued SAFETY_NET_DELAY ahead when recorded, so a crash between
      recording and asking Razorpay cannot strand it; the worker's retry_refund is then a no-op.
    - Razorpay refuses (4xx): the refund is marked failed with Razorpay's reason.
    - Our own checks refuse: RefundRejected with the HTTP status to answer.
    """
    with _refund_errors():
        async with pool.connection() as conn:
            async with conn.cursor(row_factory=class_row(Refund)) as cur:
                await cur.execute(REQUEST_REFUND, {
                    "tenant_id": tenant_id, "order_id": order_id, "amount": amount_paise, "reason": reason,
                    "idempotency_key": idempotency_key})
                refund = await cur.fetchone()
            assert refund is not None
            if refund.status == "pending" and not refund.razorpay_refund_id:
                await conn.execute(ENQUEUE_SAFETY_NET, {
                    "tenant_id": refund.tenant_id, "operation_type": REFUND_OPERATION, "operation_id": refund.id,
                    "payload": Jsonb({"refund_id": str(refund.id)}), "delay": SAFETY_NET_DELAY})
    if refund.status != "pending" or refund.razorpay_refund_id:
        return refund.as_dict(note=ALREADY_REQUESTED)
    try:
        result = await _send(client, refund)
    except RazorpayError as exc:
        if not exc.retryable:
            refund = await _record_result(pool, refund, None, "failed", str(exc))
            return refund.as_dict(note=f"Razorpay refused the refund: {exc}")
        refund = await _record_result(pool, refund, None, "pending", str(exc))
        await _schedule_retry(pool, refund, str(exc))
        return refund.as_dict(note=f"Razorpay did not confirm the refund yet ({exc}); it will be retried "
                                   "with the same idempotency key")
    refund = await _record_result(pool, refund, result["id"], _gateway_status(result), None)
    return refund.as_dict()


async def _schedule_retry(pool: AsyncConnectionPool, refund: Refund, error: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(SCHEDULE_RETRY, {
            "tenant_id": refund.tenant_id, "operation_type": REFUND_OPERATION, "operation_id": refund.id,
            "payload": Jsonb({"refund_id": str(refund.id)}), "error": error})


async def retry_refund(pool: AsyncConnectionPool, client: RazorpayClient, refund_id: uuid.UUID | str) -> None:
    """The worker's handler for 'refund_create': send the pending refund again with the SAME
    idempotency key and body. Returns when the outcome is recorded (made, refused for good, or
    already settled). Raises RazorpayError (with `retryable`, `retry_after`) when Razorpay could not
    be asked, so the queue schedules the next attempt."""
    refund = await _one_refund(pool, GET_REFUND, {"refund_id": refund_id})
    if refund is None or refund.status != "pending" or refund.razorpay_refund_id:
        return
    try:
        result = await _send(client, refund)
    except RazorpayError as exc:
        if not exc.retryable:
            await _record_result(pool, refund, None, "failed", str(exc))
            return
        await _record_result(pool, refund, None, "pending", str(exc))
        raise
    await _record_result(pool, refund, result["id"], _gateway_status(result), None)


async def recover_missed_payments(pool: AsyncConnectionPool, client: RazorpayClient, from_ts: int, to_ts: int,
                                  tenant_id: uuid.UUID | str | None = None) -> int:
    """List Razorpay payments created in [from_ts, to_ts] (unix seconds, every page) and apply the
    ones whose state never reached us, as synthetic webhooks through the same SQL as real ones.
    `tenant_id` labels payments whose order is unknown (the client's API key belongs to that tenant).
    Returns how many payments (or later states of them) were new."""
    new = 0
    page: list[dict] = []

    async def flush() -> None:
        nonlocal new, page
        if page:
            async with pool.connection() as conn, conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(RECORD_MISSED_PAYMENTS, {"payments": Jsonb(page), "tenant_id": tenant_id})
                new += int(await cur.fetchone() or 0)
            page = []

    async for payment in client.list_payments(from_ts, to_ts):
        page.append(payment)
        if len(page) >= 100:
            await flush()
    await flush()
    if new:
        await process_payment_webhooks(pool)
    return new


async def recover_missed_refunds(pool: AsyncConnectionPool,
                                 client_for: Callable[[Any], Awaitable[RazorpayClient]], *,
                                 older_than: timedelta = REFUND_GRACE, recheck: timedelta = REFUND_RECHECK,
                                 limit: int = 500) -> int:
    """Ask Razorpay (GET /v1/refunds/:id) about each of our refunds still pending under a rfnd_ id
    whose refund.processed / refund.failed webhook has not come (storeops.list_refunds_to_recover),
    and apply the outcome of those Razorpay has settled, as synthetic webhooks through the same SQL
    as real ones. `client_for(tenant_id)` gives the client for the account the refund was made with
    (the tenant's own API key, else the platform's). When Razorpay cannot be reached or answers
    5xx/429, the run stops there (each refund would wait out the client's timeouts and retries, and
    the scheduler runs its jobs one after another): that refund and the rest are asked first next
    run. Returns how many refunds were settled."""
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute(LIST_REFUNDS_TO_RECOVER, {"older_than": older_than, "recheck": recheck, "limit": limit})
        due = await cur.fetchall()
    settled = 0
    for refund_id, tenant_id, razorpay_refund_id in due:
        where = {"refund_id": str(refund_id), "razorpay_refund_id": razorpay_refund_id, "tenant_id": str(tenant_id)}
        try:
            client = await client_for(tenant_id)
            entity = await client.fetch_refund(razorpay_refund_id)
        except (RazorpayError, ValueError) as exc:
            log.warning("could not ask Razorpay about a pending refund", extra={**where, "error": str(exc)[:300]})
            if isinstance(exc, RazorpayError) and exc.retryable:
                break  # unreachable, 5xx, 429: this one and the rest go first next run
            entity = None  # no key, or a 4xx: asking again soon won't help; recorded as asked
        except (psycopg.Error, httpx.HTTPError) as exc:  # the key's lookup, or HTTP trouble the client did not wrap
            log.warning("could not ask Razorpay about a pending refund", extra={**where, "error": str(exc)[:300]})
            break
        try:
            async with pool.connection() as conn, conn.cursor(row_factory=scalar_row) as cur:
                await cur.execute(RECORD_REFUND_CHECK, {"refund_id": refund_id,
                                                        "refund": Jsonb(entity) if entity is not None else None})
                if await cur.fetchone() is not None:
                    settled += 1
                    log.info("refund outcome recovered", extra={**where, "status": entity.get("status")})
        except psycopg.Error as exc:  # e.g. Razorpay answered with a status we do not know: this refund only
            log.error("could not record what Razorpay answered about a pending refund",
                      extra={**where, "error": str(exc)[:300]})
            with contextlib.suppress(psycopg.Error):  # asked all the same: it waits its turn again
                async with pool.connection() as conn:
                    await conn.execute(RECORD_REFUND_CHECK, {"refund_id": refund_id, "refund": None})
    if settled:
        await process_payment_webhooks(pool)
    return settled


async def refund_cancelled_orders(pool: AsyncConnectionPool,
                                  client_for: Callable[[Any], Awaitable[RazorpayClient]], *,
                                  limit: int = 200) -> tuple[int, int]:
    """Refund what each cancelled order of an opted-in tenant still holds (storeops.refunds_owed:
    amount paid less processed and pending refunds), through create_refund like any refund, under
    the order's own idempotency key (storeops.cancelled_order_refund_key): an order gets at most one
    automatic refund, however often this runs and however many runners run it at once (a second
    request with the key is the same refund, and Razorpay dedupes the call). request_refund's checks
    under the order lock guard against a person refunding the same order meanwhile: asked for more
    than is left, it refuses, and the order is asked about again later (below) with what is left then.

    An order this cannot refund (no single payment covers it, as with a duplicate capture; the
    tenant has no API key) is logged, its failure recorded on it (storeops.record_auto_refund_failure:
    tried again after 1, 2, 4 ... 24 hours, behind the orders not tried yet, so a few such orders
    never hold up the others), and left to a person, who has had a refund_owed alert; a database
    or network error stops the run, and the rest wait for the next one. Razorpay's own answers are
    create_refund's: unreachable or 5xx leaves the refund pending and queued for a retry with the
    same key, a refusal marks it failed (and raises refund_failed). First, the noted orders whose
    money went back are forgotten (storeops.prune_cancelled_paid_orders).
    Returns (refunds made or on their way, orders left for a later run or a person: refused by
    Razorpay or by our checks, or not reached)."""
    async with pool.connection() as conn, conn.cursor() as cur:
        await cur.execute("select storeops.prune_cancelled_paid_orders()")
        await cur.execute(LIST_AUTO_REFUNDS, {"limit": limit})
        due = await cur.fetchall()
    made = left = 0
    for n, (tenant_id, order_id, owed, currency, key) in enumerate(due):
        where = {"tenant_id": str(tenant_id), "order_id": str(order_id), "amount": owed, "currency": currency}
        try:
            client = await client_for(tenant_id)
            refund = await create_refund(pool, client, tenant_id, order_id, owed, AUTO_REFUND_REASON, key)
        except (RefundRejected, ValueError) as exc:  # this order only: refused by our checks, or no API key
            left += 1
            log.warning("could not refund a cancelled order automatically", extra={**where, "error": str(exc)[:300]})
            try:
                async with pool.connection() as conn:
                    await conn.execute(RECORD_AUTO_REFUND_FAILURE, {"order_id": order_id, "error": str(exc)})
            except psycopg.Error as db_exc:
                log.warning("automatic refunds of cancelled orders stopped", extra={**where, "error": str(db_exc)[:300]})
                left += len(due) - n - 1
                break
            continue
        except (psycopg.Error, httpx.HTTPError) as exc:  # the database or the network: the rest wait for the next run
            left += len(due) - n
            log.warning("automatic refunds of cancelled orders stopped", extra={**where, "error": str(exc)[:300]})
            break
        if refund.get("note") == ALREADY_REQUESTED:
            continue  # another runner made it just now
        if refund["status"] == "failed":
            left += 1  # Razorpay refused it: a refund_failed alert went out; the order stays owed for a person
        else:
            made += 1
        log.info("cancelled order refunded automatically" if refund["status"] != "failed"
                 else "Razorpay refused the automatic refund of a cancelled order", extra={
                     **where, "refund_id": refund["id"], "status": refund["status"], "note": refund.get("note")})
    return made, left


async def link_unlinked_payments(pool: AsyncConnectionPool) -> int:
    """storeops.link_unlinked_payments: payments recorded without an order whose order (same
    tenant) exists by now, as when the order's insert and the payment's webhook ran at once and
    neither saw the other (migration 0051). Returns how many payments were linked."""
    async with pool.connection() as conn, conn.cursor(row_factory=scalar_row) as cur:
        await cur.execute("select storeops.link_unlinked_payments()")
        return int(await cur.fetchone() or 0)


async def process_payment_webhooks(pool: AsyncConnectionPool, limit: int = 500) -> int:
    """Apply stored webhooks until none is left (each batch its own transaction); returns how many."""
    total = 0
    async with pool.connection() as conn, conn.cursor(row_factory=scalar_row) as cur:
        while True:
            await cur.execute(PROCESS_PAYMENT_WEBHOOKS, {"limit": limit})
            handled = int(await cur.fetchone() or 0)
            await conn.commit()
            total += handled
            if handled == 0:
                return total
