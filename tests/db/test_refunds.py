"""Refunds in SQL: request_refund's checks and their SQLSTATEs, idempotency keys, record_refund_result,
the order's refund totals, and concurrent requests that must never over-refund."""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
from fakes.razorpay_server import payment_entity, razorpay_id, refund_entity, store_webhook, webhook_event
from psycopg.rows import dict_row
from support import as_runner, make_order, make_tenant


def _pay(conn, tenant_id, order_id, rzp_order, amount=50_000, currency="INR") -> str:
    payment = payment_entity(amount=amount, currency=currency, status="captured", order_id=rzp_order)
    webhook_id = store_webhook(conn, webhook_event("payment.captured", payment=payment), tenant_id)
    conn.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,))
    return payment["id"]


@pytest.fixture
def paid(conn):
    """A ₹500.00 order paid by one captured payment; functions run as the runner role."""
    tenant_id = make_tenant(conn)
    rzp_order = razorpay_id("order")
    order_id = make_order(conn, tenant_id, amount=50_000, razorpay_order_id=rzp_order)
    pay_id = _pay(conn, tenant_id, order_id, rzp_order)
    as_runner(conn)
    return {"tenant_id": tenant_id, "order_id": order_id, "rzp_order": rzp_order, "pay_id": pay_id}


def request(conn, shop, amount, key=None, reason="Customer requested", tenant_id=None, order_id=None) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "select * from storeops.request_refund(%s, %s, %s, %s, %s)",
            (tenant_id or shop["tenant_id"], order_id or shop["order_id"], amount, reason, key)).fetchone()


def result(conn, refund_id, rfnd_id, status, error=None) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select * from storeops.record_refund_result(%s, %s, %s, %s)",
                           (refund_id, rfnd_id, status, error)).fetchone()


def order_of(conn, shop) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select * from storeops.orders where id = %s", (shop["order_id"],)).fetchone()


def rejected(conn, sqlstate: str, fn, *args) -> psycopg.Error:
    conn.execute("savepoint before_error")
    with pytest.raises(psycopg.Error) as info:
        fn(conn, *args)
    conn.execute("rollback to savepoint before_error")
    assert info.value.sqlstate == sqlstate, info.value
    return info.value


def test_a_refund_is_recorded_pending_with_its_payment_and_key(conn, paid):
    refund = request(conn, paid, 20_000, key="order-1234-refund-1")
    assert (refund["status"], refund["amount"], refund["currency"], refund["source"]) == ("pending", 20_000, "INR", "api")
    assert (refund["razorpay_payment_id"], refund["idempotency_key"], refund["razorpay_refund_id"]) == (
        paid["pay_id"], "order-1234-refund-1", None)
    assert refund["reason"] == "Customer requested"
    # Without a key one is generated, usable as Razorpay's X-Refund-Idempotency.
    other = request(conn, paid, 1_000)
    assert len(other["idempotency_key"]) >= 10


def test_the_same_idempotency_key_returns_the_same_refund(conn, paid):
    first = request(conn, paid, 20_000, key="same-key-000001")
    again = request(conn, paid, 20_000, key="same-key-000001")
    assert again["id"] == first["id"]
    assert conn.execute("select count(*) from storeops.refunds where order_id = %s", (paid["order_id"],)).fetchone()[0] == 1
    err = rejected(conn, "SO412", request, paid, 30_000, "same-key-000001")
    assert "already used for a different refund" in str(err)


def test_the_checks_and_their_sqlstates(conn, paid):
    assert "above zero" in str(rejected(conn, "SO400", request, paid, 0))
    rejected(conn, "SO400", request, paid, -5)
    rejected(conn, "SO400", request, paid, 100, "short")
    assert "not found" in str(rejected(conn, "SO404", request, paid, 100, None, "x", uuid.uuid4()))
    rejected(conn, "SO404", request, paid, 100, None, "x", None, uuid.uuid4())
    conn.execute("reset role")
    unpaid_order = make_order(conn, paid["tenant_id"], amount=10_000, razorpay_order_id=razorpay_id("order"))
    as_runner(conn)
    assert "not paid" in str(rejected(conn, "SO409", request, paid, 100, None, "x", None, unpaid_order))
    err = rejected(conn, "SO422", request, paid, 50_001)
    assert "more than the 50000 paise left" in str(err)


def test_pending_refunds_count_against_the_balance_and_failed_ones_do_not(conn, paid):
    first = request(conn, paid, 30_000)
    rejected(conn, "SO422", request, paid, 20_001)
    result(conn, first["id"], None, "failed", "BAD_REQUEST_ERROR: refund not possible")
    assert request(conn, paid, 50_000)["status"] == "pending"
    rejected(conn, "SO422", request, paid, 1)


