"""runner.payments end to end: the database (committed, a fresh one per test), the fake Razorpay
server, and the service functions the HTTP handler, CLI and worker call."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import fakes.razorpay_server as fake_razorpay
import psycopg
import pytest
from fakes.razorpay_server import FakeRazorpay, razorpay_id, store_webhook, webhook_event
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool
from support import make_order, make_tenant

from runner import payments
from runner.razorpay import RazorpayClient, RazorpayError

razorpay_server = fake_razorpay.razorpay_server  # fixture

T0 = 1_735_700_000


@pytest.fixture
async def pool(fresh_db):
    async with AsyncConnectionPool(fresh_db, min_size=1, max_size=10, open=False) as p:
        yield p


@pytest.fixture
async def client(razorpay_server):
    async with RazorpayClient(razorpay_server.url, razorpay_server.key_id, razorpay_server.key_secret,
                              timeout=0.5, retries=2, backoff=0.01) as c:
        yield c


def _the(client: RazorpayClient):
    """A client_for (tenant id -> client) that gives every tenant the same client."""
    async def client_for(tenant_id) -> RazorpayClient:
        return client
    return client_for


def paid_order(db_url: str, server: FakeRazorpay, amount: int = 50_000, tenant_id=None) -> dict:
    """A tenant's order, paid at Razorpay (the fake knows the payment) and through its webhook."""
    with psycopg.connect(db_url, autocommit=True) as c:
        tenant_id = tenant_id or make_tenant(c)
        rzp_order = razorpay_id("order")
        order_id = make_order(c, tenant_id, amount=amount, razorpay_order_id=rzp_order)
        payment = server.add_payment(amount=amount, order_id=rzp_order, created_at=T0)
        webhook_id = store_webhook(c, webhook_event("payment.captured", payment=payment), tenant_id)
        assert c.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,)).fetchone()[0] == "applied"
    return {"tenant_id": tenant_id, "order_id": order_id, "rzp_order": rzp_order, "pay_id": payment["id"]}


def query(db_url: str, sql: str, *params) -> list[dict]:
    with psycopg.connect(db_url) as c, c.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql, params).fetchall()


def retries(db_url: str, refund_id) -> list[dict]:
    return query(db_url, "select status, attempts, last_error, payload from storeops.operation_retry_queue "
                         "where operation_type = 'refund_create' and operation_id = %s::uuid", str(refund_id))


async def test_create_refund_records_razorpays_refund(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    refund = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "Customer requested")

    [made] = razorpay_server.refunds
    assert (refund["status"], refund["razorpay_refund_id"], refund["amount"]) == ("processed", made["id"], 20_000)
    assert "note" not in refund
    [sent] = razorpay_server.requests_to("POST", "/refund")
    body = json.loads(sent.body)
    assert body["amount"] == 20_000
    assert body["notes"]["idempotency_key"] == refund["idempotency_key"] == sent.headers["X-Refund-Idempotency"]
    [order] = query(fresh_db, "select refund_amount, payment_status from storeops.orders where id = %s", shop["order_id"])
    assert order == {"refund_amount": 20_000, "payment_status": "partially_refunded"}
    # The safety net queued when it was recorded is there, due later; running it would be a no-op.
    [net] = retries(fresh_db, refund["id"])
    assert (net["status"], net["attempts"]) == ("pending", 0)

    # Razorpay's own refund.* webhooks for it arrive afterwards: still one refund row.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for event in razorpay_server.events:
            store_webhook(c, event, shop["tenant_id"])
    assert await payments.process_payment_webhooks(pool) == 2
    rows = query(fresh_db, "select id, status, source from storeops.refunds where order_id = %s", shop["order_id"])
    assert [(str(r["id"]), r["status"], r["source"]) for r in rows] == [(refund["id"], "processed", "api")]


async def test_the_same_idempotency_key_makes_one_refund(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    first = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "dup",
                                         idempotency_key="admin-click-0001")
    again = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "dup",
                                         idempotency_key="admin-click-0001")
    assert again["id"] == first["id"] and "already requested" in again["note"]
    assert len(razorpay_server.refunds) == 1
    assert len(razorpay_server.requests_to("POST", "/refund")) == 1


