"""Razorpay webhooks applied in SQL: payment states, late and duplicate events, deferred refunds,
refund matching, reconciliation and its manual resolution, and the batch worker function."""

from __future__ import annotations

import contextlib
import json
import threading
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from fakes.razorpay_server import (
    payment_entity,
    razorpay_id,
    refund_entity,
    store_webhook,
    webhook_event,
)
from psycopg.rows import dict_row
from support import as_tenant, make_order, make_tenant

T0 = 1_735_700_000  # 2025-01-01 02:53:20 UTC, Razorpay's unix seconds


def at(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def deliver(conn, event: dict, tenant_id=None, event_id: str | None = None) -> str:
    webhook_id = store_webhook(conn, event, tenant_id, event_id)
    return conn.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,)).fetchone()[0]


def order_row(conn, order_id) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("select * from storeops.orders where id = %s", (order_id,)).fetchone()


def rows(conn, query: str, *params) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(query, params).fetchall()


@pytest.fixture
def shop(conn):
    """A tenant with one pending ₹500.00 order linked to a Razorpay order."""
    tenant_id = make_tenant(conn)
    rzp_order = razorpay_id("order")
    order_id = make_order(conn, tenant_id, amount=50_000, razorpay_order_id=rzp_order)
    return {"tenant_id": tenant_id, "order_id": order_id, "rzp_order": rzp_order}


def captured(shop, payment_id: str | None = None, amount: int = 50_000, ts: int = T0, **kw) -> dict:
    payment = payment_entity(payment_id, amount=amount, status="captured", order_id=shop["rzp_order"],
                             created_at=ts - 30, **kw)
    return webhook_event("payment.captured", payment=payment, created_at=ts)


def test_capture_marks_the_order_paid_and_reconciles(conn, shop):
    event = captured(shop)
    pay_id = event["payload"]["payment"]["entity"]["id"]
    assert deliver(conn, event) == "applied"

    order = order_row(conn, shop["order_id"])
    assert order["status"] == "paid"
    assert order["payment_status"] == "captured"
    assert order["razorpay_payment_id"] == pay_id
    assert order["amount_paid"] == 50_000
    assert order["paid_at"] == at(T0)
    [webhook] = rows(conn, "select * from storeops.payment_webhooks where payload #>> '{payload,payment,entity,id}' = %s",
                     pay_id)
    assert webhook["processed"] and webhook["processed_at"] is not None and webhook["outcome"] == "applied"
    assert webhook["tenant_id"] == shop["tenant_id"]  # resolved from the order when the intake could not
    [recon] = rows(conn, "select * from storeops.payment_reconciliation where razorpay_payment_id = %s", pay_id)
    assert (recon["status"], recon["reason"], recon["expected_amount"], recon["received_amount"], recon["difference"]) == (
        "matched", None, 50_000, 50_000, 0)
    assert recon["order_id"] == shop["order_id"] and recon["tenant_id"] == shop["tenant_id"]


def test_state_is_read_from_the_entity_not_the_event_name(conn, shop):
    # Razorpay's own mock: a payment.authorized whose snapshot is already captured.
    payment = payment_entity(amount=50_000, status="captured", order_id=shop["rzp_order"], created_at=T0)
    assert deliver(conn, webhook_event("payment.authorized", payment=payment, created_at=T0 + 5)) == "applied"
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"], order["amount_paid"]) == ("paid", "captured", 50_000)


def test_authorized_then_captured(conn, shop):
    pay_id = razorpay_id("pay")
    authorized = payment_entity(pay_id, status="authorized", order_id=shop["rzp_order"], created_at=T0)
    deliver(conn, webhook_event("payment.authorized", payment=authorized, created_at=T0 + 1))
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"], order["amount_paid"]) == ("pending", "authorized", 0)
    assert order["razorpay_payment_id"] == pay_id

    deliver(conn, captured(shop, pay_id, ts=T0 + 10))
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"], order["amount_paid"]) == ("paid", "captured", 50_000)


def test_a_duplicate_delivery_has_one_effect(conn, shop):
    event = captured(shop)
    event_id = razorpay_id("evt")
    first = store_webhook(conn, event, None, event_id)
    again = store_webhook(conn, event, None, event_id)  # same x-razorpay-event-id: the intake's insert is a no-op
    assert first is not None and again is None
    assert conn.execute("select storeops.apply_payment_webhook(%s)", (first,)).fetchone()[0] == "applied"
    assert conn.execute("select storeops.apply_payment_webhook(%s)", (first,)).fetchone()[0] == "duplicate"
    # The same facts under another event id (a replay, or the recovery sweep) change nothing either.
    assert deliver(conn, event) == "duplicate"
    before = order_row(conn, shop["order_id"])
    assert before["amount_paid"] == 50_000
    pay_id = event["payload"]["payment"]["entity"]["id"]
    assert conn.execute("select count(*) from storeops.razorpay_payments where razorpay_payment_id = %s",
                        (pay_id,)).fetchone()[0] == 1
    assert conn.execute("select count(*) from storeops.payment_reconciliation where razorpay_payment_id = %s",
                        (pay_id,)).fetchone()[0] == 1


