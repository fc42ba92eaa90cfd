"""Cancelled orders that still hold the customer's money (migration 0054): storeops.refunds_owed lists
them, a refund_owed alert is raised once when it happens, and a tenant sees only its own."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
from _shipping_helpers import apply_event, make_shipment, order_status
from fakes.razorpay_server import payment_entity, razorpay_id, store_webhook, webhook_event
from fakes.shiprocket_server import webhook_payload
from psycopg.rows import dict_row
from support import as_tenant, make_order, make_tenant, roll_back_to_before

T0 = datetime(2024, 3, 10, 6, 0, tzinfo=UTC)


def _pay(conn, tenant_id, rzp_order, amount=50_000) -> str:
    payment = payment_entity(amount=amount, status="captured", order_id=rzp_order)
    webhook_id = store_webhook(conn, webhook_event("payment.captured", payment=payment), tenant_id)
    assert conn.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,)).fetchone()[0] == "applied"
    return payment["id"]


def _order(conn, tenant_id, amount=50_000, paid=True) -> tuple:
    rzp_order = razorpay_id("order")
    order_id = make_order(conn, tenant_id, amount=amount, razorpay_order_id=rzp_order)
    pay_id = _pay(conn, tenant_id, rzp_order, amount) if paid else None
    return order_id, rzp_order, pay_id


def _refund(conn, tenant_id, order_id, amount, reason="RTO", key=None):
    """A refund requested (pending), as create-refund records it before Razorpay is asked; its id."""
    return conn.execute("select id from storeops.request_refund(%s, %s, %s, %s, %s)",
                        (tenant_id, order_id, amount, reason, key)).fetchone()[0]


def _settle(conn, refund_id, status, rfnd_id=None, error=None) -> None:
    conn.execute("select storeops.record_refund_result(%s, %s, %s, %s)", (refund_id, rfnd_id, status, error))


def owed(conn) -> dict:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute("select * from storeops.refunds_owed").fetchall()
    return {r["order_id"]: r for r in rows}


def alerts(conn) -> list[dict]:
    return [r[0] for r in conn.execute(
        "select details from storeops.alerts where kind = 'refund_owed' order by created_at, id").fetchall()]


def test_a_paid_order_returned_to_origin_owes_its_refund_until_it_is_refunded(conn):
    tenant = make_tenant(conn)
    order, rzp_order, pay_id = _order(conn, tenant)
    make_shipment(conn, tenant, order, awb="AWB-OWED-1")
    apply_event(conn, tenant, webhook_payload("AWB-OWED-1", 6, T0))  # shipped: nothing owed
    assert owed(conn) == {} and alerts(conn) == []
    apply_event(conn, tenant, webhook_payload("AWB-OWED-1", 9, T0 + timedelta(days=2)))  # RTO initiated
    assert order_status(conn, order) == "cancelled"

    row = owed(conn)[order]
    assert (row["tenant_id"], row["amount_paid"], row["refunded"], row["refund_pending"], row["owed"]) == (
        tenant, 50_000, 0, 0, 50_000)
    assert (row["currency"], row["razorpay_order_id"], row["auto_refund"], row["auto_refund_id"]) == (
        "INR", rzp_order, False, None)
    [alert] = alerts(conn)
    assert alert["order_id"] == str(order) and alert["owed"] == 50_000 and alert["amount_paid"] == 50_000
    assert alert["why"] == "cancelled after its payment was captured" and alert["auto_refund"] is False

    # A refund being made counts: only the rest is owed. Later events raise nothing more.
    refund = _refund(conn, tenant, order, 20_000)
    assert owed(conn)[order]["refund_pending"] == 20_000 and owed(conn)[order]["owed"] == 30_000
    apply_event(conn, tenant, webhook_payload("AWB-OWED-1", 10, T0 + timedelta(days=5)))  # RTO delivered
    _settle(conn, refund, "processed", "rfnd_OwedTest00001")
    assert owed(conn)[order]["refunded"] == 20_000 and owed(conn)[order]["owed"] == 30_000
    _refund(conn, tenant, order, 30_000, "RTO, the rest")
    assert owed(conn) == {}
    assert len(alerts(conn)) == 1


def test_a_failed_refund_leaves_the_money_owed(conn):
    tenant = make_tenant(conn)
    order, _, _ = _order(conn, tenant)
    refund = _refund(conn, tenant, order, 50_000, "cancelled")
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    assert owed(conn) == {} and alerts(conn) == []  # the whole amount is on its way back
    _settle(conn, refund, "failed", error="Razorpay refused it")
    assert owed(conn)[order]["owed"] == 50_000


def test_money_captured_after_the_order_was_cancelled_is_owed(conn):
    tenant = make_tenant(conn)
    order, rzp_order, _ = _order(conn, tenant, paid=False)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    assert owed(conn) == {} and alerts(conn) == []  # nothing paid, nothing owed (as a COD order's RTO)
    _pay(conn, tenant, rzp_order)  # the customer's payment is captured late
    assert order_status(conn, order) == "cancelled"  # a capture never revives a cancelled order
    assert owed(conn)[order]["owed"] == 50_000
    [alert] = alerts(conn)
    assert alert["why"] == "captured after the order was cancelled" and alert["owed"] == 50_000


def test_unpaid_and_not_cancelled_orders_owe_nothing(conn):
    tenant = make_tenant(conn)
    delivered, _, _ = _order(conn, tenant)
    conn.execute("update storeops.orders set status = 'delivered' where id = %s", (delivered,))
    cod, _, _ = _order(conn, tenant, paid=False)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (cod,))
    assert owed(conn) == {} and alerts(conn) == []


def test_a_tenant_sees_only_its_own_refunds_owed(conn):
    mine, theirs = make_tenant(conn, "Mine"), make_tenant(conn, "Theirs")
    conn.execute("update storeops.tenants set auto_refund_cancelled_since = now() - interval '1 day' where id = %s", (mine,))
    my_order, _, _ = _order(conn, mine)
    their_order, _, _ = _order(conn, theirs)
    conn.execute("update storeops.orders set status = 'cancelled' where id in (%s, %s)", (my_order, their_order))
    assert set(owed(conn)) == {my_order, their_order}
    assert owed(conn)[my_order]["auto_refund"] is True and owed(conn)[their_order]["auto_refund"] is False
    told = {a["order_id"]: a["auto_refund"] for a in alerts(conn)}
    assert told == {str(my_order): True, str(their_order): False}
    as_tenant(conn, mine)
    assert set(owed(conn)) == {my_order}


def test_the_automatic_refund_key_is_one_per_order_and_one_razorpay_accepts(conn):
    tenant = make_tenant(conn)
    order, _, _ = _order(conn, tenant)
    key = conn.execute("select storeops.cancelled_order_refund_key(%s)", (order,)).fetchone()[0]
    assert key == f"cancelled-{order}"
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    first = _refund(conn, tenant, order, 50_000, "auto", key)
    again = _refund(conn, tenant, order, 50_000, "auto", key)
    assert first == again
    _settle(conn, first, "failed", error="refused")
    row = owed(conn)[order]
    assert (row["owed"], row["auto_refund_id"], row["auto_refund_status"]) == (50_000, first, "failed")


def test_a_tenant_cancelling_its_own_paid_order_is_told_its_refund_is_owed(conn):
    tenant = make_tenant(conn)
    order, _, _ = _order(conn, tenant)
    as_tenant(conn, tenant)  # the tenant's own session, through RLS (as the admin panel's PostgREST)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    assert owed(conn)[order]["owed"] == 50_000
    conn.execute("reset role")
    [alert] = alerts(conn)
    assert alert["order_id"] == str(order)


def test_the_automatic_refund_key_of_an_order_cannot_be_taken_by_another_refund(conn):
    victim, squatter = make_tenant(conn, "Victim"), make_tenant(conn, "Squatter")
    victim_order, _, _ = _order(conn, victim)
    squatter_order, _, _ = _order(conn, squatter)
    key = conn.execute("select storeops.cancelled_order_refund_key(%s)", (victim_order,)).fetchone()[0]
    conn.execute("savepoint taken")
    try:
        _refund(conn, squatter, squatter_order, 1000, "mine", key)
        raise AssertionError("another order's reserved key was accepted")
    except psycopg.Error as exc:
        assert exc.sqlstate == "SO400" and "reserved" in exc.diag.message_primary
        conn.execute("rollback to savepoint taken")
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (victim_order,))
    row = owed(conn)[victim_order]
    assert (row["owed"], row["auto_refund_id"]) == (50_000, None)


def test_a_pending_refund_that_fails_is_owed_again_though_razorpay_counted_it(conn):
    tenant = make_tenant(conn)
    order, _, pay_id = _order(conn, tenant)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    refund = _refund(conn, tenant, order, 50_000)
    # Razorpay's payment counts a refund as soon as it is made, pending or not; recovery stores that.
    conn.execute("update storeops.razorpay_payments set status = 'refunded', amount_refunded = amount "
                 "where razorpay_payment_id = %s", (pay_id,))
    assert owed(conn) == {}
    assert conn.execute("select storeops.prune_cancelled_paid_orders()").fetchone()[0] == 0  # still pending
    _settle(conn, refund, "failed", error="Razorpay refused it")
    assert owed(conn)[order]["owed"] == 50_000


def test_an_order_written_already_cancelled_and_paid_is_owed(conn):
    tenant = make_tenant(conn)
    order = conn.execute("""insert into storeops.orders (tenant_id, amount, amount_paid, payment_status, status)
                            values (%s, 7000, 7000, 'captured', 'cancelled') returning id""", (tenant,)).fetchone()[0]
    assert owed(conn)[order]["owed"] == 7_000
    [alert] = alerts(conn)
    assert alert["order_id"] == str(order) and alert["why"] == "cancelled after its payment was captured"


def test_cancelling_again_raises_no_second_alert_for_the_same_money(conn):
    tenant = make_tenant(conn)
    order, rzp_order, _ = _order(conn, tenant)
    for _ in range(3):  # a tenant (or a person) cancelling and un-cancelling its order
        conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
        conn.execute("update storeops.orders set status = 'paid' where id = %s", (order,))
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    assert [a["owed"] for a in alerts(conn)] == [50_000]
    # More money captured on it later (a second capture) is told.
    conn.execute("update storeops.orders set amount_paid = 80000 where id = %s", (order,))
    assert sorted(a["owed"] for a in alerts(conn)) == [50_000, 80_000]  # (one transaction: one created_at)


def test_settled_orders_are_forgotten_and_pending_ones_kept(conn):
    tenant = make_tenant(conn)
    settled, _, _ = _order(conn, tenant)
    pending, _, _ = _order(conn, tenant)
    conn.execute("update storeops.orders set status = 'cancelled' where id in (%s, %s)", (settled, pending))
    _settle(conn, _refund(conn, tenant, settled, 50_000), "processed", "rfnd_OwedTest00002")
    _refund(conn, tenant, pending, 50_000)
    assert conn.execute("select storeops.prune_cancelled_paid_orders()").fetchone()[0] == 1
    noted = {r[0] for r in conn.execute("select order_id from storeops.cancelled_paid_orders").fetchall()}
    assert noted == {pending}  # its refund may yet fail, and then it is owed again


def test_a_failed_automatic_refund_waits_longer_each_time(conn):
    tenant = make_tenant(conn)
    order, _, _ = _order(conn, tenant)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waits = []
    for _ in range(7):
        row = conn.execute("select auto_attempts, auto_retry_at from storeops.record_auto_refund_failure(%s, 'no key', %s)",
                           (order, now)).fetchone()
        waits.append((row[0], (row[1] - now) / timedelta(hours=1)))
    assert waits == [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 24), (7, 24)]
    assert owed(conn)[order]["auto_error"] == "no key"


def test_nothing_the_apply_path_changes_is_indexed_on_orders(conn):
    """Every payment and tracking event updates orders; an index on a column they change (or in an
    index's predicate) would make each of those updates write every index of orders (no HOT)."""
    changing = ("status", "payment_status", "amount_paid", "refund_amount", "paid_at", "updated_at")
    defs = [r[0] for r in conn.execute(
        "select pg_get_indexdef(indexrelid) from pg_index where indrelid = 'storeops.orders'::regclass").fetchall()]
    assert defs and not [d for d in defs if any(f"({c}" in d or f" {c}" in d for c in changing)], defs


def test_orders_cancelled_with_money_before_the_migration_are_listed(fresh_db):
    from runner import migrate

    roll_back_to_before(fresh_db, "0054_cancelled_orders_owe_refunds")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = make_tenant(c)
        before, _, _ = _order(c, tenant)
        settled, _, _ = _order(c, tenant)
        c.execute("update storeops.orders set status = 'cancelled' where id in (%s, %s)", (before, settled))
        _settle(c, _refund(c, tenant, settled, 50_000), "processed", "rfnd_Before0054001")
    migrate.apply(fresh_db)
    with psycopg.connect(fresh_db) as c:
        assert {k: v["owed"] for k, v in owed(c).items()} == {before: 50_000}
        [summary] = alerts(c)  # one for all of them, not one each
        assert summary["orders"] == 1 and "refunds_owed" in summary["list"]


def test_pruning_skips_an_order_being_changed_and_keeps_it_if_it_owes_again(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = make_tenant(c)
        order, _, _ = _order(c, tenant)
        c.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
        _settle(c, _refund(c, tenant, order, 50_000), "processed", "rfnd_PruneRace0001")
    with psycopg.connect(fresh_db) as capture, psycopg.connect(fresh_db, autocommit=True) as job:
        # A second capture is being applied (its transaction holds the order) while the job prunes.
        capture.execute("update storeops.orders set amount_paid = 70000 where id = %s", (order,))
        assert job.execute("select storeops.prune_cancelled_paid_orders()").fetchone()[0] == 0
        capture.commit()
        assert job.execute("select storeops.prune_cancelled_paid_orders()").fetchone()[0] == 0
        assert owed(job)[order]["owed"] == 20_000


def test_more_captured_while_a_refund_is_pending_is_alerted(conn):
    tenant = make_tenant(conn)
    order, _, _ = _order(conn, tenant)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    _refund(conn, tenant, order, 50_000)  # on its way back
    conn.execute("update storeops.orders set amount_paid = 100000 where id = %s", (order,))  # a second capture
    assert owed(conn)[order]["owed"] == 50_000
    assert sorted(a["owed"] for a in alerts(conn)) == [50_000, 50_000]  # when cancelled, and now


def test_a_refund_in_another_currency_gives_back_none_of_what_is_owed(conn):
    tenant = make_tenant(conn)
    order, _, _ = _order(conn, tenant)
    conn.execute("update storeops.orders set status = 'cancelled' where id = %s", (order,))
    conn.execute("""insert into storeops.refunds (tenant_id, order_id, razorpay_refund_id, amount, currency, status, source)
                    values (%s, %s, 'rfnd_OtherCcy000001', 1000, 'USD', 'processed', 'dashboard')""", (tenant, order))
    row = owed(conn)[order]
    assert (row["owed"], row["refunded"], row["currency"]) == (50_000, 0, "INR")