async def test_a_gateway_outage_leaves_it_pending_then_the_retry_makes_exactly_one(fresh_db, pool, client,
                                                                                    razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    razorpay_server.fail_next(3, 503)  # the client's first try and both quick retries
    refund = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "late")
    assert refund["status"] == "pending" and refund["razorpay_refund_id"] is None
    assert "will be retried" in refund["note"] and "503" in refund["error"]
    [queued] = retries(fresh_db, refund["id"])
    assert (queued["status"], queued["attempts"], queued["payload"]) == ("pending", 1, {"refund_id": refund["id"]})
    assert razorpay_server.refunds == []

    await payments.retry_refund(pool, client, refund["id"])
    [made] = razorpay_server.refunds
    [row] = query(fresh_db, "select status, razorpay_refund_id, error from storeops.refunds where id = %s::uuid",
                  refund["id"])
    assert row == {"status": "processed", "razorpay_refund_id": made["id"], "error": None}
    keys = {r.headers["X-Refund-Idempotency"] for r in razorpay_server.requests_to("POST", "/refund")}
    assert keys == {refund["idempotency_key"]}
    await payments.retry_refund(pool, client, refund["id"])  # settled: nothing is sent again
    assert len(razorpay_server.refunds) == 1


async def test_timeouts_after_razorpay_made_the_refund_never_make_a_second(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    razorpay_server.delay_next(3, seconds=0.8)  # Razorpay refunds, but every answer comes too late
    refund = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "slow")
    assert refund["status"] == "pending"
    assert len(razorpay_server.refunds) == 1  # made at the first request, not again on the retries

    await payments.retry_refund(pool, client, refund["id"])
    [made] = razorpay_server.refunds
    [row] = query(fresh_db, "select status, razorpay_refund_id from storeops.refunds where id = %s::uuid", refund["id"])
    assert row == {"status": "processed", "razorpay_refund_id": made["id"]}


async def test_retry_refund_raises_a_retryable_error_while_razorpay_is_down(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    razorpay_server.fail_next(6, 500)
    refund = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "x")
    with pytest.raises(RazorpayError) as info:
        await payments.retry_refund(pool, client, refund["id"])
    assert info.value.retryable
    [row] = query(fresh_db, "select status from storeops.refunds where id = %s::uuid", refund["id"])
    assert row["status"] == "pending"


async def test_a_refusal_marks_the_refund_failed(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    razorpay_server.payments[shop["pay_id"]]["amount_refunded"] = 50_000  # refunded in the dashboard meanwhile
    refund = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "x")
    assert refund["status"] == "failed" and "fully refunded already" in refund["error"]
    assert "refused" in refund["note"]
    [order] = query(fresh_db, "select refund_amount from storeops.orders where id = %s", shop["order_id"])
    assert order["refund_amount"] == 0
    await payments.retry_refund(pool, client, refund["id"])  # a failed refund is not sent again
    assert len(razorpay_server.requests_to("POST", "/refund")) == 1


@pytest.mark.parametrize(("case", "http_status"), [("zero", 400), ("other_tenant", 404), ("unpaid", 409),
                                                   ("too_much", 422)])
async def test_refusals_by_our_checks_carry_the_http_status(fresh_db, pool, client, razorpay_server, case, http_status):
    shop = paid_order(fresh_db, razorpay_server)
    tenant_id, order_id, amount = shop["tenant_id"], shop["order_id"], 1_000
    with psycopg.connect(fresh_db, autocommit=True) as c:
        if case == "other_tenant":
            tenant_id = make_tenant(c, "Another store")
        elif case == "unpaid":
            order_id = make_order(c, tenant_id, razorpay_order_id=razorpay_id("order"))
    if case == "zero":
        amount = 0
    elif case == "too_much":
        amount = 50_001
    with pytest.raises(payments.RefundRejected) as info:
        await payments.create_refund(pool, client, tenant_id, order_id, amount, "x")
    assert info.value.http_status == http_status
    assert razorpay_server.requests == []