def test_a_late_payment_failed_never_downgrades_a_paid_order(conn, shop):
    pay_id = razorpay_id("pay")
    deliver(conn, captured(shop, pay_id, ts=T0 + 10))
    failed = payment_entity(pay_id, status="failed", order_id=shop["rzp_order"], created_at=T0 - 20)
    assert deliver(conn, webhook_event("payment.failed", payment=failed, created_at=T0)) == "stale"
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"], order["amount_paid"]) == ("paid", "captured", 50_000)
    assert rows(conn, "select status from storeops.razorpay_payments where razorpay_payment_id = %s",
                pay_id) == [{"status": "captured"}]


def test_a_failed_attempt_never_fails_an_order_another_payment_paid(conn, shop):
    good = captured(shop, ts=T0 + 60)
    bad = payment_entity(status="failed", order_id=shop["rzp_order"], created_at=T0)
    for event in (good, webhook_event("payment.failed", payment=bad, created_at=T0 + 90)):
        assert deliver(conn, event) == "applied"
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"]) == ("paid", "captured")
    assert order["razorpay_payment_id"] == good["payload"]["payment"]["entity"]["id"]


def test_a_failed_payment_can_be_authorised_late(conn, shop):
    pay_id = razorpay_id("pay")
    failed = payment_entity(pay_id, status="failed", order_id=shop["rzp_order"], created_at=T0)
    deliver(conn, webhook_event("payment.failed", payment=failed, created_at=T0 + 600))
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"]) == ("pending", "failed")
    [payment] = rows(conn, "select * from storeops.razorpay_payments where razorpay_payment_id = %s", pay_id)
    assert (payment["error_code"], payment["error_description"]) == ("BAD_REQUEST_ERROR", "Payment failed")

    deliver(conn, captured(shop, pay_id, ts=T0 + 3600))  # late authorisation, then capture
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["payment_status"], order["amount_paid"]) == ("paid", "captured", 50_000)


def test_a_refund_before_its_payment_is_kept_and_applied_when_the_payment_arrives(conn, shop):
    pay_id = razorpay_id("pay")
    payment_snapshot = payment_entity(pay_id, status="captured", order_id=shop["rzp_order"], created_at=T0,
                                      amount_refunded=20_000, refund_status="partial")
    refund = refund_entity(payment_id=pay_id, amount=20_000, status="processed", created_at=T0 + 100)
    refund_event = webhook_event("refund.processed", refund=refund, payment=payment_snapshot, created_at=T0 + 100)
    assert deliver(conn, refund_event) == "deferred"

    [webhook] = rows(conn, "select * from storeops.payment_webhooks where event_id like 'evt_%%' "
                           "and webhook_type = 'refund.processed' and payload #>> '{payload,refund,entity,id}' = %s",
                     refund["id"])
    assert (webhook["processed"], webhook["outcome"], webhook["deferred_payment_id"]) == (False, "deferred", pay_id)
    assert rows(conn, "select * from storeops.refunds where razorpay_refund_id = %s", refund["id"]) == []
    # The batch worker does not pick it up again and again while it waits.
    assert conn.execute("select storeops.process_payment_webhooks()").fetchone()[0] == 0

    assert deliver(conn, captured(shop, pay_id, ts=T0 + 10)) == "applied"
    [row] = rows(conn, "select * from storeops.refunds where razorpay_refund_id = %s", refund["id"])
    assert (row["status"], row["amount"], row["source"], row["order_id"]) == ("processed", 20_000, "dashboard",
                                                                             shop["order_id"])
    order = order_row(conn, shop["order_id"])
    assert (order["refund_amount"], order["payment_status"], order["status"]) == (20_000, "partially_refunded", "paid")
    [webhook] = rows(conn, "select * from storeops.payment_webhooks where id = %s", webhook["id"])
    assert (webhook["processed"], webhook["outcome"], webhook["deferred_payment_id"]) == (True, "applied", None)


