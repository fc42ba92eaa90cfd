"""Alerts are raised by triggers, whoever writes: a failed operation, a reconciliation mismatch, a failed refund."""

import uuid

from support import make_order, make_tenant


def test_an_operation_reaching_failed_raises_one_alert(conn):
    op = uuid.uuid4()
    for _ in range(5):
        conn.execute("select storeops.schedule_operation_retry(null, 'refund_create', %s, '{}', 'gateway 502')", (op,))
    assert conn.execute("select count(*) from storeops.alerts").fetchone()[0] == 0
    status = conn.execute("select status from storeops.schedule_operation_retry(null, 'refund_create', %s, '{}', "
                          "'gateway 502 again')", (op,)).fetchone()[0]
    assert status == "failed"
    rows = conn.execute("select kind, details from storeops.alerts").fetchall()
    assert len(rows) == 1
    kind, details = rows[0]
    assert kind == "operation_failed"
    assert details["operation_id"] == str(op) and details["error"] == "gateway 502 again"


def test_a_reconciliation_mismatch_raises_an_alert_once(conn):
    rec = conn.execute("""insert into storeops.payment_reconciliation (received_amount, expected_amount, status, reason,
                          razorpay_payment_id) values (900, 1000, 'mismatch', 'under', 'pay_AlertTest01') returning id""").fetchone()[0]
    conn.execute("update payment_reconciliation set notes = 'looked at it' where id = %s", (rec,))
    rows = conn.execute("select kind, details->>'reason', details->>'reconciliation_id' from storeops.alerts").fetchall()
    assert rows == [("reconciliation_mismatch", "under", str(rec))]


def test_alerts_are_claimed_by_one_worker_and_closed(conn):
    conn.execute("select storeops.raise_alert('operation_failed', null, '{}')")
    first = conn.execute("select id from storeops.claim_alerts('w1')").fetchall()
    assert len(first) == 1
    assert conn.execute("select count(*) from storeops.claim_alerts('w2')").fetchone()[0] == 0
    assert conn.execute("select storeops.mark_alerts_delivered(%s)", ([first[0][0]],)).fetchone()[0] == 1
    # A lease that runs out makes an undelivered alert claimable again.
    conn.execute("select storeops.raise_alert('operation_failed', null, '{}')")
    conn.execute("select * from storeops.claim_alerts('w1', 10, interval '1 minute', now() - interval '2 minutes')")
    assert conn.execute("select count(*) from storeops.claim_alerts('w2')").fetchone()[0] == 1


def test_daily_review_alerts_on_stale_mismatches_and_refunds_waiting_for_a_payment(conn):
    assert conn.execute("select storeops.review_reconciliation()").fetchone()[0] == 0
    assert conn.execute("select count(*) from storeops.alerts").fetchone()[0] == 0
    conn.execute("""insert into storeops.payment_reconciliation (received_amount, expected_amount, status, reason,
                    razorpay_payment_id, created_at) values (900, 1000, 'mismatch', 'under', 'pay_Stale0001',
                    now() - interval '2 days')""")
    conn.execute("""insert into storeops.payment_webhooks (event_id, webhook_type, payload, outcome, deferred_payment_id,
                    created_at) values ('evt_Waiting01', 'refund.processed', '{}', 'deferred', 'pay_NeverCame',
                    now() - interval '3 days')""")
    assert conn.execute("select storeops.review_reconciliation()").fetchone()[0] == 2
    kinds = {r[0]: r[1] for r in conn.execute("select kind, details from storeops.alerts").fetchall()}
    assert kinds["refund_waiting_for_payment"] == {"deferred_older_than_1_day": 1}
    assert kinds["reconciliation_stale"] == {"open_older_than_1_day": 1}


def test_a_refund_that_fails_raises_one_alert_whoever_marks_it(conn):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant, amount=50_000)
    refund = conn.execute("""insert into storeops.refunds (tenant_id, order_id, razorpay_refund_id, amount, status)
                             values (%s, %s, 'rfnd_AlertTest0001', 20000, 'pending') returning id""",
                          (tenant, order)).fetchone()[0]
    assert conn.execute("select count(*) from storeops.alerts").fetchone()[0] == 0
    conn.execute("update storeops.refunds set status = 'failed', error = 'Razorpay reported the refund failed' "
                 "where id = %s", (refund,))
    conn.execute("update storeops.refunds set reason = 'looked at it' where id = %s", (refund,))
    conn.execute("update storeops.refunds set status = 'failed' where id = %s", (refund,))  # again: no second alert
    rows = conn.execute("select kind, tenant_id, details from storeops.alerts").fetchall()
    assert len(rows) == 1
    kind, tenant_id, details = rows[0]
    assert (kind, tenant_id) == ("refund_failed", tenant)
    assert (details["refund_id"], details["order_id"], details["amount"], details["currency"]) == (
        str(refund), str(order), 20_000, "INR")
    assert details["error"] == "Razorpay reported the refund failed"
    # One that arrives failed (a dashboard refund's refund.failed) raises its own.
    conn.execute("""insert into storeops.refunds (tenant_id, order_id, razorpay_refund_id, amount, status, source)
                    values (%s, %s, 'rfnd_AlertTest0002', 5000, 'failed', 'dashboard')""", (tenant, order))
    assert conn.execute("select count(*) from storeops.alerts where kind = 'refund_failed'").fetchone()[0] == 2