async def test_concurrent_create_refund_calls_never_exceed_the_capture(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)

    async def ask():
        try:
            return await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 20_000, "x")
        except payments.RefundRejected as exc:
            return exc

    outcomes = await asyncio.gather(*(ask() for _ in range(8)))
    made = [o for o in outcomes if isinstance(o, dict)]
    refused = [o for o in outcomes if isinstance(o, payments.RefundRejected)]
    assert len(made) == 2 and all(o["status"] == "processed" for o in made)
    assert len(refused) == 6 and {o.http_status for o in refused} == {422}
    assert sum(r["amount"] for r in razorpay_server.refunds) == 40_000


async def test_recover_missed_payments_pages_through_and_applies_only_what_never_arrived(
        fresh_db, pool, client, razorpay_server):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant_id = make_tenant(c)
        orders = []
        for n in range(130):
            rzp_order = razorpay_id("order")
            orders.append((make_order(c, tenant_id, amount=10_000 + n, razorpay_order_id=rzp_order), rzp_order))
    delivered = 0
    with psycopg.connect(fresh_db, autocommit=True) as c:
        for n, (_, rzp_order) in enumerate(orders):
            payment = razorpay_server.add_payment(amount=10_000 + n, order_id=rzp_order, created_at=T0 + n)
            if n % 4 == 0:  # these webhooks did arrive
                store_webhook(c, webhook_event("payment.captured", payment=payment), tenant_id)
                delivered += 1
            if n % 10 == 0:  # a failed first attempt before the capture
                razorpay_server.add_payment(amount=10_000 + n, order_id=rzp_order, status="failed", created_at=T0 + n)
    stranger = razorpay_server.add_payment(amount=777, order_id=razorpay_id("order"), created_at=T0 + 500)
    razorpay_server.add_payment(status="created", created_at=T0 + 501)  # nothing happened yet: skipped
    await payments.process_payment_webhooks(pool)

    new = await payments.recover_missed_payments(pool, client, T0 - 60, T0 + 3600, tenant_id=tenant_id)
    assert new == (130 - delivered) + 13 + 1
    assert len(razorpay_server.requests_to("GET", "/v1/payments")) == 2  # 145 payments: two pages of <= 100
    [counts] = query(fresh_db, "select count(*) filter (where status = 'paid') as paid, count(*) as total "
                               "from storeops.orders where tenant_id = %s", tenant_id)
    assert counts == {"paid": 130, "total": 130}
    [unknown] = query(fresh_db, "select tenant_id, reason from storeops.payment_reconciliation "
                                "where razorpay_payment_id = %s", stranger["id"])
    assert unknown == {"tenant_id": tenant_id, "reason": "unknown_order"}
    [left] = query(fresh_db, "select count(*) as n from storeops.payment_webhooks where not processed")
    assert left["n"] == 0

    assert await payments.recover_missed_payments(pool, client, T0 - 60, T0 + 3600, tenant_id=tenant_id) == 0


async def _pending_refunds(fresh_db, pool, client, server, amounts: list[int]) -> tuple[dict, list[dict]]:
    """A paid order and refunds of `amounts` that Razorpay took but has not finished (pending under
    a rfnd_ id), made an hour ago, so their webhooks have had their chance."""
    server.refund_status = "pending"
    shop = paid_order(fresh_db, server)
    refunds = [await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], amount, "late")
               for amount in amounts]
    assert all(r["status"] == "pending" and r["razorpay_refund_id"] for r in refunds)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("update storeops.refunds set created_at = created_at - interval '1 hour'")
    return shop, refunds


def _refund_rows(db_url: str) -> dict[str, dict]:
    return {r["razorpay_refund_id"]: r for r in query(
        db_url, "select razorpay_refund_id, status, processed_at, error, gateway_checked_at from storeops.refunds")}


