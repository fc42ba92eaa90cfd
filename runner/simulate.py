"""`storeops simulate`: signed, realistic Razorpay and Shiprocket traffic against a running storeops.

It creates a demo tenant with orders and shipments in the database, then plays each order's life:
payment.authorized → payment.captured (→ order.paid) → sometimes a refund, and the shipment's
scans PICKED UP → IN TRANSIT → OUT FOR DELIVERY → DELIVERED (or RTO). Events are delivered the way
providers deliver them: at least once (some twice) and not always in order. Amounts are paise.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone

import httpx
import orjson

IST = timezone(timedelta(hours=5, minutes=30))


def rzp_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(10).replace('-', 'a').replace('_', 'b')[:14]}"


def payment_entity(payment_id: str, order_id: str, amount: int, status: str, *, currency: str = "INR",
                   created_at: int | None = None, amount_refunded: int = 0) -> dict:
    failed = status == "failed"
    return {
        "id": payment_id, "entity": "payment", "amount": amount, "currency": currency, "base_amount": amount,
        "status": status, "order_id": order_id, "invoice_id": None, "international": False, "method": "upi",
        "amount_refunded": amount_refunded, "amount_transferred": 0,
        "refund_status": None if not amount_refunded else ("full" if amount_refunded >= amount else "partial"),
        "captured": status in ("captured", "refunded"), "description": "storeops demo order", "card_id": None,
        "bank": None, "wallet": None, "vpa": "shopper@upi", "email": "shopper@example.com",
        "contact": "+919876543210", "notes": [], "fee": None if status != "captured" else amount * 2 // 100,
        "tax": None if status != "captured" else amount * 36 // 10000,
        "error_code": "BAD_REQUEST_ERROR" if failed else None,
        "error_description": "Payment failed" if failed else None,
        "error_source": "customer" if failed else None, "error_step": "payment_authentication" if failed else None,
        "error_reason": "payment_cancelled" if failed else None,
        "acquirer_data": {"rrn": str(random.randint(10**11, 10**12 - 1))},
        "upi": {"payer_account_type": "bank_account", "vpa": "shopper@upi", "flow": "collect"},
        "created_at": created_at or int(time.time()),
    }


def payment_event(event: str, payment: dict, *, account_id: str | None = None, order: dict | None = None) -> dict:
    payload: dict = {"payment": {"entity": payment}}
    contains = ["payment"]
    if order is not None:
        payload["order"] = {"entity": order}
        contains.append("order")
    return {"entity": "event", "account_id": account_id or "acc_StoreopsDemo01", "event": event,
            "contains": contains, "payload": payload, "created_at": int(time.time())}


def refund_event(event: str, refund_id: str, payment: dict, amount: int, status: str, *,
                 account_id: str | None = None, notes: dict | None = None) -> dict:
    refund = {"id": refund_id, "entity": "refund", "amount": amount, "currency": payment["currency"],
              "payment_id": payment["id"], "notes": notes or {}, "receipt": None, "acquirer_data": {"arn": None},
              "created_at": int(time.time()), "batch_id": None, "status": status, "speed_processed": "normal",
              "speed_requested": "optimum"}
    return {"entity": "event", "account_id": account_id or "acc_StoreopsDemo01", "event": event,
            "contains": ["refund", "payment"],
            "payload": {"refund": {"entity": refund}, "payment": {"entity": payment}}, "created_at": int(time.time())}


SHIPROCKET_FLOW = [(42, "PICKED UP"), (18, "IN TRANSIT"), (17, "OUT FOR DELIVERY"), (7, "DELIVERED")]
SHIPROCKET_RTO = [(42, "PICKED UP"), (18, "IN TRANSIT"), (21, "UNDELIVERED"), (9, "RTO INITIATED"),
                  (10, "RTO DELIVERED")]


def shiprocket_event(awb: str, order_ref: str, status_id: int, status: str, at: datetime, *,
                     sr_order_id: int = 0, is_return: int = 0) -> dict:
    ist = at.astimezone(IST)
    return {
        "awb": awb, "courier_name": "Delhivery Surface", "current_status": status, "current_status_id": status_id,
        "shipment_status": status, "shipment_status_id": status_id,
        "current_timestamp": ist.strftime("%d %m %Y %H:%M:%S"), "order_id": order_ref, "sr_order_id": sr_order_id,
        "awb_assigned_date": (ist - timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"),
        "pickup_scheduled_date": (ist - timedelta(hours=20)).strftime("%Y-%m-%d %H:%M:%S"),
        "etd": (ist + timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S"),
        "scans": [{"date": ist.strftime("%Y-%m-%d %H:%M:%S"), "status": "X-UCI", "activity": status,
                   "location": "Mumbai_Andheri_H (Maharashtra)", "sr-status": str(status_id),
                   "sr-status-label": status}],
        "is_return": is_return, "channel_id": 1234, "pod_status": "", "pod": "Not Available",
    }


def sign(body: bytes, secret: str) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass
class Delivery:
    path: str
    body: bytes
    headers: dict[str, str]


@dataclass
class Plan:
    tenant_id: str
    deliveries: list[Delivery] = field(default_factory=list)
    orders: list[str] = field(default_factory=list)


def plan_traffic(tenant_id: str, orders: list[tuple[str, str, int, str]], razorpay_secret: str, shiprocket_token: str,
                 *, duplicate_rate: float = 0.05, refund_rate: float = 0.1, rto_rate: float = 0.05,
                 shuffle_window: int = 3, seed: int | None = None) -> list[Delivery]:
    """Events for `orders` [(order uuid, razorpay order id, amount paise, awb)], signed, with some
    redeliveries and local reordering, the way providers deliver."""
    rnd = random.Random(seed)
    out: list[Delivery] = []
    rzp_path = f"/functions/v1/razorpay-webhook/{tenant_id}"
    ship_path = f"/functions/v1/shipping-webhook/{tenant_id}"
    for order_uuid, rzp_order, amount, awb in orders:
        pay_id = rzp_id("pay")
        events = [payment_event("payment.authorized", payment_entity(pay_id, rzp_order, amount, "authorized")),
                  payment_event("payment.captured", payment_entity(pay_id, rzp_order, amount, "captured"))]
        if rnd.random() < refund_rate:
            part = amount // 2 or amount
            refund_id = rzp_id("rfnd")
            captured = payment_entity(pay_id, rzp_order, amount, "captured", amount_refunded=part)
            events.append(refund_event("refund.created", refund_id, captured, part, "pending"))
            events.append(refund_event("refund.processed", refund_id, captured, part, "processed"))
        rzp = []
        for ev in events:
            body = orjson.dumps(ev)
            headers = {"content-type": "application/json", "x-razorpay-signature": sign(body, razorpay_secret),
                       "x-razorpay-event-id": rzp_id("evt")}
            rzp.append(Delivery(rzp_path, body, headers))
        flow = SHIPROCKET_RTO if rnd.random() < rto_rate else SHIPROCKET_FLOW
        at = datetime.now(UTC) - timedelta(hours=len(flow))
        ship = []
        for i, (sid, label) in enumerate(flow):
            body = orjson.dumps(shiprocket_event(awb, order_uuid, sid, label, at + timedelta(hours=i)))
            ship.append(Delivery(ship_path, body, {"content-type": "application/json", "x-api-key": shiprocket_token}))
        for seq in (rzp, ship):
            for i in range(0, len(seq), shuffle_window):  # local reordering, as retries cause
                window = seq[i:i + shuffle_window]
                rnd.shuffle(window)
                seq[i:i + shuffle_window] = window
            for d in seq:
                out.append(d)
                if rnd.random() < duplicate_rate:
                    out.append(d)
    return out


def seed_demo(conn, n_orders: int, *, tenant_name: str = "Demo Store", razorpay_secret: str, shiprocket_token: str,
              seed: int | None = None) -> tuple[str, list[tuple[str, str, int, str]]]:
    """A tenant with its own webhook secrets, orders (INR, paise) and shipments. Sync psycopg conn."""
    rnd = random.Random(seed)
    tenant_id = conn.execute("insert into storeops.tenants (name, slug) values (%s, %s) returning id",
                             (tenant_name, f"demo-{uuid.uuid4().hex[:8]}")).fetchone()[0]
    conn.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret) values (%s, 'razorpay_webhook', %s),"
                 " (%s, 'shiprocket_webhook', %s)", (tenant_id, razorpay_secret, tenant_id, shiprocket_token))
    orders = []
    rows = []
    for _ in range(n_orders):
        oid = uuid.uuid4()
        amount = rnd.choice([49_900, 99_900, 1_49_900, 2_99_900, 12_345_00])
        rzp_order = rzp_id("order")
        awb = f"{rnd.randint(10**12, 10**13 - 1)}"
        orders.append((str(oid), rzp_order, amount, awb))
        rows.append((oid, tenant_id, amount, rzp_order))
    with conn.cursor() as cur:
        with cur.copy("copy storeops.orders (id, tenant_id, amount, razorpay_order_id) from stdin") as copy:
            for r in rows:
                copy.write_row(r)
        with cur.copy("copy storeops.shiprocket_shipments (tenant_id, order_id, awb) from stdin") as copy:
            for oid, _rzp, _amt, awb in orders:
                copy.write_row((tenant_id, oid, awb))
    return str(tenant_id), orders


async def deliver(base_url: str, deliveries: list[Delivery], *, concurrency: int = 64, rate: float = 0.0,
                  timeout: float = 10.0) -> dict:
    """Send every delivery (at most `rate`/s when > 0); retry 429/5xx the way providers do."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue: asyncio.Queue[Delivery] = asyncio.Queue()
    for d in deliveries:
        queue.put_nowait(d)
    started = time.perf_counter()
    sent = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:
        async def one_worker():
            nonlocal sent
            while True:
                try:
                    d = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                if rate > 0:
                    due = started + sent / rate
                    sent += 1
                    delay = due - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                for attempt in range(5):
                    t0 = time.perf_counter()
                    try:
                        r = await client.post(d.path, content=d.body, headers=d.headers)
                        code = r.status_code
                    except httpx.HTTPError:
                        code = 599
                    latencies.append(time.perf_counter() - t0)
                    statuses[code] = statuses.get(code, 0) + 1
                    if code < 429 or code in (400, 401, 404, 413):
                        break
                    await asyncio.sleep(min(0.2 * 2 ** attempt, 2))

        await asyncio.gather(*(one_worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "seconds": round(elapsed, 3), "per_second": round(len(latencies) / elapsed, 1)
            if elapsed else 0.0, "p50_ms": round(pct(0.50), 2), "p99_ms": round(pct(0.99), 2), "statuses": statuses}