def test_dashboard_refunds_are_recorded_and_a_full_refund_marks_the_order_refunded(conn, shop):
    event = captured(shop)
    pay_id = event["payload"]["payment"]["entity"]["id"]
    deliver(conn, event)
    first = refund_entity(payment_id=pay_id, amount=10_000, status="processed", notes={"comment": "damaged box"})
    second = refund_entity(payment_id=pay_id, amount=40_000, status="pending")
    assert deliver(conn, webhook_event("refund.processed", refund=first)) == "applied"
    assert deliver(conn, webhook_event("refund.created", refund=second)) == "applied"
    order = order_row(conn, shop["order_id"])
    assert (order["refund_amount"], order["payment_status"]) == (10_000, "partially_refunded")

    second_done = dict(second, status="processed")
    assert deliver(conn, webhook_event("refund.processed", refund=second_done)) == "applied"
    order = order_row(conn, shop["order_id"])
    assert (order["refund_amount"], order["payment_status"], order["status"]) == (50_000, "refunded", "paid")
    refunds = rows(conn, "select amount, status, source, reason from storeops.refunds where order_id = %s order by amount",
                   shop["order_id"])
    assert refunds == [
        {"amount": 10_000, "status": "processed", "source": "dashboard", "reason": "damaged box"},
        {"amount": 40_000, "status": "processed", "source": "dashboard", "reason": None},
    ]


def _paid_order_with_pending_refund(conn, shop, amount=20_000, key=None):
    event = captured(shop)
    pay_id = event["payload"]["payment"]["entity"]["id"]
    deliver(conn, event)
    with conn.cursor(row_factory=dict_row) as cur:
        refund = cur.execute("select * from storeops.request_refund(%s, %s, %s, 'Customer requested', %s)",
                             (shop["tenant_id"], shop["order_id"], amount, key)).fetchone()
    return pay_id, refund


@pytest.mark.parametrize("match", ["razorpay_refund_id", "notes_idempotency_key"])
def test_a_refund_webhook_for_our_own_refund_updates_it_and_never_creates_a_second(conn, shop, match):
    pay_id, ours = _paid_order_with_pending_refund(conn, shop, key="rfnd-key-0001")
    rfnd_id = razorpay_id("rfnd")
    notes = None
    if match == "razorpay_refund_id":
        conn.execute("select storeops.record_refund_result(%s, %s, 'pending')", (ours["id"], rfnd_id))
    elif match == "notes_idempotency_key":
        notes = {"idempotency_key": "rfnd-key-0001", "storeops_refund_id": str(ours["id"])}
    refund = refund_entity(rfnd_id, payment_id=pay_id, amount=20_000, status="processed", notes=notes)
    assert deliver(conn, webhook_event("refund.processed", refund=refund)) == "applied"
    assert deliver(conn, webhook_event("refund.created", refund=dict(refund, status="pending"))) == "stale"

    refunds = rows(conn, "select * from storeops.refunds where order_id = %s", shop["order_id"])
    assert len(refunds) == 1
    assert (refunds[0]["id"], refunds[0]["razorpay_refund_id"], refunds[0]["status"], refunds[0]["source"]) == (
        ours["id"], rfnd_id, "processed", "api")
    assert order_row(conn, shop["order_id"])["refund_amount"] == 20_000


def test_a_dashboard_refund_of_the_same_amount_never_takes_over_our_pending_one(conn, shop):
    pay_id, ours = _paid_order_with_pending_refund(conn, shop, key="rfnd-key-0002")
    theirs = refund_entity(razorpay_id("rfnd"), payment_id=pay_id, amount=20_000, status="processed",
                           notes={"comment": "refunded from the dashboard"})
    assert deliver(conn, webhook_event("refund.processed", refund=theirs)) == "applied"
    refunds = {r["source"]: r for r in rows(conn, "select * from storeops.refunds where order_id = %s", shop["order_id"])}
    assert set(refunds) == {"api", "dashboard"}
    assert (refunds["api"]["id"], refunds["api"]["status"], refunds["api"]["razorpay_refund_id"]) == (ours["id"], "pending", None)
    assert (refunds["dashboard"]["razorpay_refund_id"], refunds["dashboard"]["status"]) == (theirs["id"], "processed")
    assert order_row(conn, shop["order_id"])["refund_amount"] == 20_000