async def test_recover_missed_refunds_applies_what_razorpay_settled_after_its_webhook_was_lost(
        fresh_db, pool, client, razorpay_server):
    shop, (done, failed, waiting) = await _pending_refunds(fresh_db, pool, client, razorpay_server,
                                                           [10_000, 10_000, 10_000])
    razorpay_server.settle_refund(done["razorpay_refund_id"], "processed")
    razorpay_server.settle_refund(failed["razorpay_refund_id"], "failed")

    async def client_for(tenant_id):
        assert str(tenant_id) == str(shop["tenant_id"])
        return client

    assert await payments.recover_missed_refunds(pool, client_for) == 2
    assert len(razorpay_server.requests_to("GET", "/v1/refunds/")) == 3
    rows = _refund_rows(fresh_db)
    assert rows[done["razorpay_refund_id"]]["status"] == "processed"
    assert rows[done["razorpay_refund_id"]]["processed_at"] is not None
    assert rows[failed["razorpay_refund_id"]]["status"] == "failed"
    assert rows[waiting["razorpay_refund_id"]]["status"] == "pending"
    assert all(r["gateway_checked_at"] is not None for r in rows.values())
    [order] = query(fresh_db, "select refund_amount, payment_status from storeops.orders where id = %s", shop["order_id"])
    assert order == {"refund_amount": 10_000, "payment_status": "partially_refunded"}
    # Through the same SQL as a real webhook, and kept as one.
    recovered = query(fresh_db, "select event_id, webhook_type, processed, outcome from storeops.payment_webhooks "
                                "where event_id like 'recovered:%%' order by webhook_type")
    assert recovered == [
        {"event_id": f"recovered:{failed['razorpay_refund_id']}:failed", "webhook_type": "refund.failed",
         "processed": True, "outcome": "applied"},
        {"event_id": f"recovered:{done['razorpay_refund_id']}:processed", "webhook_type": "refund.processed",
         "processed": True, "outcome": "applied"}]
    # The failed refund's amount can be refunded again; the pending one still counts as committed.
    with pytest.raises(payments.RefundRejected) as refused:
        await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 30_001, "too much")
    assert refused.value.http_status == 422
    razorpay_server.refund_status = "processed"
    again = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 30_000, "the rest")
    assert again["status"] == "processed"

    # Asked about within the last 6 hours: not asked again (a normal refund takes days).
    asked = len(razorpay_server.requests_to("GET", "/v1/refunds/"))
    assert await payments.recover_missed_refunds(pool, client_for) == 0
    assert len(razorpay_server.requests_to("GET", "/v1/refunds/")) == asked
    # Once that is over, the one still pending is asked about again, and settles then.
    razorpay_server.settle_refund(waiting["razorpay_refund_id"], "processed")
    assert await payments.recover_missed_refunds(pool, client_for, recheck=timedelta(0)) == 1
    assert len(razorpay_server.requests_to("GET", "/v1/refunds/")) == asked + 1
    assert _refund_rows(fresh_db)[waiting["razorpay_refund_id"]]["status"] == "processed"

    # Razorpay's own webhook, late after all: a duplicate, nothing moves.
    entity = dict(razorpay_server.refunds[0], status="processed")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        store_webhook(c, webhook_event("refund.processed", refund=entity), shop["tenant_id"])
    await payments.process_payment_webhooks(pool)
    [late] = query(fresh_db, "select outcome from storeops.payment_webhooks where webhook_type = 'refund.processed' "
                             "and event_id not like 'recovered:%%'")
    assert late == {"outcome": "duplicate"}
    [order] = query(fresh_db, "select refund_amount from storeops.orders where id = %s", shop["order_id"])
    assert order == {"refund_amount": 50_000}  # 10,000 + 10,000 + 30,000, not the one that failed


async def test_recover_missed_refunds_stops_while_razorpay_is_down_and_resumes_after(
        fresh_db, pool, client, razorpay_server):
    shop, made = await _pending_refunds(fresh_db, pool, client, razorpay_server, [20_000, 10_000])
    for refund in made:
        razorpay_server.settle_refund(refund["razorpay_refund_id"], "processed")

    client_for = _the(client)

    razorpay_server.fail_next(5, 503, path="/v1/refunds/")  # more than the client's own retries
    assert await payments.recover_missed_refunds(pool, client_for) == 0
    razorpay_server.clear_faults()
    # The run stops at the first refund (its 3 tries) instead of waiting out every one of them.
    assert len(razorpay_server.requests_to("GET", "/v1/refunds/")) == 3
    rows = _refund_rows(fresh_db)
    assert sorted((r["status"], r["gateway_checked_at"]) for r in rows.values()) == [("pending", None)] * 2
    assert await payments.recover_missed_refunds(pool, client_for) == 2  # asked first once Razorpay is back
    assert {r["status"] for r in _refund_rows(fresh_db).values()} == {"processed"}


