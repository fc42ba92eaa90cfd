"""process_shipping_webhooks applies a batch set-based; the result must be that of one at a time.

Each scenario is applied twice from the same savepoint: as one batch of 500, and one webhook per
call (which goes event by event). Shipments, orders, history, the webhooks' rows and the retry queue
must come out the same. Also: a bad event inside a batch fails alone, and two workers on the same
shipments finish without deadlocks or lost events.
"""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from _shipping_helpers import make_shipment, set_order_status, store_webhook
from fakes.shiprocket_server import scan, webhook_payload
from support import make_order, make_tenant

FORWARD = [5, 42, 6, 18, 38, 17, 7]
RTO = [5, 42, 6, 18, 17, 21, 9, 46, 10]
T0 = datetime(2024, 2, 1, 4, 30, tzinfo=UTC)


def _events(rnd: random.Random, awb: str, path: list[int], **kw) -> list[dict]:
    """Webhooks along a path, each carrying its last few scans, some with an unknown code."""
    scans: list[dict] = []
    events = []
    for i, code in enumerate(path):
        at = T0 + timedelta(hours=3 * i)
        scans.append(scan(code, at, location=f"Hub {i % 3}"))
        if i % 3 == 1:
            scans.append(scan(None, at + timedelta(minutes=20), location=f"Hub {i}"))
        events.append(webhook_payload(awb, code, at, scans=scans[-rnd.randint(2, 4):],
                                      courier_name=rnd.choice(["Delhivery Surface", "Xpressbees"]),
                                      timestamp_format=rnd.choice(["dmy", "iso"]), **kw))
        if rnd.random() < 0.2:
            events.append(webhook_payload(awb, 888, at + timedelta(minutes=5), label="NEW CODE", scans=scans[-2:], **kw))
    return events


def _scenario(conn, seed: int) -> None:
    """Stored webhooks over every path the batch can take, in a shuffled arrival order."""
    rnd = random.Random(seed)
    tenant, other = make_tenant(conn, "Batch A"), make_tenant(conn, "Batch B")
    hooks: list[tuple] = []
    for i in range(12):
        order = make_order(conn, tenant)
        set_order_status(conn, order, rnd.choice(["pending", "paid", "shipped"]))
        awb = f"BATCH{seed}-{i}"
        make_shipment(conn, tenant, order, awb=awb, is_return=i == 3)
        hooks += [(None if i == 4 else tenant, e) for e in _events(rnd, awb, RTO if i % 4 == 1 else FORWARD)]
    # Two shipments of one order: the order follows both.
    order = make_order(conn, tenant)
    set_order_status(conn, order, "paid")
    for awb, path in ((f"TWIN{seed}-1", FORWARD[:4]), (f"TWIN{seed}-2", RTO)):
        make_shipment(conn, tenant, order, awb=awb)
        hooks += [(tenant, e) for e in _events(rnd, awb, path)]
    # Known by sr_order_id only (the event brings the AWB), then by AWB.
    order = make_order(conn, tenant)
    make_shipment(conn, tenant, order, awb=None, sr_order_id=f"SR{seed}")
    hooks += [(tenant, e) for e in _events(rnd, f"LATE{seed}", FORWARD, sr_order_id=f"SR{seed}")]
    # Not recorded at all, but the channel order id is our order: created by the first event.
    order = make_order(conn, tenant)
    hooks += [(tenant, e) for e in _events(rnd, f"NEWSHIP{seed}", FORWARD[:5], order_id=f"{order}_1")]
    # Unknown AWB (fails, retried), and another tenant's AWB (fails).
    hooks += [(tenant, e) for e in _events(rnd, f"NOWHERE{seed}", FORWARD[:3], order_id="x", sr_order_id=1)]
    hooks += [(other, e) for e in _events(rnd, f"BATCH{seed}-0", FORWARD[:2])]
    rnd.shuffle(hooks)
    seen = set()
    for tenant_id, payload in hooks:
        if (key := (payload["awb"], payload["shipment_status_id"], payload["current_timestamp"])) not in seen:
            seen.add(key)
            store_webhook(conn, tenant_id, payload)


def _state(conn) -> dict:
    q = {
        # Shipments by AWB: one is created by the run, with a new id each time.
        "shipments": """select s.awb, s.order_id, s.sr_order_id, s.courier_name, s.status, s.status_code,
                               s.is_terminal, s.last_event_at from storeops.shiprocket_shipments s order by s.awb""",
        "orders": "select id, status from storeops.orders order by id",
        "history": """select s.awb, t.tenant_id, t."timestamp", t.status, t.location, t.status_code, t.activity, t.source,
                             t.unknown_status
                      from storeops.shipping_tracking_updates t join storeops.shiprocket_shipments s on s.id = t.shipment_id
                      order by 1, 3, 4, 5""",
        "webhooks": """select id, processed, processed_at, tenant_id, attempts, error
                       from storeops.shipping_webhooks order by id""",
        "retries": """select operation_id, tenant_id, attempts, last_error, payload from storeops.operation_retry_queue
                      where operation_type = 'shipping_webhook' order by operation_id""",
    }
    return {k: conn.execute(sql).fetchall() for k, sql in q.items()}