def test_a_failed_refund_does_not_count(conn, shop):
    pay_id, ours = _paid_order_with_pending_refund(conn, shop, key="rfnd-key-0003")
    refund = refund_entity(payment_id=pay_id, amount=20_000, status="failed",
                           notes={"idempotency_key": "rfnd-key-0003", "storeops_refund_id": str(ours["id"])})
    assert deliver(conn, webhook_event("refund.failed", refund=refund)) == "applied"
    [row] = rows(conn, "select * from storeops.refunds where order_id = %s", shop["order_id"])
    assert (row["id"], row["status"]) == (ours["id"], "failed")
    assert row["error"]
    order = order_row(conn, shop["order_id"])
    assert (order["refund_amount"], order["payment_status"]) == (0, "captured")


def test_other_events_are_stored_and_marked_processed_as_ignored(conn, shop):
    event = {"entity": "event", "account_id": "acc_BFQ7uQEaa7j2z7", "event": "payment.dispute.created",
             "contains": ["dispute"], "payload": {"dispute": {"entity": {"id": "disp_XXXXXXXXXXXXXX"}}},
             "created_at": T0}
    assert deliver(conn, event) == "ignored"
    [row] = rows(conn, "select processed, outcome from storeops.payment_webhooks where webhook_type = 'payment.dispute.created'")
    assert row == {"processed": True, "outcome": "ignored"}


def test_a_payment_for_an_unknown_order_becomes_a_reconciliation_row_not_an_error(conn):
    payment = payment_entity(amount=12_300, status="captured", order_id=razorpay_id("order"), created_at=T0)
    assert deliver(conn, webhook_event("payment.captured", payment=payment, created_at=T0)) == "unknown_order"
    [recon] = rows(conn, "select * from storeops.payment_reconciliation where razorpay_payment_id = %s", payment["id"])
    assert (recon["status"], recon["reason"], recon["tenant_id"], recon["order_id"]) == (
        "mismatch", "unknown_order", None, None)
    assert (recon["received_amount"], recon["expected_amount"], recon["difference"]) == (12_300, None, 12_300)
    [webhook] = rows(conn, "select processed, error, attempts from storeops.payment_webhooks "
                           "where payload #>> '{payload,payment,entity,id}' = %s", payment["id"])
    assert webhook == {"processed": True, "error": None, "attempts": 0}
    # Delivered again: still one row, still no error.
    assert deliver(conn, webhook_event("payment.captured", payment=payment, created_at=T0)) == "unknown_order"
    assert len(rows(conn, "select 1 from storeops.payment_reconciliation where razorpay_payment_id = %s",
                    payment["id"])) == 1


def test_a_webhook_of_one_tenant_cannot_touch_another_tenants_order(conn, shop):
    intruder = make_tenant(conn, "Other Store")
    event = captured(shop)
    assert deliver(conn, event, tenant_id=intruder) == "unknown_order"
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["amount_paid"]) == ("pending", 0)
    [recon] = rows(conn, "select tenant_id, reason from storeops.payment_reconciliation where razorpay_payment_id = %s",
                   event["payload"]["payment"]["entity"]["id"])
    assert recon == {"tenant_id": intruder, "reason": "unknown_order"}


def test_a_payment_that_came_before_its_order_is_applied_when_the_order_appears(conn):
    tenant_id = make_tenant(conn)
    rzp_order = razorpay_id("order")
    payment = payment_entity(amount=50_000, status="captured", order_id=rzp_order, created_at=T0)
    # On the tenant's webhook URL, before the storefront's order row exists.
    assert deliver(conn, webhook_event("payment.captured", payment=payment, created_at=T0), tenant_id=tenant_id) == (
        "unknown_order")
    refund = refund_entity(payment_id=payment["id"], amount=10_000, status="processed", created_at=T0 + 60)
    assert deliver(conn, webhook_event("refund.processed", refund=refund, created_at=T0 + 60), tenant_id=tenant_id) == (
        "deferred")

    order_id = make_order(conn, tenant_id, amount=50_000, razorpay_order_id=rzp_order)

    order = order_row(conn, order_id)
    assert (order["status"], order["payment_status"], order["amount_paid"], order["razorpay_payment_id"]) == (
        "paid", "partially_refunded", 50_000, payment["id"])
    assert order["refund_amount"] == 10_000  # the refund that waited for the payment's order, applied with it
    [recon] = rows(conn, "select * from storeops.payment_reconciliation where razorpay_payment_id = %s", payment["id"])
    assert (recon["status"], recon["reason"], recon["order_id"], recon["tenant_id"]) == (
        "matched", None, order_id, tenant_id)
    [linked] = rows(conn, "select tenant_id, order_id from storeops.razorpay_payments where razorpay_payment_id = %s",
                    payment["id"])
    assert linked == {"tenant_id": tenant_id, "order_id": order_id}
    [applied] = rows(conn, "select processed, outcome, deferred_payment_id from storeops.payment_webhooks "
                           "where webhook_type = 'refund.processed' and payload #>> '{payload,refund,entity,id}' = %s",
                     refund["id"])
    assert applied == {"processed": True, "outcome": "applied", "deferred_payment_id": None}
    [row] = rows(conn, "select status, amount, order_id from storeops.refunds where razorpay_refund_id = %s", refund["id"])
    assert row == {"status": "processed", "amount": 10_000, "order_id": order_id}