async def test_a_refund_with_no_api_key_to_ask_with_waits_its_turn(fresh_db, pool, client, razorpay_server):
    shop, (refund,) = await _pending_refunds(fresh_db, pool, client, razorpay_server, [20_000])
    razorpay_server.settle_refund(refund["razorpay_refund_id"], "processed")

    client_for = _the(client)

    async def no_key(tenant_id):
        raise ValueError("no Razorpay API key is configured")

    # No key will not appear within the hour: it counts as asked, and waits its 6 hours like any other.
    assert await payments.recover_missed_refunds(pool, no_key) == 0
    assert _refund_rows(fresh_db)[refund["razorpay_refund_id"]]["gateway_checked_at"] is not None
    assert await payments.recover_missed_refunds(pool, client_for) == 0
    assert razorpay_server.requests_to("GET", "/v1/refunds/") == []
    assert await payments.recover_missed_refunds(pool, client_for, recheck=timedelta(0)) == 1
    assert _refund_rows(fresh_db)[refund["razorpay_refund_id"]]["status"] == "processed"


async def test_a_refund_razorpay_answers_badly_about_waits_its_turn_and_stops_no_other(
        fresh_db, pool, client, razorpay_server):
    shop, (unknown, odd, good) = await _pending_refunds(fresh_db, pool, client, razorpay_server,
                                                        [5_000, 5_000, 5_000])
    with psycopg.connect(fresh_db, autocommit=True) as c:  # made under a key that no longer answers for it
        c.execute("update storeops.refunds set razorpay_refund_id = 'rfnd_NotAtThisKey01' where id = %s",
                  (unknown["id"],))
    with razorpay_server._lock:  # a status we do not know
        next(r for r in razorpay_server.refunds if r["id"] == odd["razorpay_refund_id"])["status"] = "reversed"
    razorpay_server.settle_refund(good["razorpay_refund_id"], "processed")

    client_for = _the(client)

    assert await payments.recover_missed_refunds(pool, client_for) == 1
    rows = _refund_rows(fresh_db)
    assert rows[good["razorpay_refund_id"]]["status"] == "processed"
    for rfnd in ("rfnd_NotAtThisKey01", odd["razorpay_refund_id"]):  # a 400, and an answer we cannot record
        assert rows[rfnd]["status"] == "pending"
        assert rows[rfnd]["gateway_checked_at"] is not None  # asked: not first in line again next hour


async def test_refunds_to_recover_are_pending_sent_and_past_their_grace(fresh_db, pool, client, razorpay_server):
    shop, (old,) = await _pending_refunds(fresh_db, pool, client, razorpay_server, [5_000])
    young = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 5_000, "just now")
    razorpay_server.fail_next(5, 503, path="/refund")
    unsent = await payments.create_refund(pool, client, shop["tenant_id"], shop["order_id"], 5_000, "not confirmed")
    razorpay_server.clear_faults()
    assert unsent["razorpay_refund_id"] is None
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("update storeops.refunds set created_at = now() - interval '1 hour' where id = %s", (unsent["id"],))
        due = c.execute("select razorpay_refund_id from storeops.list_refunds_to_recover()").fetchall()
        assert due == [(old["razorpay_refund_id"],)]  # not the young one, not the one Razorpay never confirmed
        assert c.execute("select count(*) from storeops.list_refunds_to_recover(interval '0')").fetchone() == (2,)
        assert young["razorpay_refund_id"] in [r[0] for r in c.execute(
            "select razorpay_refund_id from storeops.list_refunds_to_recover(interval '0')")]

        # What Razorpay answers must be about the refund asked for.
        other = dict(razorpay_server.refunds[0], id="rfnd_NotThisOne0001", status="processed")
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="expected"):
            c.execute("select storeops.record_refund_check(%s, %s)", (old["id"], Jsonb(other)))
        # Still pending there: only the time of asking is kept.
        c.execute("select storeops.record_refund_check(%s, %s)",
                  (old["id"], Jsonb(dict(razorpay_server.refunds[0], status="pending"))))
        assert c.execute("select status, gateway_checked_at is not null from storeops.refunds where id = %s",
                         (old["id"],)).fetchone() == ("pending", True)
        assert c.execute("select count(*) from storeops.payment_webhooks where event_id like 'recovered:%'").fetchone() == (0,)


