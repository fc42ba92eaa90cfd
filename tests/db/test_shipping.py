"""Shiprocket tracking applied in SQL: history once, current status, order sync, lookups, retries."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from _shipping_helpers import (
    apply_event,
    history,
    make_shipment,
    order_status,
    set_order_status,
    shipment_state,
    store_webhook,
)
from fakes.shiprocket_server import scan, webhook_payload
from psycopg.types.json import Jsonb
from support import as_tenant, make_order, make_tenant, refused, roll_back_to_before

# Shiprocket's official sample webhook (reference §6), verbatim.
SAMPLE = {
    "awb": "19041424751540", "courier_name": "Delhivery Surface",
    "current_status": "IN TRANSIT", "current_status_id": 20,
    "shipment_status": "IN TRANSIT", "shipment_status_id": 18,
    "current_timestamp": "23 05 2023 11:43:52",
    "order_id": "1373900_150876814", "sr_order_id": 348456385,
    "awb_assigned_date": "2023-05-19 11:59:16", "pickup_scheduled_date": "2023-05-19 11:59:17",
    "etd": "2023-05-23 15:40:19",
    "scans": [
        {"date": "2023-05-19 11:59:16", "status": "X-UCI", "activity": "Manifested - Manifest uploaded",
         "location": "Chomu_SamodRd_D (Rajasthan)", "sr-status": "5", "sr-status-label": "MANIFEST GENERATED"},
        {"date": "2023-05-19 15:32:17", "status": "X-PPOM", "activity": "In Transit - Shipment picked up",
         "location": "Chomu_SamodRd_D (Rajasthan)", "sr-status": "42", "sr-status-label": "PICKED UP"},
        {"date": "2023-05-19 17:19:14", "status": "X-DBL1F", "activity": "In Transit - Added to Bag",
         "location": "Chomu_SamodRd_D (Rajasthan)", "sr-status": "NA", "sr-status-label": "NA"},
    ],
    "is_return": 0, "channel_id": 3422553, "pod_status": "OTP Based Delivery", "pod": "Not Available",
    "qc_image": "", "qc_failure_reason": "",
}
T0 = datetime(2024, 3, 10, 6, 0, tzinfo=UTC)


def _setup(conn, awb="19041424751540", order_state="paid", **shipment):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    set_order_status(conn, order, order_state)
    ship = make_shipment(conn, tenant, order, awb=awb, **shipment)
    return tenant, order, ship


def test_official_sample_is_stored_and_syncs_the_order(conn):
    tenant, order, ship = _setup(conn)
    hook = store_webhook(conn, tenant, SAMPLE)

    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 1
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 0

    status, code, terminal, last_event_at = shipment_state(conn, ship)
    # shipment_status_id (18) decides, not current_status_id (20); "23 05 2023 11:43:52" IST.
    assert (status, code, terminal) == ("IN TRANSIT", 18, False)
    assert last_event_at == datetime(2023, 5, 23, 6, 13, 52, tzinfo=UTC)
    assert order_status(conn, order) == "shipped"
    rows = history(conn, ship)
    assert [(r[1], r[2], r[4]) for r in rows] == [
        ("MANIFEST GENERATED", 5, False), ("PICKED UP", 42, False), ("X-DBL1F", None, False), ("IN TRANSIT", 18, False)]
    # Scan dates ("YYYY-MM-DD HH:mm:ss") are IST too.
    assert rows[0][0] == datetime(2023, 5, 19, 6, 29, 16, tzinfo=UTC)
    processed, error, tenant_id = conn.execute(
        "select processed, error, tenant_id from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()
    assert processed and error is None and tenant_id == tenant


def test_both_timestamp_formats_give_the_same_instant(conn):
    tenant, _order, ship = _setup(conn, awb="AWB-FMT")
    dmy = webhook_payload("AWB-FMT", 18, T0, timestamp_format="dmy")
    iso = webhook_payload("AWB-FMT", 18, T0, timestamp_format="iso")
    assert dmy["current_timestamp"] != iso["current_timestamp"]
    assert apply_event(conn, tenant, dmy) == "applied"
    # Same event in the other format: nothing new.
    assert apply_event(conn, tenant, iso) == "duplicate"
    assert shipment_state(conn, ship)[3] == T0
    # The status row merges with its own scan (same time, label, place): 2 rows, not 3.
    assert len(history(conn, ship)) == 2


def test_redelivered_event_changes_nothing(conn):
    tenant, order, ship = _setup(conn, awb="AWB-DUP")
    payload = webhook_payload("AWB-DUP", 17, T0)
    assert apply_event(conn, tenant, payload) == "applied"
    before = (history(conn, ship), shipment_state(conn, ship), order_status(conn, order))
    assert apply_event(conn, tenant, copy.deepcopy(payload)) == "duplicate"
    assert (history(conn, ship), shipment_state(conn, ship), order_status(conn, order)) == before


def test_late_in_transit_after_delivered_changes_only_history(conn):
    tenant, order, ship = _setup(conn, awb="AWB-LATE")
    assert apply_event(conn, tenant, webhook_payload("AWB-LATE", 7, T0)) == "applied"
    state = shipment_state(conn, ship)
    assert state[:3] == ("DELIVERED", 7, True)
    assert order_status(conn, order) == "delivered"
    rows_before = len(history(conn, ship))

    # A scan from before delivery that arrives late, and one stamped (wrongly) after it.
    for at in (T0 - timedelta(hours=5), T0 + timedelta(hours=1)):
        assert apply_event(conn, tenant, webhook_payload("AWB-LATE", 18, at)) == "history"
    assert shipment_state(conn, ship) == state
    assert order_status(conn, order) == "delivered"
    assert len(history(conn, ship)) == rows_before + 4


def test_rto_cancels_the_order_and_nothing_brings_it_back(conn):
    tenant, order, ship = _setup(conn, awb="AWB-RTO")
    apply_event(conn, tenant, webhook_payload("AWB-RTO", 18, T0))
    assert order_status(conn, order) == "shipped"
    apply_event(conn, tenant, webhook_payload("AWB-RTO", 9, T0 + timedelta(days=1)))
    assert order_status(conn, order) == "cancelled"
    assert shipment_state(conn, ship)[:3] == ("RTO INITIATED", 9, False)
    apply_event(conn, tenant, webhook_payload("AWB-RTO", 17, T0 + timedelta(days=2)))
    apply_event(conn, tenant, webhook_payload("AWB-RTO", 10, T0 + timedelta(days=3)))
    assert order_status(conn, order) == "cancelled"
    assert shipment_state(conn, ship)[:3] == ("RTO DELIVERED", 10, True)


def test_cancelled_shipment_cancels_a_paid_order(conn):
    tenant, order, _ship = _setup(conn, awb="AWB-CXL")
    apply_event(conn, tenant, webhook_payload("AWB-CXL", 8, T0))
    assert order_status(conn, order) == "cancelled"


def test_delivery_of_a_return_does_not_mark_the_order_delivered(conn):
    tenant, order, ship = _setup(conn, awb="AWB-RET", order_state="shipped")
    assert apply_event(conn, tenant, webhook_payload("AWB-RET", 7, T0, is_return=True)) == "applied"
    assert shipment_state(conn, ship)[:2] == ("DELIVERED", 7)
    assert order_status(conn, order) == "shipped"


def test_order_never_moves_backwards_or_out_of_a_terminal_state(conn):
    tenant, order, _ship = _setup(conn, awb="AWB-FWD", order_state="delivered")
    apply_event(conn, tenant, webhook_payload("AWB-FWD", 9, T0))
    assert order_status(conn, order) == "delivered"

    tenant2, order2, _ = _setup(conn, awb="AWB-CAN", order_state="cancelled")
    apply_event(conn, tenant2, webhook_payload("AWB-CAN", 7, T0))
    assert order_status(conn, order2) == "cancelled"

    # A pending (e.g. cash on delivery) order goes forward; a manifest alone moves nothing.
    tenant3, order3, _ = _setup(conn, awb="AWB-COD", order_state="pending")
    apply_event(conn, tenant3, webhook_payload("AWB-COD", 5, T0))
    assert order_status(conn, order3) == "pending"
    apply_event(conn, tenant3, webhook_payload("AWB-COD", 42, T0 + timedelta(hours=1)))
    assert order_status(conn, order3) == "shipped"


def test_unknown_status_code_is_kept_flagged_and_moves_no_order(conn):
    tenant, order, ship = _setup(conn, awb="AWB-UNK")
    payload = webhook_payload("AWB-UNK", 999, T0, label="SOMETHING NEW",
                              scans=[scan(None, T0 - timedelta(hours=1)), {**scan(18, T0), "sr-status": "777"}])
    hook = store_webhook(conn, tenant, payload)
    assert conn.execute("select storeops.process_shipping_webhooks()").fetchone()[0] == 1
    assert conn.execute("select processed from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0]
    rows = {(r[1], r[2]): r[4] for r in history(conn, ship)}
    assert rows[("SOMETHING NEW", 999)] is True
    assert rows[("IN TRANSIT", 777)] is True
    assert order_status(conn, order) == "paid"


def test_shipment_found_by_sr_order_id_then_by_order_uuid(conn):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    set_order_status(conn, order, "paid")
    ship = make_shipment(conn, tenant, order, awb=None, sr_order_id="348456385")
    apply_event(conn, tenant, webhook_payload("AWB-NEW-1", 6, T0, sr_order_id=348456385))
    awb, courier = conn.execute(
        "select awb, courier_name from storeops.shiprocket_shipments where id = %s", (ship,)).fetchone()
    assert (awb, courier) == ("AWB-NEW-1", "Delhivery Surface")
    assert order_status(conn, order) == "shipped"

    # No shipment row yet, but the channel order id is our order uuid: the shipment is created.
    order2 = make_order(conn, tenant)
    apply_event(conn, tenant, webhook_payload("AWB-NEW-2", 18, T0, sr_order_id=1, order_id=f"{order2}_1"))
    assert conn.execute("select order_id, status from storeops.shiprocket_shipments where awb = 'AWB-NEW-2'"
                        ).fetchone() == (order2, "IN TRANSIT")
    assert order_status(conn, order2) == "shipped"


def test_unmatched_webhook_is_kept_with_its_error_and_retried_with_backoff(conn):
    tenant = make_tenant(conn)
    hook = store_webhook(conn, tenant, webhook_payload("AWB-NOWHERE", 18, T0, sr_order_id=5, order_id="x"))
    now = conn.execute("select now()").fetchone()[0]
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 1
    processed, error, attempts = conn.execute(
        "select processed, error, attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()
    assert not processed and attempts == 1 and "AWB-NOWHERE" in error
    retry = conn.execute(
        """select operation_type, attempts, next_retry_at, payload ->> 'webhook_id' from storeops.operation_retry_queue
           where operation_id = %s""", (hook,)).fetchone()
    assert retry == ("shipping_webhook", 1, now + timedelta(minutes=5), str(hook))
    # A retry is not picked up again by the fresh-webhook loop.
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 0

    # Once the shipment exists, the retry worker's call applies it.
    order = make_order(conn, tenant)
    make_shipment(conn, tenant, order, awb="AWB-NOWHERE")
    assert conn.execute("select storeops.apply_shipping_webhook(%s)", (hook,)).fetchone()[0] == "applied"
    assert conn.execute("select storeops.apply_shipping_webhook(%s)", (hook,)).fetchone()[0] == "already_processed"
    assert order_status(conn, order) == "shipped"


def test_one_bad_webhook_does_not_block_the_batch(conn):
    tenant, order, ship = _setup(conn, awb="AWB-OK")
    store_webhook(conn, tenant, webhook_payload("AWB-MISSING", 18, T0))
    store_webhook(conn, tenant, webhook_payload("AWB-OK", 18, T0))
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 2
    assert shipment_state(conn, ship)[0] == "IN TRANSIT"


def test_tenant_is_resolved_by_awb_or_order_reference(conn):
    tenant, order, _ship = _setup(conn, awb="AWB-T1", sr_order_id="777", channel_order_id="STORE-1001")
    other = make_tenant(conn, "Other")
    make_shipment(conn, other, make_order(conn, other), awb="AWB-T2", sr_order_id="888", channel_order_id="STORE-1001")
    get = "select storeops.get_tenant_for_awb(%s, %s)"
    assert conn.execute(get, ("AWB-T1", None)).fetchone()[0] == tenant
    assert conn.execute(get, ("unknown", "777")).fetchone()[0] == tenant
    assert conn.execute(get, (None, "888")).fetchone()[0] == other
    assert conn.execute(get, (None, "STORE-1001")).fetchone()[0] is None  # ambiguous: refuse to guess
    assert conn.execute(get, (None, str(order))).fetchone()[0] == tenant
    assert conn.execute(get, ("unknown", "nothing")).fetchone()[0] is None

    # A webhook stored without a tenant is applied to the tenant owning the AWB.
    hook = store_webhook(conn, None, webhook_payload("AWB-T1", 18, T0))
    conn.execute("select storeops.process_shipping_webhooks()")
    assert conn.execute("select tenant_id, processed from storeops.shipping_webhooks where id = %s",
                        (hook,)).fetchone() == (tenant, True)


def test_another_tenants_awb_is_not_applied(conn):
    _tenant, order, _ship = _setup(conn, awb="AWB-MINE")
    intruder = make_tenant(conn, "Intruder")
    hook = store_webhook(conn, intruder, webhook_payload("AWB-MINE", 7, T0))
    conn.execute("select storeops.process_shipping_webhooks()")
    assert conn.execute("select processed from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] is False
    assert order_status(conn, order) == "paid"


def test_seed_guide_current_status_and_history_queries(conn):
    tenant, order, ship = _setup(conn, awb="AWB-SEED")
    path = [(5, "Jaipur"), (42, "Jaipur"), (18, "Delhi Hub"), (38, "Mumbai Hub"), (17, "Andheri"), (7, "Andheri")]
    scans = []
    for i, (code, place) in enumerate(path):
        scans.append(scan(code, T0 + timedelta(hours=i), location=place))
    # Delivered to us out of order.
    for i in (2, 0, 5, 1, 4, 3):
        code = path[i][0]
        apply_event(conn, tenant, webhook_payload("AWB-SEED", code, T0 + timedelta(hours=i), scans=scans[: i + 1]))

    current = conn.execute(f"""