def test_an_order_that_appears_later_takes_no_payment_of_another_tenant_or_of_none(conn):
    payer, other = make_tenant(conn, "Payer"), make_tenant(conn, "Other")
    rzp_order, unclaimed_order = razorpay_id("order"), razorpay_id("order")
    payment = payment_entity(amount=20_000, status="captured", order_id=rzp_order, created_at=T0)
    assert deliver(conn, webhook_event("payment.captured", payment=payment, created_at=T0), tenant_id=payer) == (
        "unknown_order")
    # On the platform's URL with no order to find the tenant by: nobody's yet.
    unclaimed = payment_entity(amount=20_000, status="captured", order_id=unclaimed_order, created_at=T0)
    assert deliver(conn, webhook_event("payment.captured", payment=unclaimed, created_at=T0)) == "unknown_order"

    # A tenant writing someone else's Razorpay order id on its order gets neither payment.
    for rzp, pay in ((rzp_order, payment), (unclaimed_order, unclaimed)):
        order_id = make_order(conn, other, amount=20_000, razorpay_order_id=rzp)
        assert (order_row(conn, order_id)["status"], order_row(conn, order_id)["amount_paid"]) == ("pending", 0)
        [kept] = rows(conn, "select order_id from storeops.razorpay_payments where razorpay_payment_id = %s", pay["id"])
        assert kept == {"order_id": None}
        [recon] = rows(conn, "select reason from storeops.payment_reconciliation where razorpay_payment_id = %s",
                       pay["id"])
        assert recon == {"reason": "unknown_order"}
    assert conn.execute("select storeops.link_unlinked_payments()").fetchone()[0] == 0


def test_the_hourly_sweep_links_a_payment_whose_order_was_being_inserted_meanwhile(conn):
    tenant_id = make_tenant(conn)
    rzp_order = razorpay_id("order")
    order_id = make_order(conn, tenant_id, amount=40_000, razorpay_order_id=rzp_order)
    # What the race leaves: the webhook's transaction could not see the order (not yet committed),
    # and the order's trigger could not see the payment (not yet committed either).
    conn.execute("""insert into storeops.razorpay_payments
                      (tenant_id, razorpay_payment_id, razorpay_order_id, amount, currency, status, captured_at)
                    values (%s, %s, %s, 40000, 'INR', 'captured', %s)""",
                 (tenant_id, razorpay_id("pay"), rzp_order, at(T0)))
    assert order_row(conn, order_id)["status"] == "pending"
    assert conn.execute("select storeops.link_unlinked_payments()").fetchone()[0] == 1
    order = order_row(conn, order_id)
    assert (order["status"], order["amount_paid"]) == ("paid", 40_000)
    assert conn.execute("select storeops.link_unlinked_payments()").fetchone()[0] == 0


def test_an_order_that_cannot_take_its_payments_keeps_no_other_from_being_linked(conn):
    tenant_id = make_tenant(conn)
    orders = {}
    for name in ("stuck", "fine"):
        rzp_order = razorpay_id("order")
        orders[name] = make_order(conn, tenant_id, amount=40_000, razorpay_order_id=rzp_order)
        conn.execute("""insert into storeops.razorpay_payments
                          (tenant_id, razorpay_payment_id, razorpay_order_id, amount, currency, status, captured_at)
                        values (%s, %s, %s, 40000, 'INR', 'captured', %s)""",
                     (tenant_id, razorpay_id("pay"), rzp_order, at(T0)))
    # Linking the first fails (as a refund rule or a lock timeout would make it); rolled back with the test.
    conn.execute("""create function pg_temp.refuse_stuck() returns trigger language plpgsql as $$
                    begin raise exception 'refused for the test'; end $$""")
    conn.execute(f"""create trigger refuse_stuck before update on storeops.razorpay_payments for each row
                     when (new.order_id = '{orders["stuck"]}') execute function pg_temp.refuse_stuck()""")
    warnings = []
    conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary))
    assert conn.execute("select storeops.link_unlinked_payments()").fetchone()[0] == 1
    assert (order_row(conn, orders["fine"])["status"], order_row(conn, orders["stuck"])["status"]) == ("paid", "pending")
    assert any(str(orders["stuck"]) in w and "refused for the test" in w for w in warnings), warnings
    # Its payment is still waiting, and the next sweep (the cause gone) links it.
    conn.execute("drop trigger refuse_stuck on storeops.razorpay_payments")
    assert conn.execute("select storeops.link_unlinked_payments()").fetchone()[0] == 1
    assert order_row(conn, orders["stuck"])["status"] == "paid"