async def test_the_hourly_recovery_job_settles_refunds_even_without_a_platform_api_key(
        fresh_db, pool, client, razorpay_server):
    import httpx

    from runner.config import Settings
    from runner.context import Context
    from runner.scheduler import JOBS

    shop, (refund,) = await _pending_refunds(fresh_db, pool, client, razorpay_server, [15_000])
    razorpay_server.settle_refund(refund["razorpay_refund_id"], "failed")
    with psycopg.connect(fresh_db, autocommit=True) as c:  # the tenant's own API key, as refunds use
        c.execute("insert into storeops.tenant_secrets (tenant_id, kind, key_id, secret) "
                  "values (%s, 'razorpay_api', %s, %s)", (shop["tenant_id"], razorpay_server.key_id,
                                                           razorpay_server.key_secret))
    job = next(j for j in JOBS if j.name == "payment_recovery")
    async with httpx.AsyncClient() as http:
        ctx = Context(settings=Settings(razorpay_api_base=razorpay_server.url), pool=pool, http=http)
        outcome = await job.run(ctx, None)
    assert outcome == ("payments skipped: RAZORPAY_KEY_ID not set; 0 payment(s) linked to their order; "
                       "1 refund outcome(s) recovered")
    assert _refund_rows(fresh_db)[refund["razorpay_refund_id"]]["status"] == "failed"


async def test_the_hourly_recovery_job_still_settles_refunds_when_the_payment_listing_fails(
        fresh_db, pool, client, razorpay_server):
    import httpx

    from runner.config import Settings
    from runner.context import Context
    from runner.scheduler import JOBS

    shop, (refund,) = await _pending_refunds(fresh_db, pool, client, razorpay_server, [15_000])
    razorpay_server.settle_refund(refund["razorpay_refund_id"], "processed")
    razorpay_server.fail_next(20, 500, path="/v1/payments")  # every try of the payment listing
    job = next(j for j in JOBS if j.name == "payment_recovery")
    async with httpx.AsyncClient() as http:
        settings = Settings(razorpay_api_base=razorpay_server.url, razorpay_key_id=razorpay_server.key_id,
                            razorpay_key_secret=razorpay_server.key_secret)
        outcome = await job.run(Context(settings=settings, pool=pool, http=http), None)
    assert outcome.startswith("payments failed: RazorpayError")
    assert outcome.endswith("; 0 payment(s) linked to their order; 1 refund outcome(s) recovered")
    assert _refund_rows(fresh_db)[refund["razorpay_refund_id"]]["status"] == "processed"


def _cancel(db_url: str, *order_ids) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("update storeops.orders set status = 'cancelled' where id = any (%s)", (list(order_ids),))


def _opt_in(db_url: str, tenant_id) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("update storeops.tenants set auto_refund_cancelled_since = now() - interval '1 day' where id = %s", (tenant_id,))


