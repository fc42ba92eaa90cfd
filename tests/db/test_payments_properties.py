"""Property: any ordering and any duplication of one payment's webhooks ends in the same order row,
refunds, payments and reconciliation. Razorpay promises neither order nor exactly-once delivery."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fakes.razorpay_server import order_entity, payment_entity, refund_entity, store_webhook, webhook_event
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from support import make_order, make_tenant

T0 = 1_735_700_000
NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
RZP_ORDER = "order_PropTest000001"
PAY = "pay_PropTest00000001"
PAY_FAILED = "pay_PropTest00000002"
RFND = "rfnd_PropTest0000001"
RFND_DASHBOARD = "rfnd_PropTest0000002"


def _events(amount: int) -> list[dict]:
    def payment(status: str, **kw) -> dict:
        return payment_entity(PAY, amount=amount, status=status, order_id=RZP_ORDER, created_at=T0 + 60, **kw)

    refunded = payment("captured", amount_refunded=20_000, refund_status="partial")
    failed_other = payment_entity(PAY_FAILED, amount=amount, status="failed", order_id=RZP_ORDER, created_at=T0)
    refund = refund_entity(RFND, payment_id=PAY, amount=15_000, status="pending", created_at=T0 + 500)
    return [
        webhook_event("payment.authorized", payment=payment("authorized"), created_at=T0 + 61),
        webhook_event("payment.captured", payment=payment("captured"), created_at=T0 + 62),
        webhook_event("payment.failed", payment=failed_other, created_at=T0 + 30),
        webhook_event("order.paid", payment=payment("captured"), order=order_entity(RZP_ORDER, amount=amount),
                      created_at=T0 + 63),
        webhook_event("refund.created", refund=refund, payment=refunded, created_at=T0 + 500),
        webhook_event("refund.processed", refund=dict(refund, status="processed"), payment=refunded,
                      created_at=T0 + 900),
        webhook_event("refund.processed", refund=refund_entity(RFND_DASHBOARD, payment_id=PAY, amount=5_000,
                                                               status="processed", created_at=T0 + 950),
                      payment=refunded, created_at=T0 + 950),
        # A late failure of the payment that was captured: must change nothing that matters.
        webhook_event("payment.failed", payment=payment("failed"), created_at=T0 + 59),
    ]


def _snapshot(conn, order_id) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        order = cur.execute(
            "select status, payment_status, razorpay_payment_id, amount_paid, paid_at, refund_amount "
            "from storeops.orders where id = %s", (order_id,)).fetchone()
        refunds = cur.execute(
            "select razorpay_refund_id, razorpay_payment_id, amount, status, source, processed_at "
            "from storeops.refunds where order_id = %s order by razorpay_refund_id", (order_id,)).fetchall()
        payments = cur.execute(
            "select razorpay_payment_id, status, amount, authorized_at, captured_at, failed_at, error_code, "
            "amount_refunded from storeops.razorpay_payments where order_id = %s order by razorpay_payment_id",
            (order_id,)).fetchall()
        recon = cur.execute(
            "select razorpay_payment_id, status, reason, expected_amount, received_amount, difference "
            "from storeops.payment_reconciliation where order_id = %s order by razorpay_payment_id",
            (order_id,)).fetchall()
        waiting = cur.execute("select count(*) as n from storeops.payment_webhooks where not processed and event_id like 'evt_prop%%'").fetchone()
    return {"order": order, "refunds": refunds, "payments": payments, "reconciliation": recon,
            "unprocessed": waiting["n"]}


def _run(conn, deliveries: list[int], batch: bool, amount: int) -> dict:
    events = _events(amount)
    conn.execute("savepoint example")
    try:
        tenant_id = make_tenant(conn)
        order_id = make_order(conn, tenant_id, amount=50_000, razorpay_order_id=RZP_ORDER)
        for n, index in enumerate(deliveries):
            webhook_id = store_webhook(conn, events[index], tenant_id if n % 2 else None, f"evt_prop{n:04d}")
            if not batch:
                conn.execute("select storeops.apply_payment_webhook(%s, %s)", (webhook_id, NOW))
        if batch:
            while conn.execute("select storeops.process_payment_webhooks(3, %s)", (NOW,)).fetchone()[0]:
                pass
        return _snapshot(conn, order_id)
    finally:
        conn.execute("rollback to savepoint example")


@st.composite
def deliveries(draw) -> list[int]:
    """Every event at least once, some more than once, in any order."""
    extra = draw(st.lists(st.integers(0, 7), max_size=6))
    return draw(st.permutations(list(range(8)) + extra))


@pytest.mark.parametrize("amount", [50_000, 49_000])
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=deliveries(), batch=st.booleans())
def test_any_order_and_duplication_of_a_payments_events_ends_the_same(conn, amount, order, batch):
    expected = _run(conn, list(range(8)), batch=False, amount=amount)
    assert _run(conn, order, batch=batch, amount=amount) == expected


def test_the_canonical_outcome_is_the_right_one(conn):
    got = _run(conn, list(range(8)), batch=False, amount=50_000)
    # paid_at is the earliest event that showed the capture (payment.captured before order.paid).
    assert got["order"] == {
        "status": "paid", "payment_status": "partially_refunded", "razorpay_payment_id": PAY,
        "amount_paid": 50_000, "paid_at": datetime.fromtimestamp(T0 + 62, UTC), "refund_amount": 20_000}
    assert [(r["razorpay_refund_id"], r["status"], r["amount"], r["source"]) for r in got["refunds"]] == [
        (RFND, "processed", 15_000, "dashboard"), (RFND_DASHBOARD, "processed", 5_000, "dashboard")]
    assert [(p["razorpay_payment_id"], p["status"]) for p in got["payments"]] == [
        (PAY, "captured"), (PAY_FAILED, "failed")]
    assert [(r["razorpay_payment_id"], r["status"], r["reason"]) for r in got["reconciliation"]] == [
        (PAY, "matched", None)]
    assert got["unprocessed"] == 0