def test_a_tenant_giving_its_own_order_the_razorpay_order_later_gets_the_payment_through_rls(conn):
    tenant_id = make_tenant(conn)
    order_id = make_order(conn, tenant_id, amount=30_000)  # no Razorpay order yet
    rzp_order = razorpay_id("order")
    payment = payment_entity(amount=30_000, status="captured", order_id=rzp_order, created_at=T0)
    assert deliver(conn, webhook_event("payment.captured", payment=payment, created_at=T0), tenant_id=tenant_id) == (
        "unknown_order")
    as_tenant(conn, tenant_id)
    conn.execute("update storeops.orders set razorpay_order_id = %s where id = %s", (rzp_order, order_id))
    conn.execute("reset role")
    order = order_row(conn, order_id)
    assert (order["status"], order["amount_paid"], order["razorpay_payment_id"]) == ("paid", 30_000, payment["id"])


@pytest.mark.parametrize(("amount", "currency", "reason", "difference"), [
    (50_000, "INR", None, 0),
    (49_900, "INR", "under", -100),
    (50_100, "INR", "over", 100),
    (50_000, "USD", "currency", 0),
])
def test_reconciliation_compares_amount_and_currency(conn, shop, amount, currency, reason, difference):
    event = captured(shop, amount=amount, currency=currency)
    deliver(conn, event)
    [recon] = rows(conn, "select * from storeops.payment_reconciliation where order_id = %s", shop["order_id"])
    assert recon["status"] == ("matched" if reason is None else "mismatch")
    assert (recon["reason"], recon["difference"], recon["expected_amount"], recon["received_amount"]) == (
        reason, difference, 50_000, amount)
    assert (recon["currency"], recon["expected_currency"]) == (currency, "INR")


def test_a_second_capture_is_a_duplicate_capture_whichever_arrives_first(conn, shop):
    first = captured(shop, ts=T0)           # created first at Razorpay
    second = captured(shop, ts=T0 + 300)    # the customer paid again
    deliver(conn, second)
    deliver(conn, first)
    recon = rows(conn, "select razorpay_payment_id, status, reason, expected_amount, difference "
                       "from storeops.payment_reconciliation where order_id = %s order by created_at, razorpay_payment_id",
                 shop["order_id"])
    by_payment = {r["razorpay_payment_id"]: r for r in recon}
    first_id = first["payload"]["payment"]["entity"]["id"]
    second_id = second["payload"]["payment"]["entity"]["id"]
    assert (by_payment[first_id]["status"], by_payment[first_id]["reason"]) == ("matched", None)
    assert (by_payment[second_id]["status"], by_payment[second_id]["reason"]) == ("mismatch", "duplicate_capture")
    assert (by_payment[second_id]["expected_amount"], by_payment[second_id]["difference"]) == (0, 50_000)
    order = order_row(conn, shop["order_id"])
    assert (order["razorpay_payment_id"], order["amount_paid"]) == (first_id, 100_000)


def test_the_seed_resolve_update_works_and_records_who_and_when(conn, shop):
    deliver(conn, captured(shop, amount=49_000))
    recon_id = conn.execute("select id from payment_reconciliation where order_id = %s", (shop["order_id"],)).fetchone()[0]
    user = uuid.uuid4()
    # The seed guide's statement, verbatim but for the placeholders.
    conn.execute(f"""
        UPDATE payment_reconciliation
        SET status = 'resolved',
            notes = 'Resolved manually',
            reconciled_at = NOW(),
            reconciled_by = '{user}'
        WHERE id = '{recon_id}'
    """)
    [row] = rows(conn, "select * from storeops.payment_reconciliation where id = %s", recon_id)
    assert (row["status"], row["notes"], row["reconciled_by"]) == ("resolved", "Resolved manually", user)
    assert row["reconciled_at"] == conn.execute("select now()").fetchone()[0]
    assert row["reconciled_by_role"] == "postgres"