SELECT
  s.*,
  st.status as current_tracking_status,
  st.location as current_location,
  st.timestamp as last_update
FROM shiprocket_shipments s
LEFT JOIN LATERAL (
  SELECT status, location, timestamp
  FROM shipping_tracking_updates
  WHERE shipment_id = s.id
  ORDER BY timestamp DESC
  LIMIT 1
) st ON true
WHERE s.order_id = '{order}';
""").fetchall()
    assert len(current) == 1
    cols = [d.name for d in conn.execute("select * from shiprocket_shipments limit 0").description]
    row = dict(zip(cols + ["current_tracking_status", "current_location", "last_update"], current[0], strict=True))
    assert (row["current_tracking_status"], row["current_location"], row["last_update"]) == (
        "DELIVERED", "Andheri", T0 + timedelta(hours=5))
    assert row["status"] == "DELIVERED"

    tracking = conn.execute(f"""
SELECT * FROM shipping_tracking_updates
WHERE shipment_id = '{ship}'
ORDER BY timestamp DESC;
""").fetchall()
    cols = [d.name for d in conn.execute("select * from shipping_tracking_updates limit 0").description]
    rows = [dict(zip(cols, r, strict=True)) for r in tracking]
    # Complete (every scan once; each status row merged with its own scan) and newest first.
    assert [(r["status"], r["location"]) for r in rows] == [(f"{lbl}", place) for lbl, place in reversed(
        [("MANIFEST GENERATED", "Jaipur"), ("PICKED UP", "Jaipur"), ("IN TRANSIT", "Delhi Hub"),
         ("REACHED AT DESTINATION HUB", "Mumbai Hub"), ("OUT FOR DELIVERY", "Andheri"), ("DELIVERED", "Andheri")])]
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)


def test_stale_shipments_are_listed_until_polled_or_terminal(conn):
    tenant, _order, ship = _setup(conn, awb="AWB-STALE")
    now = conn.execute("select now()").fetchone()[0]
    stale = "select id from storeops.list_stale_shipments(interval '6 hours', 100, %s) where id = %s"
    later = now + timedelta(hours=7)
    assert conn.execute(stale, (now, ship)).fetchall() == []
    assert conn.execute(stale, (later, ship)).fetchall() == [(ship,)]
    assert conn.execute("select storeops.record_shipments_polled(%s, %s)", ([ship], later)).fetchone()[0] == 1
    assert conn.execute(stale, (later + timedelta(hours=1), ship)).fetchall() == []
    assert conn.execute(stale, (later + timedelta(hours=7), ship)).fetchall() == [(ship,)]
    apply_event(conn, tenant, webhook_payload("AWB-STALE", 7, now))
    assert conn.execute(stale, (later + timedelta(days=30), ship)).fetchall() == []
    # A shipment without an AWB cannot be polled.
    tenant2 = make_tenant(conn)
    no_awb = make_shipment(conn, tenant2, make_order(conn, tenant2), awb=None)
    assert conn.execute(stale, (later + timedelta(days=30), no_awb)).fetchall() == []


def test_tenants_read_status_codes_and_only_their_own_history(conn):
    tenant, _order, ship = _setup(conn, awb="AWB-RLS")
    other, _o2, other_ship = _setup(conn, awb="AWB-RLS2")
    apply_event(conn, tenant, webhook_payload("AWB-RLS", 18, T0))
    apply_event(conn, other, webhook_payload("AWB-RLS2", 18, T0))
    as_tenant(conn, tenant)
    assert conn.execute("select label from shiprocket_status_codes where code = 7").fetchone()[0] == "DELIVERED"
    seen = {r[0] for r in conn.execute("select shipment_id from shipping_tracking_updates")}
    assert seen == {ship}
    assert other_ship not in seen


def _refused_403(c, sql, args):
    return refused(c, sql, args, sqlstate="SO403")


def test_a_store_cannot_point_a_shipment_at_another_stores_order(conn):
    victim, victim_order, _ship = _setup(conn, awb="AWB-VICTIM")
    intruder = make_tenant(conn, "Intruder")
    own_order = make_order(conn, intruder)
    as_tenant(conn, intruder)
    # RLS hides the victim's order from the intruder, but the foreign key alone would have let it through.
    err = _refused_403(conn, "insert into storeops.shiprocket_shipments (tenant_id, order_id, awb) values (%s, %s, 'AWB-FORGED')",
                       (intruder, victim_order))
    assert str(victim_order) in err.diag.message_primary
    mine = conn.execute("insert into storeops.shiprocket_shipments (tenant_id, order_id, awb) values (%s, %s, 'AWB-OWN') "
                        "returning id", (intruder, own_order)).fetchone()[0]
    _refused_403(conn, "update storeops.shiprocket_shipments set order_id = %s where id = %s", (victim_order, mine))
    conn.execute("reset role")
    # So its own RTO event, under its own tenant, moves only its own order.
    apply_event(conn, intruder, webhook_payload("AWB-OWN", 9, T0))
    assert (order_status(conn, victim_order), order_status(conn, own_order)) == ("paid", "cancelled")
    # The runner is held to it too.
    _refused_403(conn, "insert into storeops.shiprocket_shipments (tenant_id, order_id) values (%s, %s)",
                 (intruder, victim_order))


def _own_token(c, tenant, expires_at=None):
    c.execute("insert into storeops.tenant_secrets (tenant_id, kind, secret, expires_at) "
              "values (%s, 'shiprocket_webhook', 'sr-own', %s)", (tenant, expires_at))


@pytest.mark.parametrize("named_by", ["awb", "order uuid"])
def test_a_webhook_under_the_platform_token_is_not_applied_to_a_store_with_its_own_token(conn, named_by):
    guarded, guarded_order, _ = _setup(conn, awb="AWB-GUARDED")
    _own_token(conn, guarded)
    shared, shared_order, _ = _setup(conn, awb="AWB-SHARED")  # uses the platform token: applied as before
    payload = (webhook_payload("AWB-GUARDED", 9, T0) if named_by == "awb"
               else webhook_payload("AWB-NOT-YET", 9, T0, sr_order_id=123456, order_id=str(guarded_order)))
    forged = store_webhook(conn, None, payload)  # intake stores it tenantless after checking the platform token
    fine = store_webhook(conn, None, webhook_payload("AWB-SHARED", 7, T0))
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 2
    assert (order_status(conn, guarded_order), order_status(conn, shared_order)) == ("paid", "delivered")
    processed, error, tenant_id = conn.execute(
        "select processed, error, tenant_id from storeops.shipping_webhooks where id = %s", (forged,)).fetchone()
    assert not processed and tenant_id is None and "has its own Shiprocket token" in error
    assert conn.execute("select tenant_id, processed from storeops.shipping_webhooks where id = %s",
                        (fine,)).fetchone() == (shared, True)
    # Its retry meets the same refusal.
    _refused_403(conn, "select storeops.apply_shipping_webhook(%s)", (forged,))
    assert order_status(conn, guarded_order) == "paid"


def test_a_store_whose_own_token_expired_is_back_on_the_platform_token(conn):
    tenant, order, _ = _setup(conn, awb="AWB-EXPIRED")
    _own_token(conn, tenant, expires_at=T0)
    store_webhook(conn, None, webhook_payload("AWB-EXPIRED", 7, T0))
    conn.execute("select storeops.process_shipping_webhooks(500)")
    assert order_status(conn, order) == "delivered"


def test_shipments_pointing_at_another_tenants_order_before_the_migration_raise_one_alert(fresh_db):
    from runner import migrate

    roll_back_to_before(fresh_db, "0057_shipments_act_only_on_their_tenants_orders")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        a, b = make_tenant(c, "A"), make_tenant(c, "B")
        crossed = make_shipment(c, b, make_order(c, a), awb="AWB-CROSSED")
        make_shipment(c, a, make_order(c, a), awb="AWB-FINE")
    migrate.apply(fresh_db)
    with psycopg.connect(fresh_db) as c:
        [(tenant_id, details)] = c.execute(
            "select tenant_id, details from storeops.alerts where kind = 'shipment_order_mismatch'").fetchall()
        assert tenant_id is None and details["shipments"] == 1
        assert [s["shipment_id"] for s in details["sample"]] == [str(crossed)]


def _give_up_retries(c, hook):
    """As if its five retries had run out: the retry row failed, the webhook tried six times."""
    c.execute("update storeops.operation_retry_queue set status = 'failed', attempts = 5 where operation_id = %s", (hook,))
    c.execute("update storeops.shipping_webhooks set attempts = 6 where id = %s", (hook,))


@pytest.mark.parametrize("recorded", ["with its awb", "awb given later", "by sr_order_id", "by order uuid"])
def test_a_webhook_whose_retries_ran_out_is_applied_once_its_shipment_is_recorded(conn, recorded):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    set_order_status(conn, order, "paid")
    late = webhook_payload("AWB-LATE", 7, T0, sr_order_id=556677, order_id="STORE-LATE-1")
    hook = store_webhook(conn, tenant, late)
    conn.execute("select storeops.process_shipping_webhooks(500)")
    _give_up_retries(conn, hook)
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 0  # nothing fresh
    if recorded == "with its awb":
        make_shipment(conn, tenant, order, awb="AWB-LATE")
    elif recorded == "awb given later":
        ship = make_shipment(conn, tenant, order)
        conn.execute("update storeops.shiprocket_shipments set courier_name = 'Delhivery' where id = %s", (ship,))
        assert conn.execute("select attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] == 6
        conn.execute("update storeops.shiprocket_shipments set awb = 'AWB-LATE' where id = %s", (ship,))
    elif recorded == "by sr_order_id":
        make_shipment(conn, tenant, order, sr_order_id="556677")
    else:
        late["order_id"] = str(order)
        conn.execute("update storeops.shipping_webhooks set payload = %s where id = %s", (Jsonb(late), hook))
        make_shipment(conn, tenant, order, channel_order_id="STORE-OTHER")
    assert conn.execute("select attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] == 0
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 1
    assert order_status(conn, order) == "delivered"
    assert conn.execute("select processed from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0]


def test_another_tenants_shipment_does_not_wake_a_tenants_waiting_webhook(conn):
    tenant, other = make_tenant(conn), make_tenant(conn, "Other")
    hook = store_webhook(conn, tenant, webhook_payload("AWB-SHARED-NUMBER", 7, T0))
    conn.execute("select storeops.process_shipping_webhooks(500)")
    _give_up_retries(conn, hook)
    make_shipment(conn, other, make_order(conn, other), awb="AWB-SHARED-NUMBER")
    assert conn.execute("select attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] == 6


def test_a_store_recording_its_shipment_wakes_its_waiting_webhooks_through_rls(conn):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    hook = store_webhook(conn, None, webhook_payload("AWB-BY-STORE", 18, T0))  # the platform token's
    conn.execute("select storeops.process_shipping_webhooks(500)")
    _give_up_retries(conn, hook)
    as_tenant(conn, tenant)
    conn.execute("insert into storeops.shiprocket_shipments (tenant_id, order_id, awb) values (%s, %s, 'AWB-BY-STORE')",
                 (tenant, order))
    conn.execute("reset role")
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 1
    assert conn.execute("select tenant_id, processed from storeops.shipping_webhooks where id = %s",
                        (hook,)).fetchone() == (tenant, True)


def test_waking_ends_a_pending_retry_so_the_webhook_is_only_on_the_fresh_path(conn):
    tenant = make_tenant(conn)
    order = make_order(conn, tenant)
    hook = store_webhook(conn, tenant, webhook_payload("AWB-SOON", 18, T0))
    conn.execute("select storeops.process_shipping_webhooks(500)")  # fails: a retry is due in 5 minutes
    make_shipment(conn, tenant, order, awb="AWB-SOON")
    status, errors = conn.execute("select status, errors from storeops.operation_retry_queue where operation_id = %s",
                                  (hook,)).fetchone()
    assert status == "completed" and "fresh again" in errors[-1]["note"]
    assert conn.execute("select storeops.process_shipping_webhooks(500)").fetchone()[0] == 1
    assert order_status(conn, order) == "shipped"


def test_a_tenantless_webhook_is_woken_by_its_awb_not_by_references_any_store_writes(conn):
    tenant = make_tenant(conn)
    hook = store_webhook(conn, None, webhook_payload("AWB-GLOBAL", 9, T0, sr_order_id=1001, order_id="1001"))
    conn.execute("select storeops.process_shipping_webhooks(500)")
    _give_up_retries(conn, hook)
    # Another store's shipment with the same free-text references (its own order number 1001).
    make_shipment(conn, tenant, make_order(conn, tenant), sr_order_id="1001", channel_order_id="1001")
    assert conn.execute("select attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] == 6
    make_shipment(conn, tenant, make_order(conn, tenant), awb="AWB-GLOBAL")
    assert conn.execute("select attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] == 0


def test_a_webhook_older_than_30_days_is_not_woken(conn):
    tenant = make_tenant(conn)
    hook = store_webhook(conn, tenant, webhook_payload("AWB-ANCIENT", 7, T0))
    conn.execute("select storeops.process_shipping_webhooks(500)")
    _give_up_retries(conn, hook)
    conn.execute("update storeops.shipping_webhooks set created_at = now() - interval '31 days' where id = %s", (hook,))
    make_shipment(conn, tenant, make_order(conn, tenant), awb="AWB-ANCIENT")
    assert conn.execute("select attempts from storeops.shipping_webhooks where id = %s", (hook,)).fetchone()[0] == 6


def test_a_webhook_received_before_the_store_had_its_own_token_is_applied(conn):
    tenant, order, _ = _setup(conn, awb="AWB-EARLY")
    hook = store_webhook(conn, None, webhook_payload("AWB-EARLY", 7, T0))
    conn.execute("update storeops.shipping_webhooks set created_at = now() - interval '1 hour' where id = %s", (hook,))
    _own_token(conn, tenant)  # set up after it came in
    conn.execute("select storeops.process_shipping_webhooks(500)")
    assert order_status(conn, order) == "delivered"
