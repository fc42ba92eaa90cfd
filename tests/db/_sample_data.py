"""Realistic sample data for the 0001-0006 tables, written with plain INSERTs (no storeops functions),
so runbook and RLS tests see rows exactly as an operator would find them.

Two layers:
- `new_<table>(c, tenant_id, **overrides)` returns the column values of one new row of that table for
  a tenant, inserting whatever the row needs first (an order for a refund, a shipment for a tracking
  update). `insert(c, table, values)` writes it. The RLS tests use these to make "a row of tenant X"
  and insert it as whichever role they are testing.
- `load_sample_data(c)` writes a small store landscape (two tenants, orders, domains, webhooks,
  reconciliations, refunds, shipments, retries, health checks) with timestamps relative to the
  database's now(), and returns every id under a readable label, so a runbook test can say which rows
  it must and must not return.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

Values = dict[str, Any]


def _hex(n: int = 12) -> str:
    return uuid.uuid4().hex[:n]


def _digits(n: int) -> str:
    return str(uuid.uuid4().int)[:n]


def insert(c: psycopg.Connection, table: str, values: Mapping[str, Any], key: str = "id") -> Any:
    """INSERT one row into storeops.<table>; returns its `key` column. dicts and lists go in as jsonb."""
    cols = list(values)
    query = sql.SQL("insert into {table} ({cols}) values ({vals}) returning {key}").format(
        table=sql.Identifier("storeops", table),
        cols=sql.SQL(", ").join(map(sql.Identifier, cols)),
        vals=sql.SQL(", ").join(sql.Placeholder(col) for col in cols),
        key=sql.Identifier(key),
    )
    params = {col: Jsonb(v) if isinstance(v, dict | list) else v for col, v in values.items()}
    row = c.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# -- one row of each table ---------------------------------------------------------------------------

def new_tenant(c: psycopg.Connection, tenant_id: uuid.UUID | None = None, **overrides: Any) -> Values:
    slug = f"store-{_hex(8)}"
    return {"name": f"Store {slug}", "slug": slug, "razorpay_account_id": f"acc_{_hex(14)}", **overrides}


def new_tenant_secret(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    return {"tenant_id": tenant_id, "kind": "razorpay_webhook", "secret": f"whsec_{_hex(24)}", **overrides}


def new_order(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    return {"tenant_id": tenant_id, "amount": 49_900, "currency": "INR", "status": "pending",
            "payment_status": "pending", "razorpay_order_id": f"order_{_hex(14)}", **overrides}


def _order_for(c: psycopg.Connection, tenant_id: uuid.UUID) -> uuid.UUID:
    return insert(c, "orders", new_order(c, tenant_id))


def razorpay_event(event: str, amount: int = 49_900, payment_id: str | None = None,
                   order_id: str | None = None) -> Values:
    """A Razorpay webhook body as Razorpay documents it (amounts in paise)."""
    payment = {"id": payment_id or f"pay_{_hex(14)}", "entity": "payment", "amount": amount, "currency": "INR",
               "status": "captured" if event == "payment.captured" else "failed",
               "order_id": order_id or f"order_{_hex(14)}", "method": "upi", "vpa": "customer@okhdfcbank"}
    body: Values = {"entity": "event", "account_id": f"acc_{_hex(14)}", "event": event,
                    "contains": ["payment"], "payload": {"payment": {"entity": payment}}, "created_at": 1_700_000_000}
    if event.startswith("refund."):
        body["contains"] = ["refund", "payment"]
        body["payload"]["refund"] = {"entity": {"id": f"rfnd_{_hex(14)}", "entity": "refund", "amount": 10_000,
                                                "currency": "INR", "payment_id": payment["id"],
                                                "status": "processed" if event == "refund.processed" else "pending"}}
    return body


def new_payment_webhook(c: psycopg.Connection, tenant_id: uuid.UUID | None, **overrides: Any) -> Values:
    event = overrides.get("webhook_type", "payment.captured")
    return {"tenant_id": tenant_id, "event_id": f"evt_{_hex(14)}", "webhook_type": event,
            "payload": razorpay_event(event), **overrides}


def new_payment_reconciliation(c: psycopg.Connection, tenant_id: uuid.UUID | None, **overrides: Any) -> Values:
    order_id = overrides.pop("order_id", None) or (_order_for(c, tenant_id) if tenant_id else None)
    return {"tenant_id": tenant_id, "order_id": order_id, "razorpay_payment_id": f"pay_{_hex(14)}",
            "expected_amount": 49_900, "received_amount": 49_900, "currency": "INR", "status": "pending",
            **overrides}


def new_refund(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    order_id = overrides.pop("order_id", None) or _order_for(c, tenant_id)
    return {"tenant_id": tenant_id, "order_id": order_id, "razorpay_refund_id": f"rfnd_{_hex(14)}",
            "amount": 10_000, "currency": "INR", "reason": "Customer requested", "status": "pending", **overrides}


def new_shiprocket_shipment(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    order_id = overrides.pop("order_id", None) or _order_for(c, tenant_id)
    return {"tenant_id": tenant_id, "order_id": order_id, "awb": _digits(14), "sr_order_id": _digits(9),
            "courier_name": "Delhivery Surface", "status": "NEW", **overrides}


def shiprocket_event(awb: str, status: str, status_id: int) -> Values:
    """A Shiprocket tracking webhook body (timestamps are IST, 'DD MM YYYY HH:MM:SS')."""
    return {"awb": awb, "courier_name": "Delhivery Surface", "current_status": status,
            "current_status_id": status_id, "shipment_status": status, "shipment_status_id": status_id,
            "current_timestamp": "23 05 2023 11:43:52", "order_id": f"SO-{_digits(6)}", "sr_order_id": int(_digits(9)),
            "scans": [{"date": "2023-05-23 11:43:52", "activity": status, "location": "Bengaluru_Peenya_H (Karnataka)"}]}


def new_shipping_webhook(c: psycopg.Connection, tenant_id: uuid.UUID | None, **overrides: Any) -> Values:
    status = overrides.get("webhook_type", "IN TRANSIT")
    awb = _digits(14)
    return {"tenant_id": tenant_id, "event_id": f"{awb}|18|{_hex(6)}", "webhook_type": status,
            "payload": shiprocket_event(awb, status, 18), **overrides}


def new_shipping_tracking_update(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    shipment_id = overrides.pop("shipment_id", None) or insert(c, "shiprocket_shipments",
                                                               new_shiprocket_shipment(c, tenant_id))
    return {"tenant_id": tenant_id, "shipment_id": shipment_id, "status": "IN TRANSIT", "status_code": 18,
            "location": "Hyderabad_Shamshabad_H (Telangana)", "activity": "Bag received at hub",
            "timestamp": datetime.now().astimezone(), **overrides}


def new_custom_domain(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    return {"tenant_id": tenant_id, "domain": f"shop-{_hex(8)}.example.in", **overrides}


def new_domain_verification_log(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    domain_id = overrides.pop("domain_id", None) or insert(c, "custom_domains", new_custom_domain(c, tenant_id))
    return {"tenant_id": tenant_id, "domain_id": domain_id, "success": False,
            "error": "TXT record _storeops-verify not found",
            "dns_records": [{"name": "_storeops-verify.shop.example.in", "type": "TXT", "answers": [],
                             "rcode": "NXDOMAIN", "resolver": "127.0.0.1:53"}], **overrides}


def new_operation_retry(c: psycopg.Connection, tenant_id: uuid.UUID | None, **overrides: Any) -> Values:
    return {"tenant_id": tenant_id, "operation_type": "payment_webhook", "operation_id": uuid.uuid4(),
            "payload": {"webhook_id": str(uuid.uuid4())}, "status": "pending", "attempts": 1,
            "max_attempts": 5, "last_error": "order not found yet", **overrides}


def new_operation_retry_policy(c: psycopg.Connection, tenant_id: uuid.UUID | None = None,
                               **overrides: Any) -> Values:
    return {"operation_type": f"sample_{_hex(8)}", "max_attempts": 3, **overrides}


def new_system_health_check(c: psycopg.Connection, tenant_id: uuid.UUID | None = None,
                            **overrides: Any) -> Values:
    return {"check_type": "payment_gateway", "status": "healthy", "response_time_ms": 182, **overrides}


# -- tables of later migrations (0010+) ---------------------------------------------------------------

def new_razorpay_payment(c: psycopg.Connection, tenant_id: uuid.UUID | None, **overrides: Any) -> Values:
    """0010: one Razorpay payment attempt, merged from its webhooks."""
    order_id = overrides.pop("order_id", None) or (_order_for(c, tenant_id) if tenant_id else None)
    return {"tenant_id": tenant_id, "order_id": order_id, "razorpay_payment_id": f"pay_{_hex(14)}",
            "razorpay_order_id": f"order_{_hex(14)}", "amount": 49_900, "currency": "INR", "status": "captured",
            "method": "upi", **overrides}


def new_shiprocket_status_code(c: psycopg.Connection, tenant_id: uuid.UUID | None = None,
                               **overrides: Any) -> Values:
    """0020: reference data shared by all tenants (codes above 9000 are never Shiprocket's)."""
    code = 9000 + int(_digits(6)) % 900_000
    return {"code": code, "label": f"SAMPLE STATUS {code}", "category": "exception", **overrides}


def new_alert(c: psycopg.Connection, tenant_id: uuid.UUID | None, **overrides: Any) -> Values:
    """0040: an operator alert."""
    return {"tenant_id": tenant_id, "kind": "operation_failed",
            "details": {"operation_type": "payment_webhook", "attempts": 5, "error": "order not found"}, **overrides}


def new_cancelled_paid_order(c: psycopg.Connection, tenant_id: uuid.UUID, **overrides: Any) -> Values:
    """0054: a cancelled order noted as holding money (its automatic refund tried once)."""
    order_id = overrides.pop("order_id", None) or insert(c, "orders", new_order(c, tenant_id, status="cancelled"))
    return {"order_id": order_id, "tenant_id": tenant_id, "auto_attempts": 1,
            "auto_error": "no Razorpay API key for this tenant", **overrides}


def new_scheduler_tick(c: psycopg.Connection, tenant_id: uuid.UUID | None = None, **overrides: Any) -> Values:
    """0040: one tick of a scheduled job (platform-wide, no tenant)."""
    return {"job": f"sample_job_{_hex(8)}", "tick_at": datetime.now().astimezone(), "runner": "runner-a", **overrides}


# -- a whole landscape -------------------------------------------------------------------------------

@dataclass
class SampleData:
    """Ids of the sample rows by label (see load_sample_data for what each label is)."""

    now: datetime
    ids: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, label: str) -> Any:
        return self.ids[label]

    def labels(self, *labels: str) -> list[Any]:
        return [self.ids[label] for label in labels]

    def add(self, label: str, table: str, values: Mapping[str, Any], key: str = "id") -> Any:
        assert label not in self.ids, f"duplicate sample label {label}"
        self.ids[label] = value = self._insert(table, values, key)
        return value

    _conn: psycopg.Connection | None = None

    def _insert(self, table: str, values: Mapping[str, Any], key: str) -> Any:
        assert self._conn is not None
        return insert(self._conn, table, values, key)