def test_resolving_without_who_and_when_fills_them_from_the_jwt(conn, shop):
    deliver(conn, captured(shop, amount=60_000))
    recon_id = conn.execute("select id from payment_reconciliation where order_id = %s", (shop["order_id"],)).fetchone()[0]
    user = uuid.uuid4()
    conn.execute("set local role storeops_tenant")
    conn.execute("select set_config('request.jwt.claims', %s, true)",
                 (json.dumps({"sub": str(user), "tenant_id": str(shop["tenant_id"])}),))
    conn.execute("update payment_reconciliation set status = 'resolved', notes = 'refunded the extra' where id = %s",
                 (recon_id,))
    conn.execute("reset role")
    [row] = rows(conn, "select * from storeops.payment_reconciliation where id = %s", recon_id)
    assert (row["status"], row["reconciled_by"], row["reconciled_by_role"]) == ("resolved", user, "storeops_tenant")
    assert row["reconciled_at"] is not None


def test_a_resolved_row_is_not_reopened_by_later_events(conn, shop):
    first = captured(shop, ts=T0 + 300)
    deliver(conn, first)
    conn.execute("update payment_reconciliation set status = 'resolved', notes = 'checked' where order_id = %s",
                 (shop["order_id"],))
    deliver(conn, captured(shop, ts=T0))  # an earlier-created capture turns the first into the duplicate
    by_payment = {r["razorpay_payment_id"]: r["status"] for r in rows(
        conn, "select razorpay_payment_id, status from storeops.payment_reconciliation where order_id = %s",
        shop["order_id"])}
    assert by_payment[first["payload"]["payment"]["entity"]["id"]] == "resolved"


def test_get_tenant_for_razorpay_order(conn, shop):
    assert conn.execute("select storeops.get_tenant_for_razorpay_order(%s)", (shop["rzp_order"],)).fetchone()[0] == shop["tenant_id"]
    assert conn.execute("select storeops.get_tenant_for_razorpay_order('order_unknown000000')").fetchone()[0] is None


def test_process_payment_webhooks_applies_a_batch_and_queues_a_retry_for_a_bad_event(conn, shop):
    good = captured(shop)
    bad = webhook_event("payment.captured", payment={"entity": "payment", "status": "captured"})  # no id
    refund = refund_entity(payment_id=good["payload"]["payment"]["entity"]["id"], amount=5_000)
    good_id = store_webhook(conn, good, shop["tenant_id"])
    bad_id = store_webhook(conn, bad, shop["tenant_id"])
    refund_id = store_webhook(conn, webhook_event("refund.processed", refund=refund), shop["tenant_id"])

    assert conn.execute("select storeops.process_payment_webhooks(500)").fetchone()[0] == 3
    assert conn.execute("select storeops.process_payment_webhooks(500)").fetchone()[0] == 0

    state = {r["id"]: r for r in rows(conn, "select id, processed, outcome, attempts, error from storeops.payment_webhooks "
                                            "where id = any(%s)", [good_id, bad_id, refund_id])}
    assert (state[good_id]["processed"], state[good_id]["outcome"]) == (True, "applied")
    assert (state[refund_id]["processed"], state[refund_id]["outcome"]) == (True, "applied")
    assert (state[bad_id]["processed"], state[bad_id]["attempts"]) == (False, 1)
    assert "payload.payment.entity.id is missing" in state[bad_id]["error"]
    [retry] = rows(conn, "select * from storeops.operation_retry_queue where operation_id = %s", bad_id)
    assert (retry["operation_type"], retry["status"], retry["attempts"], retry["payload"]) == (
        "payment_webhook", "pending", 1, {"webhook_id": str(bad_id)})
    assert order_row(conn, shop["order_id"])["refund_amount"] == 5_000