async def test_cancelled_orders_of_a_tenant_that_opted_in_are_refunded_once(fresh_db, pool, client, razorpay_server):
    returned = paid_order(fresh_db, razorpay_server, amount=50_000)
    tenant = returned["tenant_id"]
    partly = paid_order(fresh_db, razorpay_server, amount=80_000, tenant_id=tenant)
    kept = paid_order(fresh_db, razorpay_server, amount=30_000, tenant_id=tenant)  # delivered: not cancelled
    other = paid_order(fresh_db, razorpay_server, amount=40_000)  # another tenant, not opted in
    await payments.create_refund(pool, client, tenant, partly["order_id"], 30_000, "shipping kept back")
    _cancel(fresh_db, returned["order_id"], partly["order_id"], other["order_id"])
    _opt_in(fresh_db, tenant)

    client_for = _the(client)

    assert await payments.refund_cancelled_orders(pool, client_for) == (2, 0)
    sent = {(json.loads(r.body)["amount"], r.headers["X-Refund-Idempotency"])
            for r in razorpay_server.requests_to("POST", "/refund")}
    by_order = {row["order_id"]: row for row in query(
        fresh_db, "select order_id, amount, status, idempotency_key, reason from storeops.refunds "
                  "where reason = %s", payments.AUTO_REFUND_REASON)}
    assert set(by_order) == {returned["order_id"], partly["order_id"]}
    assert by_order[returned["order_id"]]["amount"] == 50_000
    assert by_order[partly["order_id"]]["amount"] == 50_000  # 80,000 paid, 30,000 refunded before
    assert {row["status"] for row in by_order.values()} == {"processed"}
    assert {(a, k) for a, k in sent if k.startswith("cancelled-")} == {
        (50_000, f"cancelled-{returned['order_id']}"), (50_000, f"cancelled-{partly['order_id']}")}
    assert query(fresh_db, "select order_id from storeops.refunds_owed") == [{"order_id": other["order_id"]}]
    [kept_order] = query(fresh_db, "select refund_amount from storeops.orders where id = %s", kept["order_id"])
    assert kept_order == {"refund_amount": 0}

    # Again: nothing is owed by an opted-in tenant any more, and nothing is sent.
    before = len(razorpay_server.requests_to("POST", "/refund"))
    assert await payments.refund_cancelled_orders(pool, client_for) == (0, 0)
    assert len(razorpay_server.requests_to("POST", "/refund")) == before