def _calls(conn) -> dict:
    return dict(conn.execute("select funcname, calls from pg_stat_xact_user_functions").fetchall())


def _drain(conn, batch: int) -> int:
    total = 0
    while (n := conn.execute("select storeops.process_shipping_webhooks(%s)", (batch,)).fetchone()[0]) > 0:
        total += n
    return total


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_batch_ends_where_one_at_a_time_does(conn, seed):
    _scenario(conn, seed)
    stored = conn.execute("select count(*) from storeops.shipping_webhooks").fetchone()[0]
    conn.execute("savepoint before")
    assert _drain(conn, 1) == stored
    one_by_one = _state(conn)
    conn.execute("rollback to savepoint before")
    conn.execute("set local track_functions = 'all'")
    calls_before = _calls(conn)
    assert _drain(conn, 500) == stored
    batched = _state(conn)
    calls = {f: n - calls_before.get(f, 0) for f, n in _calls(conn).items()}
    # The batches took the fast path: set-based, never redone one subtransaction per event.
    assert calls.get("apply_tracking_events", 0) > 0
    assert calls.get("apply_shipping_webhook", 0) == 0

    for key in one_by_one:
        assert batched[key] == one_by_one[key], key
    # The scenario reaches what it is meant to: applied, failed and created shipments all occur.
    webhooks = batched["webhooks"]
    assert sum(1 for w in webhooks if w[1]) > 100
    assert sum(1 for w in webhooks if w[4] == 1) == len(batched["retries"]) > 0
    assert any(s[0] == f"NEWSHIP{seed}" for s in batched["shipments"])
    assert any(s[0] == f"LATE{seed}" and s[2] == f"SR{seed}" for s in batched["shipments"])
    assert {o[1] for o in batched["orders"]} >= {"delivered", "cancelled"}


def test_an_event_that_fails_mid_batch_fails_alone(conn):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    set_order_status(conn, order, "paid")
    make_shipment(conn, tenant, order, awb="AWB-BAD")
    good = store_webhook(conn, tenant, webhook_payload("AWB-BAD", 18, T0))
    # Passes the ISO pattern but its offset is out of range: the cast fails inside the batch statement.
    bad = store_webhook(conn, tenant, {**webhook_payload("AWB-BAD", 7, T0 + timedelta(hours=1)),
                                       "current_timestamp": "2024-02-01T10:00:00+99"})
    later = store_webhook(conn, tenant, webhook_payload("AWB-BAD", 17, T0 + timedelta(hours=2)))

    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 3
    rows = {r[0]: r[1:] for r in conn.execute("select id, processed, attempts, error from storeops.shipping_webhooks")}
    assert rows[good] == rows[later] == (True, 0, None)
    assert rows[bad][:2] == (False, 1) and "out of range" in rows[bad][2]
    assert conn.execute("select status from storeops.shiprocket_shipments where awb = 'AWB-BAD'").fetchone()[0] == \
        "OUT FOR DELIVERY"
    assert conn.execute("select status from storeops.orders where id = %s", (order,)).fetchone()[0] == "shipped"
    assert conn.execute("select count(*) from storeops.operation_retry_queue where operation_id = %s",
                        (bad,)).fetchone()[0] == 1


def test_two_workers_on_the_same_shipments_lose_nothing(fresh_db):
    rnd = random.Random(9)
    with psycopg.connect(fresh_db) as c:
        tenant = make_tenant(c)
        orders = []
        for i in range(15):
            order = make_order(c, tenant)
            set_order_status(c, order, "paid")
            orders.append(order)
            # Two shipments per order for some: locks on orders are shared between shipments.
            for j in range(1 + i % 2):
                awb = f"CONC-{i}-{j}"
                make_shipment(c, tenant, order, awb=awb)
                for e in _events(rnd, awb, RTO if j else FORWARD):
                    store_webhook(c, tenant, e)
        stored = c.execute("select count(*) from storeops.shipping_webhooks").fetchone()[0]
        c.commit()

    handled = [0, 0]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            with psycopg.connect(fresh_db, autocommit=True) as c:
                handled[i] = _drain(c, 20)
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select count(*) from storeops.shipping_webhooks where processed and attempts = 0"
                         ).fetchone()[0] == stored == sum(handled)
        statuses = dict(c.execute("select awb, status from storeops.shiprocket_shipments").fetchall())
        assert {awb: s for awb, s in statuses.items() if awb.endswith("-0")} == {
            f"CONC-{i}-0": "DELIVERED" for i in range(15)}
        assert {s for awb, s in statuses.items() if awb.endswith("-1")} == {"RTO DELIVERED"}
        # An order with a delivered and an RTO shipment: whichever event came first decided it.
        assert {r[0] for r in c.execute("select status from storeops.orders where id = any (%s)", (orders,))} <= {
            "delivered", "cancelled"}