def test_concurrent_workers_never_process_a_webhook_twice(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant_id = make_tenant(c)
        shops = []
        for _ in range(40):
            rzp_order = razorpay_id("order")
            shops.append({"rzp_order": rzp_order, "order_id": make_order(c, tenant_id, razorpay_order_id=rzp_order)})
        total = 0
        for n in range(1200):
            shop = shops[n % len(shops)]
            pay_id = razorpay_id("pay")
            status = ("authorized", "captured", "failed")[n % 3]
            payment = payment_entity(pay_id, status=status, order_id=shop["rzp_order"], created_at=T0 + n)
            store_webhook(c, webhook_event(f"payment.{status}", payment=payment, created_at=T0 + n), tenant_id)
            total += 1

    handled: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        try:
            with psycopg.connect(fresh_db, autocommit=True) as c:
                barrier.wait()
                while True:
                    n = c.execute("select storeops.process_payment_webhooks(50)").fetchone()[0]
                    if n == 0:
                        return
                    handled.append(n)
        except BaseException as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sum(handled) == total  # every row handled exactly once across the four workers
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select count(*) from storeops.payment_webhooks where not processed or error is not null").fetchone()[0] == 0
        assert c.execute("select count(*) from storeops.orders where status = 'paid'").fetchone()[0] == 40


def test_an_event_that_breaks_an_order_rule_fails_alone_and_the_rest_of_its_batch_applies(conn, shop):
    other = {"rzp_order": razorpay_id("order")}
    other["order_id"] = make_order(conn, shop["tenant_id"], amount=20_000, razorpay_order_id=other["rzp_order"])
    event = captured(shop)
    pay_id = event["payload"]["payment"]["entity"]["id"]
    store_webhook(conn, event, shop["tenant_id"])
    # Razorpay claims more was refunded than was ever paid: the order's check constraint refuses it.
    impossible = store_webhook(conn, webhook_event("refund.processed", refund=refund_entity(
        payment_id=pay_id, amount=90_000, status="processed")), shop["tenant_id"])
    fine = store_webhook(conn, captured(other, amount=20_000), shop["tenant_id"])

    assert conn.execute("select storeops.process_payment_webhooks(500)").fetchone()[0] == 3
    assert order_row(conn, shop["order_id"])["status"] == "paid"
    assert order_row(conn, other["order_id"])["status"] == "paid"
    [bad] = rows(conn, "select processed, attempts, error from storeops.payment_webhooks where id = %s", impossible)
    assert (bad["processed"], bad["attempts"]) == (False, 1)
    assert "orders_refund_amount_within_paid" in bad["error"]
    assert rows(conn, "select processed from storeops.payment_webhooks where id = %s", fine) == [{"processed": True}]
    assert rows(conn, "select 1 from storeops.refunds where order_id = %s", shop["order_id"]) == []


def test_the_runner_role_can_apply_webhooks_and_a_tenant_cannot(conn, shop):
    store_webhook(conn, captured(shop), shop["tenant_id"])
    conn.execute("savepoint roles")
    conn.execute("set local role storeops_tenant")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select storeops.process_payment_webhooks(500)")
    conn.execute("rollback to savepoint roles")
    conn.execute("set local role storeops_runner")
    assert conn.execute("select storeops.process_payment_webhooks(500)").fetchone()[0] == 1
    conn.execute("reset role")
    assert order_row(conn, shop["order_id"])["status"] == "paid"


def test_a_mismatch_is_announced_on_storeops_alert(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as listener, psycopg.connect(fresh_db, autocommit=True) as c:
        listener.execute("listen storeops_alert")
        tenant_id = make_tenant(c)
        short, exact = {"rzp_order": razorpay_id("order")}, {"rzp_order": razorpay_id("order")}
        for shop in (short, exact):
            shop["order_id"] = make_order(c, tenant_id, amount=50_000, razorpay_order_id=shop["rzp_order"])
        store_webhook(c, captured(short, amount=45_000), tenant_id)
        store_webhook(c, captured(exact), tenant_id)  # a matched one says nothing
        assert c.execute("select storeops.process_payment_webhooks()").fetchone()[0] == 2
        payloads = [n.payload for n in listener.notifies(timeout=1)]
    mismatches = []
    for payload in payloads:  # other writers may share the channel with other payload shapes
        with contextlib.suppress(ValueError):
            alert = json.loads(payload)
            if isinstance(alert, dict) and alert.get("kind") == "reconciliation_mismatch":
                mismatches.append(alert)
    assert len(mismatches) == 1
    assert (mismatches[0]["reason"], mismatches[0]["difference"]) == ("under", -5_000)
    assert mismatches[0]["id"] and mismatches[0]["tenant_id"] == str(tenant_id)
    assert mismatches[0]["order_id"] == str(short["order_id"])


def test_a_tenants_webhook_cannot_move_another_tenants_payment(conn, shop):
    """Tenant A signs (with its own secret) a capture of tenant B's payment id: B's order stays unpaid."""
    other_tenant = make_tenant(conn, "Tenant A")
    failed = payment_entity(amount=50_000, status="failed", order_id=shop["rzp_order"], created_at=T0)
    assert deliver(conn, webhook_event("payment.failed", payment=failed), shop["tenant_id"]) == "applied"
    forged = dict(failed, status="captured", captured=True, error_code=None, error_description=None)
    conn.execute("savepoint forged")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="another tenant"):
        deliver(conn, webhook_event("payment.captured", payment=forged), other_tenant)
    conn.execute("rollback to savepoint forged")
    order = order_row(conn, shop["order_id"])
    assert (order["status"], order["amount_paid"]) == ("pending", 0)