def test_record_refund_result_moves_the_order_totals(conn, paid):
    partial = request(conn, paid, 20_000)
    row = result(conn, partial["id"], "rfnd_FS8TWyPrCsa0OB", "processed")
    assert (row["status"], row["razorpay_refund_id"]) == ("processed", "rfnd_FS8TWyPrCsa0OB")
    assert row["processed_at"] is not None
    order = order_of(conn, paid)
    assert (order["refund_amount"], order["payment_status"], order["status"]) == (20_000, "partially_refunded", "paid")

    rest = request(conn, paid, 30_000)
    result(conn, rest["id"], "rfnd_FS8TWyPrCsa0OC", "pending")
    assert order_of(conn, paid)["refund_amount"] == 20_000  # pending is not refunded yet
    result(conn, rest["id"], "rfnd_FS8TWyPrCsa0OC", "processed")
    order = order_of(conn, paid)
    assert (order["refund_amount"], order["payment_status"]) == (50_000, "refunded")


def test_a_refund_status_never_moves_back(conn, paid):
    refund = request(conn, paid, 20_000)
    result(conn, refund["id"], "rfnd_FS8TWyPrCsa0OD", "processed")
    row = result(conn, refund["id"], "rfnd_FS8TWyPrCsa0OD", "pending")
    assert row["status"] == "processed"
    row = result(conn, refund["id"], None, "failed", "late error")
    assert (row["status"], row["error"]) == ("processed", None)
    rejected(conn, "SO409", result, refund["id"], "rfnd_SomeOtherId0001", "processed")
    rejected(conn, "SO400", result, refund["id"], None, "done")
    rejected(conn, "SO404", result, uuid.uuid4(), None, "processed")


def test_webhook_first_then_our_result_is_still_one_refund(conn, paid):
    refund = request(conn, paid, 20_000, key="race-key-000001")
    conn.execute("reset role")
    rfnd = refund_entity(payment_id=paid["pay_id"], amount=20_000, status="processed",
                         notes={"idempotency_key": "race-key-000001"})
    webhook_id = store_webhook(conn, webhook_event("refund.processed", refund=rfnd), paid["tenant_id"])
    assert conn.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,)).fetchone()[0] == "applied"
    as_runner(conn)
    row = result(conn, refund["id"], rfnd["id"], "pending")  # Razorpay's create answer came back later
    assert (row["status"], row["razorpay_refund_id"]) == ("processed", rfnd["id"])
    assert conn.execute("select count(*) from storeops.refunds where order_id = %s", (paid["order_id"],)).fetchone()[0] == 1


def test_an_unmatched_webhook_row_is_folded_into_ours_when_razorpay_names_it(conn, paid):
    refund = request(conn, paid, 20_000)
    conn.execute("reset role")
    # Razorpay refunded a different amount than the request said (no notes, no match): recorded as dashboard.
    rfnd = refund_entity(payment_id=paid["pay_id"], amount=19_000, status="processed")
    webhook_id = store_webhook(conn, webhook_event("refund.processed", refund=rfnd), paid["tenant_id"])
    conn.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,))
    assert conn.execute("select count(*) from storeops.refunds where order_id = %s", (paid["order_id"],)).fetchone()[0] == 2
    as_runner(conn)
    row = result(conn, refund["id"], rfnd["id"], "processed")  # ...but the create call says it was ours
    assert (row["id"], row["status"], row["source"]) == (refund["id"], "processed", "api")
    assert conn.execute("select count(*) from storeops.refunds where order_id = %s", (paid["order_id"],)).fetchone()[0] == 1


def test_a_duplicate_capture_refunds_the_duplicate_payment(conn, paid):
    conn.execute("reset role")
    second = _pay(conn, paid["tenant_id"], paid["order_id"], paid["rzp_order"])
    as_runner(conn)
    order = order_of(conn, paid)
    assert order["amount_paid"] == 100_000
    refund = request(conn, paid, 50_000)
    assert refund["razorpay_payment_id"] in (paid["pay_id"], second)
    # Then the other payment; a third refund has nothing left.
    other = request(conn, paid, 50_000)
    assert {refund["razorpay_payment_id"], other["razorpay_payment_id"]} == {paid["pay_id"], second}
    rejected(conn, "SO422", request, paid, 100)


def test_concurrent_refund_requests_never_exceed_what_was_captured(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant_id = make_tenant(c)
        rzp_order = razorpay_id("order")
        order_id = make_order(c, tenant_id, amount=50_000, razorpay_order_id=rzp_order)
        _pay(c, tenant_id, order_id, rzp_order)

    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def ask(n: int) -> None:
        with psycopg.connect(fresh_db, autocommit=True) as c:
            c.execute("set role storeops_runner")
            barrier.wait()
            try:
                c.execute("select id from storeops.request_refund(%s, %s, 20000, 'dup click', %s)",
                          (tenant_id, order_id, f"concurrent-key-{n:04d}"))
                outcome = "ok"
            except psycopg.Error as exc:
                outcome = exc.sqlstate or "?"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(outcomes) == ["SO422"] * 6 + ["ok"] * 2
    with psycopg.connect(fresh_db) as c:
        total = c.execute("select sum(amount) from storeops.refunds where order_id = %s and status <> 'failed'",
                          (order_id,)).fetchone()[0]
        assert total == 40_000
