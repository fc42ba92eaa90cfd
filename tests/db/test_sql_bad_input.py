"""The SQL API given NULLs or garbage: a clear error (a message naming the problem, SQLSTATE class 22
data exception, 23 integrity, P0 raised by the function, SO storeops' own, 2201W-style limits), never
a silent success and never an internal error (XX).

Every call runs as storeops_runner, the role the runner and pg_cron use, each in its own savepoint of
the test's rolled-back transaction. Functions whose documented answer to "nothing there" is a value
(complete_operation_retry -> false, fail_operation_retry -> NULL, lookups -> NULL) are checked for
that value and for having changed nothing.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import psycopg
import pytest
from psycopg.types.json import Jsonb

ALLOWED_CLASSES = ("22", "23", "P0", "SO")


@dataclass
class Bad:
    id: str
    sql: str
    params: tuple = ()
    words: tuple[str, ...] = ()  # all must appear in the error message (case-insensitive)
    classes: tuple[str, ...] = ALLOWED_CLASSES


@pytest.fixture
def world(conn):
    """A tenant, a pending order, a paid order with a captured payment, a shipment, a domain, a
    processed webhook and a claimed retry row; then act as the runner role."""
    c = conn
    tenant = c.execute("insert into storeops.tenants (name) values ('Bad Input Store') returning id").fetchone()[0]
    pending = c.execute("insert into storeops.orders (tenant_id, amount) values (%s, 50000) returning id",
                        (tenant,)).fetchone()[0]
    paid = c.execute("insert into storeops.orders (tenant_id, amount, status, payment_status, amount_paid, "
                     "razorpay_order_id, razorpay_payment_id) values (%s, 50000, 'paid', 'captured', 50000, "
                     "'order_BadInput00001', 'pay_BadInput000001') returning id", (tenant,)).fetchone()[0]
    c.execute("insert into storeops.razorpay_payments (tenant_id, order_id, razorpay_payment_id, razorpay_order_id, "
              "amount, currency, status) values (%s, %s, 'pay_BadInput000001', 'order_BadInput00001', 50000, 'INR', "
              "'captured')", (tenant, paid))
    shipment = c.execute("insert into storeops.shiprocket_shipments (tenant_id, order_id, awb) values (%s, %s, "
                         "'AWBBAD0001') returning id", (tenant, paid)).fetchone()[0]
    domain = c.execute("insert into storeops.custom_domains (tenant_id, domain) values (%s, 'bad-input.example.in') "
                       "returning id", (tenant,)).fetchone()[0]
    hook = c.execute("insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload, processed, "
                     "processed_at, created_at) values (%s, 'evt_BadInputOld001', 'payment.captured', '{}', true, "
                     "now(), now() - interval '1 hour') returning id", (tenant,)).fetchone()[0]
    retry = c.execute("select * from storeops.enqueue_operation(%s, 'refund_create', %s, '{}', now() - interval '1 s')",
                      (tenant, uuid.uuid4())).fetchone()[0]
    c.execute("set local role storeops_runner")
    return {"tenant": tenant, "pending": pending, "paid": paid, "shipment": shipment, "domain": domain,
            "hook": hook, "retry": retry}


def _cases(w) -> list[Bad]:
    t, rnd = w["tenant"], uuid.uuid4()
    return [
        # -- retry queue ------------------------------------------------------------------------------------
        Bad("schedule_retry-null-type", "select storeops.schedule_operation_retry(%s, null, %s, '{}', 'e')", (t, rnd),
            ("operation_type", "required")),
        Bad("schedule_retry-blank-type", "select storeops.schedule_operation_retry(%s, '  ', %s, '{}', 'e')", (t, rnd),
            ("operation_type", "required")),
        Bad("schedule_retry-null-id", "select storeops.schedule_operation_retry(%s, 'refund_create', null, '{}', 'e')",
            (t,), ("operation_id", "required")),
        Bad("schedule_retry-unknown-tenant", "select storeops.schedule_operation_retry(%s, 'refund_create', %s, '{}', 'e')",
            (uuid.uuid4(), rnd), ("tenant",)),
        Bad("schedule_retry-null-now",
            "select storeops.schedule_operation_retry(%s, 'refund_create', %s, '{}', 'e', null)", (t, rnd),
            ("next_retry_at",)),
        Bad("enqueue-null-type", "select storeops.enqueue_operation(%s, null, %s)", (t, rnd), ("operation_type",)),
        Bad("enqueue-blank-type", "select storeops.enqueue_operation(%s, ' ', %s)", (t, rnd), ("type_not_blank",)),
        Bad("enqueue-null-id", "select storeops.enqueue_operation(%s, 'refund_create', null)", (t,), ("operation_id",)),
        Bad("claim-negative-limit", "select * from storeops.claim_operation_retries('w', -1)", (), ("limit", "negative")),
        Bad("claim-null-lease", "select * from storeops.claim_operation_retries('w', 10, null)", (), ("lease",)),
        Bad("run_webhook_retries-negative-limit", "select storeops.run_webhook_retries('w', -5)", (),
            ("limit", "negative")),
        # -- refunds ----------------------------------------------------------------------------------------
        Bad("refund-null-amount", "select storeops.request_refund(%s, %s, null, 'r')", (t, w["paid"]),
            ("amount",), ("SO",)),
        Bad("refund-negative-amount", "select storeops.request_refund(%s, %s, -100, 'r')", (t, w["paid"]),
            ("amount", "above zero"), ("SO",)),
        Bad("refund-zero-amount", "select storeops.request_refund(%s, %s, 0, 'r')", (t, w["paid"]),
            ("amount", "above zero"), ("SO",)),
        Bad("refund-unknown-order", "select storeops.request_refund(%s, %s, 100, 'r')", (t, rnd),
            ("order", "not found"), ("SO",)),
        Bad("refund-null-order", "select storeops.request_refund(%s, null, 100, 'r')", (t,), ("order", "not found"),
            ("SO",)),
        Bad("refund-null-tenant", "select storeops.request_refund(null, %s, 100, 'r')", (w["paid"],),
            ("order", "not found"), ("SO",)),
        Bad("refund-other-tenant", "select storeops.request_refund(%s, %s, 100, 'r')", (uuid.uuid4(), w["paid"]),
            ("order", "not found"), ("SO",)),
        Bad("refund-unpaid-order", "select storeops.request_refund(%s, %s, 100, 'r')", (t, w["pending"]),
            ("not paid",), ("SO",)),
        Bad("refund-more-than-captured", "select storeops.request_refund(%s, %s, 50001, 'r')", (t, w["paid"]),
            ("more than",), ("SO",)),
        Bad("refund-bad-idempotency-key", "select storeops.request_refund(%s, %s, 100, 'r', 'short')", (t, w["paid"]),
            ("idempotency key",), ("SO",)),
        Bad("refund_result-null-status", "select storeops.record_refund_result(%s, null, null)", (rnd,),
            ("status",), ("SO",)),
        Bad("refund_result-bad-status", "select storeops.record_refund_result(%s, null, 'done')", (rnd,),
            ("status",), ("SO",)),
        Bad("refund_result-unknown-refund", "select storeops.record_refund_result(%s, null, 'processed')", (rnd,),
            ("refund", "not found"), ("SO",)),
        # -- payments ---------------------------------------------------------------------------------------
        Bad("apply_payment_webhook-random-uuid", "select storeops.apply_payment_webhook(%s)", (rnd,),
            ("payment webhook", "does not exist"), ("P0",)),
        Bad("apply_payment_webhook-null", "select storeops.apply_payment_webhook(null)", (),
            ("payment webhook", "does not exist"), ("P0",)),
        Bad("record_missed_payment-null", "select storeops.record_missed_payment(null)", (), ("no id",)),
        Bad("record_missed_payment-array", "select storeops.record_missed_payment('[1, 2]')", (), ("no id",)),
        Bad("record_missed_payment-no-id", "select storeops.record_missed_payment(%s)",
            (Jsonb({"status": "captured", "amount": 100}),), ("no id",)),
        Bad("record_missed_payments-object", "select storeops.record_missed_payments('{\"id\": \"pay_X\"}')", (),
            ("cannot extract elements",)),
        # -- shipping ---------------------------------------------------------------------------------------
        Bad("apply_shipping_webhook-random-uuid", "select storeops.apply_shipping_webhook(%s)", (rnd,),
            ("shipping webhook", "does not exist"), ("P0",)),
        Bad("apply_tracking_event-null-tenant", "select storeops.apply_tracking_event(null, '{}', 'webhook')", (),
            ("tenant", "required")),
        Bad("apply_tracking_event-bad-source", "select storeops.apply_tracking_event(%s, '{}', 'carrier-pigeon')", (t,),
            ("source",)),
        Bad("apply_tracking_event-null-source", "select storeops.apply_tracking_event(%s, '{}', null)", (t,),
            ("source",)),
        Bad("apply_tracking_event-array", "select storeops.apply_tracking_event(%s, '[1]', 'webhook')", (t,),
            ("json object",)),
        Bad("apply_tracking_event-null-event", "select storeops.apply_tracking_event(%s, null, 'webhook')", (t,),
            ("json object",)),
        Bad("apply_tracking_event-unknown-awb", "select storeops.apply_tracking_event(%s, %s, 'webhook')",
            (t, Jsonb({"awb": "NOSUCHAWB", "shipment_status_id": 7})), ("no shipment", "NOSUCHAWB"), ("P0",)),
        # -- domains ----------------------------------------------------------------------------------------
        Bad("record_domain_verification-unknown-domain",
            "select storeops.record_domain_verification(%s, true, null, null, '[]')", (rnd,),
            ("custom domain", "does not exist"), ("P0",)),
        Bad("record_domain_verification-null-domain",
            "select storeops.record_domain_verification(null, false, true, 'x', '[]')", (),
            ("custom domain", "does not exist"), ("P0",)),
        Bad("record_domain_verification-null-success",
            "select storeops.record_domain_verification(%s, null, null, null, '[]')", (w["domain"],), ("success",)),
        Bad("record_ssl_check-bad-status", "select storeops.record_ssl_check(%s, 'green', null, null, null)",
            (w["domain"],), ("ssl status",)),
        Bad("record_ssl_check-null-status", "select storeops.record_ssl_check(%s, null, null, null, null)",
            (w["domain"],), ("ssl status",)),
        Bad("record_ssl_check-unknown-domain", "select storeops.record_ssl_check(%s, 'active', null, null, null)",
            (rnd,), ("custom domain", "does not exist"), ("P0",)),
        # -- runner support ---------------------------------------------------------------------------------
        Bad("delete_processed_webhooks-unknown-table", "select storeops.delete_processed_webhooks('orders')", (),
            ("unknown table", "orders")),
        Bad("delete_processed_webhooks-null-table", "select storeops.delete_processed_webhooks(null)", (),
            ("unknown table",)),
        Bad("delete_processed_webhooks-negative-limit",
            "select storeops.delete_processed_webhooks('payment_webhooks', interval '1 day', -1)", (),
            ("limit", "negative")),
        Bad("raise_alert-null-kind", "select storeops.raise_alert(null, null, '{}')", (), ("kind",)),
        Bad("raise_alert-blank-kind", "select storeops.raise_alert(' ', null, '{}')", (), ("kind",)),
        Bad("claim_alerts-negative-limit", "select * from storeops.claim_alerts('w', -1)", (), ("limit", "negative")),
        Bad("claim_scheduler_tick-null-job", "select storeops.claim_scheduler_tick(null, interval '5 min', 'w')", (),
            ("job",)),
        Bad("claim_scheduler_tick-null-every", "select storeops.claim_scheduler_tick('j', null, 'w')", (),
            ("tick_at",)),
        Bad("claim_scheduler_tick-zero-every", "select storeops.claim_scheduler_tick('j', interval '0', 'w')", (),
            ("stride",)),
    ]


def _run(c: psycopg.Connection, case: Bad):
    with c.transaction():  # a savepoint: a failed call leaves the test's transaction usable
        return c.execute(case.sql, case.params).fetchall()


CASE_IDS = [case.id for case in _cases({k: uuid.uuid4() for k in ("tenant", "pending", "paid", "shipment", "domain",
                                                                     "hook", "retry")})]


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_raises_a_clear_error(conn, world, case_id):
    case = next(c for c in _cases(world) if c.id == case_id)
    with pytest.raises(psycopg.Error) as info:
        result = _run(conn, case)
        pytest.fail(f"{case.id}: succeeded silently with {result!r}")
    exc = info.value
    state = exc.sqlstate or ""
    message = exc.diag.message_primary or str(exc)
    assert state[:2] in case.classes, f"{case.id}: SQLSTATE {state} ({message})"
    assert not state.startswith("XX"), f"{case.id}: internal error {state}: {message}"
    for word in case.words:
        assert word.lower() in message.lower(), f"{case.id}: message {message!r} does not name {word!r}"



def _snapshot(c: psycopg.Connection) -> tuple:
    return c.execute("""
        select (select jsonb_agg(q order by q.id) from storeops.operation_retry_queue q),
               (select count(*) from storeops.alerts), (select count(*) from storeops.payment_webhooks),
               (select count(*) from storeops.shipping_webhooks), (select count(*) from storeops.refunds)""").fetchone()


@pytest.mark.parametrize(("sql", "expected"), [
    ("select storeops.complete_operation_retry(%(rnd)s, 1)", False),
    ("select storeops.complete_operation_retry(null, null)", False),
    ("select storeops.complete_operation_retries(null, null)", 0),
    ("select storeops.fail_operation_retry(%(rnd)s, 1, 'x')", None),
    ("select storeops.fail_operation_retry(null, null, null)", None),
    ("select storeops.release_operation_retries(null)", 0),
    ("select storeops.record_shipping_webhook_failure(%(rnd)s, 'x')", None),
    ("select count(*) from storeops.get_pending_retries(-1)", 0),
    ("select storeops.process_payment_webhooks(-1)", 0),
    ("select storeops.process_shipping_webhooks(-1)", 0),
    ("select storeops.get_tenant_for_awb(null, null)", None),
    ("select storeops.get_tenant_for_awb('  ', '  ')", None),
    ("select storeops.get_tenant_for_razorpay_order(null)", None),
    ("select storeops.mark_alerts_delivered(null)", 0),
    ("select storeops.record_missed_payments(null)", 0),
    ("select storeops.record_missed_payment('{\"id\": \"pay_Created000001\", \"status\": \"created\"}')", None),
], ids=lambda v: v if isinstance(v, str) else None)
def test_documented_nothing_answers_change_nothing(conn, world, sql, expected):
    """Where "nothing there" has a documented answer (false, NULL, 0), that is the answer, and no row
    anywhere changed."""
    before = _snapshot(conn)
    assert _run(conn, Bad("x", sql, {"rnd": uuid.uuid4()}))[0][0] == expected
    assert _snapshot(conn) == before


# -- bugs: garbage that succeeds silently, pinned ----------------------------------------------------------
@pytest.fixture
def due_rows(conn, world):
    """Three more due retry rows (four with the world's), and a processed webhook received a minute ago."""
    conn.execute("reset role")
    for _ in range(3):
        conn.execute("select storeops.enqueue_operation(%s, 'refund_create', %s, '{}', now() - interval '1 s')",
                     (world["tenant"], uuid.uuid4()))
    conn.execute("insert into storeops.payment_webhooks (tenant_id, event_id, webhook_type, payload, processed, "
                 "processed_at, created_at) values (%s, 'evt_BadInputNew001', 'payment.captured', '{}', true, now(), "
                 "now() - interval '1 minute')", (world["tenant"],))
    conn.execute("insert into storeops.alerts (kind, details) values ('operation_failed', '{}')")
    conn.execute("set local role storeops_runner")
    return 4


SILENT = [
    Bad("claim_operation_retries-null-worker", "select count(*) from storeops.claim_operation_retries(null, 10)"),
    Bad("claim_operation_retries-null-limit", "select count(*) from storeops.claim_operation_retries('w', null)"),
    Bad("claim_operation_retries-zero-lease",
        "select count(*) from storeops.claim_operation_retries('w', 10, interval '0')"),
    Bad("claim_operation_retries-negative-lease",
        "select count(*) from storeops.claim_operation_retries('w', 10, interval '-5 minutes')"),
    Bad("claim_alerts-null-worker", "select count(*) from storeops.claim_alerts(null)"),
    Bad("delete_processed_webhooks-negative-age",
        "select storeops.delete_processed_webhooks('payment_webhooks', interval '-1 day')"),
    Bad("delete_processed_webhooks-null-age", "select storeops.delete_processed_webhooks('payment_webhooks', null)"),
    Bad("delete_processed_webhooks-null-limit",
        "select storeops.delete_processed_webhooks('payment_webhooks', interval '0', null)"),
]


@pytest.mark.parametrize("case", SILENT, ids=[c.id for c in SILENT])
def test_garbage_arguments_are_refused_not_silently_used(conn, world, due_rows, case):
    with pytest.raises(psycopg.Error) as info:
        result = _run(conn, case)
        pytest.fail(f"{case.id}: succeeded silently with {result!r}")
    assert (info.value.sqlstate or "")[:2] in ALLOWED_CLASSES


def test_current_tenant_id_with_claims_that_are_not_json_says_so(conn, world):
    conn.execute("select set_config('request.jwt.claims', 'not json', true)")
    with pytest.raises(psycopg.Error) as info:
        _run(conn, Bad("claims", "select storeops.current_tenant_id()"))
    message = info.value.diag.message_primary or ""
    assert info.value.sqlstate == "22P02"
    assert "json" in message.lower() and "<NULL>" not in message, message


def test_current_tenant_id_with_a_non_uuid_tenant_names_it(conn, world):
    conn.execute("""select set_config('request.jwt.claims', '{"tenant_id": "nope"}', true)""")
    with pytest.raises(psycopg.Error) as info:
        _run(conn, Bad("claims", "select storeops.current_tenant_id()"))
    assert info.value.sqlstate == "22P02"
    assert "nope" in info.value.diag.message_primary and "uuid" in info.value.diag.message_primary