def load_sample_data(c: psycopg.Connection) -> SampleData:
    """Two stores with a few days of activity. Labels name what each row is for; ages are from now()."""
    now: datetime = c.execute("select now()").fetchone()[0]
    s = SampleData(now=now, _conn=c)

    def ago(**kw: float) -> datetime:
        return now - timedelta(**kw)

    # Tenants: a Bengaluru tea chain and a Jaipur handloom store.
    t1 = s.add("tenant_chai", "tenants", {"name": "Chai Point Bengaluru", "slug": "chai-point",
                                          "razorpay_account_id": "acc_ChaiPoint001"})
    t2 = s.add("tenant_khadi", "tenants", {"name": "Khadi Threads Jaipur", "slug": "khadi-threads",
                                           "razorpay_account_id": "acc_KhadiJpr002"})

    # Orders (paise).
    o_paid = s.add("order_paid", "orders", new_order(
        c, t1, amount=49_900, status="paid", payment_status="partially_refunded", amount_paid=49_900,
        refund_amount=15_000, razorpay_payment_id="pay_ChaiPaid0001", created_at=ago(days=3)))
    o_shipped = s.add("order_shipped", "orders", new_order(
        c, t1, amount=129_900, status="shipped", payment_status="captured", amount_paid=129_900,
        razorpay_payment_id="pay_ChaiShip0002", created_at=ago(days=2)))
    o_delivered = s.add("order_delivered", "orders", new_order(
        c, t2, amount=250_000, status="delivered", payment_status="captured", amount_paid=250_000,
        razorpay_payment_id="pay_KhadiDel0003", created_at=ago(days=10)))
    s.add("order_pending", "orders", new_order(c, t2, amount=9_900, created_at=ago(hours=1)))

    # Custom domains and their verification history (inserted out of time order on purpose).
    d_chai = s.add("domain_chai", "custom_domains", new_custom_domain(
        c, t1, domain="shop.chaipoint.in", status="verified", verification_attempts=3,
        last_verified_at=ago(hours=1), ssl_status="active", ssl_expires_at=now + timedelta(days=80)))
    d_khadi = s.add("domain_khadi", "custom_domains", new_custom_domain(
        c, t2, domain="khadithreads.com", status="pending", verification_attempts=1,
        last_verification_error="CNAME points to khadithreads.myshopify.com, not our edge"))
    s.add("domain_chai_www", "custom_domains", new_custom_domain(c, t1, domain="www.chaipoint.in"))
    for label, hours, ok, error in [
        ("log_chai_2h", 2, False, "TXT record _storeops-verify.shop.chaipoint.in has the wrong token"),
        ("log_chai_1h", 1, True, None),
        ("log_chai_3h", 3, False, "TXT record _storeops-verify.shop.chaipoint.in not found (NXDOMAIN)"),
    ]:
        s.add(label, "domain_verification_logs", new_domain_verification_log(
            c, t1, domain_id=d_chai, success=ok, error=error, verified_at=ago(hours=hours),
            dns_records=[{"name": "_storeops-verify.shop.chaipoint.in", "type": "TXT",
                          "answers": [] if error else ['"storeops-verify=abc123"'], "rcode": "NOERROR", "ttl": 300}]))
    s.add("log_khadi", "domain_verification_logs", new_domain_verification_log(
        c, t2, domain_id=d_khadi, error="CNAME points elsewhere", verified_at=ago(minutes=30)))

    # Payment webhooks: recent (inside 24 h), a day old, and old enough for the 90-day cleanup.
    def pw(label: str, tenant: uuid.UUID | None, event: str, age: timedelta, processed: bool) -> None:
        created = now - age
        s.add(label, "payment_webhooks", new_payment_webhook(
            c, tenant, webhook_type=event, payload=razorpay_event(event), created_at=created,
            processed=processed, processed_at=created + timedelta(seconds=2) if processed else None))

    pw("pw_captured_new_done1", t1, "payment.captured", timedelta(minutes=10), True)
    pw("pw_captured_new_done2", t2, "payment.captured", timedelta(hours=5), True)
    pw("pw_captured_new_open", t1, "payment.captured", timedelta(minutes=2), False)
    pw("pw_failed_new_done", t1, "payment.failed", timedelta(hours=3), True)
    pw("pw_refund_created_new_open", t2, "refund.created", timedelta(hours=23), False)
    pw("pw_refund_processed_new_done", t1, "refund.processed", timedelta(hours=1), True)
    pw("pw_captured_25h_done1", t1, "payment.captured", timedelta(hours=25), True)
    pw("pw_captured_25h_done2", t2, "payment.captured", timedelta(hours=30), True)
    pw("pw_failed_25h_open", None, "payment.failed", timedelta(hours=26), False)
    pw("pw_89d_done", t1, "payment.captured", timedelta(days=89), True)
    pw("pw_120d_done", t2, "payment.captured", timedelta(days=120), True)
    pw("pw_200d_open", t1, "payment.failed", timedelta(days=200), False)

    # Shipping webhooks, same shape of ages.
    def sw(label: str, tenant: uuid.UUID | None, status: str, age: timedelta, processed: bool) -> None:
        created = now - age
        s.add(label, "shipping_webhooks", new_shipping_webhook(
            c, tenant, webhook_type=status, created_at=created, processed=processed,
            processed_at=created + timedelta(seconds=1) if processed else None))

    sw("sw_transit_new_done", t1, "IN TRANSIT", timedelta(hours=2), True)
    sw("sw_transit_new_open", t2, "IN TRANSIT", timedelta(minutes=20), False)
    sw("sw_delivered_new_done", t2, "DELIVERED", timedelta(hours=20), True)
    sw("sw_ofd_new_open", t1, "OUT FOR DELIVERY", timedelta(minutes=5), False)
    sw("sw_rto_new_done", t1, "RTO INITIATED", timedelta(hours=12), True)
    sw("sw_pickup_30h_done", t1, "PICKED UP", timedelta(hours=30), True)
    sw("sw_transit_30h_done", t2, "IN TRANSIT", timedelta(hours=31), True)
    sw("sw_95d_done", t1, "DELIVERED", timedelta(days=95), True)
    sw("sw_91d_done", t2, "IN TRANSIT", timedelta(days=91), True)
    sw("sw_60d_done", t1, "DELIVERED", timedelta(days=60), True)
    sw("sw_150d_open", None, "IN TRANSIT", timedelta(days=150), False)

    # Reconciliations in every state and age.
    def rec(label: str, tenant: uuid.UUID | None, order: uuid.UUID | None, status: str, age: timedelta,
            **kw: Any) -> None:
        s.add(label, "payment_reconciliation", new_payment_reconciliation(
            c, tenant, order_id=order, status=status, created_at=now - age, **kw))

    rec("rec_pending_new", t1, o_paid, "pending", timedelta(hours=2))
    rec("rec_mismatch_old", t1, o_shipped, "mismatch", timedelta(days=3), expected_amount=129_900,
        received_amount=120_000, reason="under")
    rec("rec_pending_old", t2, o_delivered, "pending", timedelta(days=2), expected_amount=250_000,
        received_amount=250_000)
    rec("rec_mismatch_new", None, None, "mismatch", timedelta(minutes=30), expected_amount=None,
        received_amount=99_900, reason="unknown_order")
    rec("rec_matched_old", t1, o_paid, "matched", timedelta(days=5), reconciled_at=ago(days=5))
    rec("rec_resolved_old", t2, o_delivered, "resolved", timedelta(days=4), expected_amount=250_000,
        received_amount=240_000, reason="under", notes="Bank settlement short; confirmed with Razorpay",
        reconciled_at=ago(days=1), reconciled_by=uuid.UUID("6f1c2a4e-0000-4000-8000-00000000a11c"))

    # Refunds: two on the paid order, one on another order.
    s.add("refund_paid_old", "refunds", new_refund(c, t1, order_id=o_paid, amount=10_000, status="processed",
                                                   processed_at=ago(days=2), created_at=ago(days=2)))
    s.add("refund_paid_new", "refunds", new_refund(c, t1, order_id=o_paid, amount=5_000,
                                                   reason="Damaged in transit", created_at=ago(hours=1)))
    s.add("refund_delivered", "refunds", new_refund(c, t2, order_id=o_delivered, amount=20_000,
                                                    created_at=ago(hours=6)))

    # Shipments: the shipped order has a forward shipment with scans and a second one not picked up yet.
    sh_fwd = s.add("shipment_fwd", "shiprocket_shipments", new_shiprocket_shipment(
        c, t1, order_id=o_shipped, awb="19041424751540", status="REACHED AT DESTINATION HUB", created_at=ago(days=2)))
    s.add("shipment_second", "shiprocket_shipments", new_shiprocket_shipment(
        c, t1, order_id=o_shipped, awb=None, status="NEW", created_at=ago(hours=4)))
    sh_del = s.add("shipment_delivered", "shiprocket_shipments", new_shiprocket_shipment(
        c, t2, order_id=o_delivered, awb="14112322108492", status="DELIVERED", created_at=ago(days=9)))
    for label, hours, status, location in [
        ("track_fwd_26h", 26, "IN TRANSIT", "Hyderabad_Shamshabad_H (Telangana)"),
        ("track_fwd_3h", 3, "REACHED AT DESTINATION HUB", "Chennai_Guindy_DC (Tamil Nadu)"),
        ("track_fwd_50h", 50, "PICKED UP", "Bengaluru_Peenya_H (Karnataka)"),
    ]:
        s.add(label, "shipping_tracking_updates", new_shipping_tracking_update(
            c, t1, shipment_id=sh_fwd, status=status, location=location, timestamp=ago(hours=hours)))
    for i, (status, location) in enumerate([
        ("PICKED UP", "Jaipur_Sitapura_H (Rajasthan)"), ("IN TRANSIT", "Jaipur_Sitapura_H (Rajasthan)"),
        ("IN TRANSIT", "Ahmedabad_Changodar_H (Gujarat)"), ("IN TRANSIT", "Mumbai_Bhiwandi_H (Maharashtra)"),
        ("IN TRANSIT", "Pune_Chakan_H (Maharashtra)"), ("REACHED AT DESTINATION HUB", "Pune_Kothrud_DC"),
        ("OUT FOR DELIVERY", "Pune_Kothrud_DC"), ("DELIVERED", "Pune_Kothrud_DC"),
    ]):
        s.add(f"track_del_{i}", "shipping_tracking_updates", new_shipping_tracking_update(
            c, t2, shipment_id=sh_del, status=status, location=location, timestamp=ago(days=9, hours=-20 * i)))

    # Retry queue rows in every state: due, not due, failed, completed, leased (live and expired).
    def retry(label: str, tenant: uuid.UUID | None, op_type: str, **kw: Any) -> None:
        s.add(label, "operation_retry_queue", new_operation_retry(c, tenant, operation_type=op_type, **kw))

    retry("retry_pw_due", t1, "payment_webhook", next_retry_at=ago(minutes=10), created_at=ago(minutes=15))
    retry("retry_pw_due_older", t2, "payment_webhook", attempts=2, next_retry_at=ago(hours=1),
          created_at=ago(hours=1, minutes=15))
    retry("retry_pw_later", t1, "payment_webhook", next_retry_at=now + timedelta(minutes=20))
    retry("retry_pw_failed", t2, "payment_webhook", status="failed", attempts=5, next_retry_at=ago(hours=3),
          completed_at=ago(hours=1), last_error="order_Khadi not found after 5 attempts")
    retry("retry_dv_due", t1, "domain_verify", next_retry_at=ago(minutes=5), payload={"domain_id": str(d_chai)},
          last_error="TXT record not found")
    retry("retry_dv_completed", t2, "domain_verify", status="completed", next_retry_at=ago(hours=2),
          completed_at=ago(hours=2), payload={"domain_id": str(d_khadi)})
    retry("retry_sync_lease_expired", t1, "shipment_sync", status="processing", next_retry_at=ago(minutes=30),
          locked_by="runner-a", locked_until=ago(minutes=1), claim_token=7)
    retry("retry_sync_lease_live", t2, "shipment_sync", status="processing", next_retry_at=ago(minutes=2),
          locked_by="runner-b", locked_until=now + timedelta(minutes=4), claim_token=8)

    # Health checks: twelve payment gateway checks every 15 minutes, a few of the others.
    for i in range(12):
        status = "down" if i == 4 else "degraded" if i == 2 else "healthy"
        s.add(f"health_pg_{i}", "system_health_checks", new_system_health_check(
            c, check_type="payment_gateway", status=status, response_time_ms=None if status == "down" else 150 + 40 * i,
            error="connect timeout to api.razorpay.com" if status == "down" else None, checked_at=ago(minutes=15 * i)))
    for check_type in ("domain_verification", "shipping_api"):
        for i in range(3):
            s.add(f"health_{check_type}_{i}", "system_health_checks", new_system_health_check(
                c, check_type=check_type, response_time_ms=40 + i, checked_at=ago(minutes=15 * i + 1)))
    return s