async def test_an_automatic_refund_razorpay_refuses_is_not_asked_again(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    _cancel(fresh_db, shop["order_id"])
    _opt_in(fresh_db, shop["tenant_id"])

    client_for = _the(client)

    razorpay_server.fail_next(1, 400)
    assert await payments.refund_cancelled_orders(pool, client_for) == (0, 1)
    [row] = query(fresh_db, "select owed, auto_refund_status from storeops.refunds_owed")
    assert row == {"owed": 50_000, "auto_refund_status": "failed"}  # still owed: a person takes it from here
    [alert] = query(fresh_db, "select details->>'order_id' as order_id from storeops.alerts where kind = 'refund_failed'")
    assert alert["order_id"] == str(shop["order_id"])
    assert await payments.refund_cancelled_orders(pool, client_for) == (0, 0)
    assert len(razorpay_server.requests_to("POST", "/refund")) == 1


async def test_concurrent_runs_make_one_automatic_refund_per_order(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server)
    _cancel(fresh_db, shop["order_id"])
    _opt_in(fresh_db, shop["tenant_id"])

    client_for = _the(client)

    results = await asyncio.gather(*(payments.refund_cancelled_orders(pool, client_for) for _ in range(4)))
    assert sum(made for made, _ in results) >= 1
    assert len(razorpay_server.refunds) == 1
    [row] = query(fresh_db, "select count(*) as n, sum(amount) as amount from storeops.refunds")
    assert row == {"n": 1, "amount": 50_000}


async def test_the_refund_cancelled_orders_job_uses_the_tenants_key_and_skips_tenants_without_one(
        fresh_db, pool, razorpay_server):
    import httpx

    from runner.config import Settings
    from runner.context import Context
    from runner.scheduler import JOBS

    keyed = paid_order(fresh_db, razorpay_server)
    keyless = paid_order(fresh_db, razorpay_server, amount=20_000)
    _cancel(fresh_db, keyed["order_id"], keyless["order_id"])
    _opt_in(fresh_db, keyed["tenant_id"])
    _opt_in(fresh_db, keyless["tenant_id"])
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("insert into storeops.tenant_secrets (tenant_id, kind, key_id, secret) values (%s, 'razorpay_api', %s, %s)",
                  (keyed["tenant_id"], razorpay_server.key_id, razorpay_server.key_secret))
    job = next(j for j in JOBS if j.name == "refund_cancelled_orders")
    async with httpx.AsyncClient() as http:  # no platform API key: only the tenant with its own key can refund
        outcome = await job.run(Context(settings=Settings(razorpay_api_base=razorpay_server.url), pool=pool, http=http), None)
    assert outcome == "1 cancelled order(s) refunded; 1 left for a person or the next run"
    owed = query(fresh_db, "select order_id, owed from storeops.refunds_owed")
    assert owed == [{"order_id": keyless["order_id"], "owed": 20_000}]


async def test_tenants_take_turns_and_orders_that_cannot_be_refunded_wait(fresh_db, pool, client, razorpay_server):
    keyless = [paid_order(fresh_db, razorpay_server, amount=10_000)]  # a tenant with no API key to refund with
    keyless += [paid_order(fresh_db, razorpay_server, amount=10_000, tenant_id=keyless[0]["tenant_id"]) for _ in range(2)]
    keyed = paid_order(fresh_db, razorpay_server, amount=20_000)
    _cancel(fresh_db, *(o["order_id"] for o in keyless))
    _cancel(fresh_db, keyed["order_id"])  # cancelled last: the oldest three are the keyless tenant's
    _opt_in(fresh_db, keyless[0]["tenant_id"])
    _opt_in(fresh_db, keyed["tenant_id"])

    async def client_for(tenant_id):
        if tenant_id == keyed["tenant_id"]:
            return client
        raise ValueError("no Razorpay API key for this tenant")

    # Each tenant's first order comes before anyone's second: the keyed tenant's refund goes out now.
    assert await payments.refund_cancelled_orders(pool, client_for, limit=2) == (1, 1)
    [made] = razorpay_server.refunds
    assert made["amount"] == 20_000
    assert await payments.refund_cancelled_orders(pool, client_for, limit=2) == (0, 2)  # the other two
    waiting = query(fresh_db, "select auto_attempts, auto_error, auto_retry_at > now() + interval '50 minutes' as later "
                              "from storeops.refunds_owed order by order_id")
    assert waiting == [{"auto_attempts": 1, "auto_error": "no Razorpay API key for this tenant", "later": True}] * 3
    assert await payments.refund_cancelled_orders(pool, client_for, limit=2) == (0, 0)  # nothing due for an hour


async def test_only_orders_cancelled_after_the_tenant_opted_in_are_refunded_automatically(
        fresh_db, pool, client, razorpay_server):
    backlog = paid_order(fresh_db, razorpay_server)
    _cancel(fresh_db, backlog["order_id"])  # before the opt-in: perhaps settled outside Razorpay
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("update storeops.tenants set auto_refund_cancelled_since = clock_timestamp() where id = %s",
                  (backlog["tenant_id"],))
    fresh = paid_order(fresh_db, razorpay_server, amount=30_000, tenant_id=backlog["tenant_id"])
    _cancel(fresh_db, fresh["order_id"])
    assert await payments.refund_cancelled_orders(pool, _the(client)) == (1, 0)
    [made] = razorpay_server.refunds
    assert made["amount"] == 30_000
    owed = query(fresh_db, "select order_id, owed, auto_refund from storeops.refunds_owed")
    assert owed == [{"order_id": backlog["order_id"], "owed": 50_000, "auto_refund": False}]


async def test_a_cancelled_order_with_two_captures_is_left_to_a_person(fresh_db, pool, client, razorpay_server):
    shop = paid_order(fresh_db, razorpay_server, amount=50_000)
    with psycopg.connect(fresh_db, autocommit=True) as c:  # the customer paid twice (a duplicate capture)
        second = razorpay_server.add_payment(amount=50_000, order_id=shop["rzp_order"], created_at=T0 + 60)
        webhook_id = store_webhook(c, webhook_event("payment.captured", payment=second), shop["tenant_id"])
        c.execute("select storeops.apply_payment_webhook(%s)", (webhook_id,))
    _cancel(fresh_db, shop["order_id"])
    _opt_in(fresh_db, shop["tenant_id"])

    client_for = _the(client)

    assert await payments.refund_cancelled_orders(pool, client_for) == (0, 1)
    [row] = query(fresh_db, "select owed, auto_attempts, auto_error from storeops.refunds_owed")
    assert row["owed"] == 100_000 and row["auto_attempts"] == 1 and "no single payment" in row["auto_error"]
    assert razorpay_server.refunds == []
