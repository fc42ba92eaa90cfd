"""Section 3: apply throughput. ~100,000 stored, unprocessed, mixed events (payment.authorized,
payment.captured, refund.created, refund.processed, Shiprocket scans through DELIVERED or RTO),
built by runner.simulate.plan_traffic for seeded orders and shipments and COPYed into
payment_webhooks / shipping_webhooks (the COPY is the baseline: the write ceiling), are applied by
calling storeops.process_payment_webhooks(N) / process_shipping_webhooks(N) until both return 0,
from two connections in parallel, as two workers do. Then the final state is checked against the
plan."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime, timedelta

import orjson
import psycopg

from bench.common import Section, Sizes, seed_tenant
from bench.env import BenchEnv, CpuMeter
from runner import shiprocket
from runner.simulate import plan_traffic

TARGET_RATE = 10_000
EVENTS_PER_ORDER = 6.25  # 2 payment events, 10% refunds (+2), 4 scans (5% RTO: 5)
BATCH = 500  # the worker's webhook_batch


def build_rows(tenant) -> tuple[list[tuple], list[tuple], dict]:
    deliveries = plan_traffic(tenant.tenant_id, tenant.orders, tenant.razorpay_secret, tenant.shiprocket_token,
                              duplicate_rate=0.0, seed=5)
    start = datetime.now(UTC) - timedelta(hours=1)
    pay, ship, seen = [], [], set()
    plan = {"refund_orders": 0, "rto_orders": 0}
    refund_payments, rto_awbs = set(), set()
    for i, d in enumerate(deliveries):
        payload = orjson.loads(d.body)
        created = start + timedelta(microseconds=10 * i)  # arrival order, as the worker claims it
        if "razorpay-webhook" in d.path:
            event_id = d.headers["x-razorpay-event-id"]
            if event_id in seen:
                continue
            seen.add(event_id)
            pay.append((tenant.tenant_id, event_id, payload["event"], d.body.decode(), created))
            if payload["event"].startswith("refund."):
                refund_payments.add(payload["payload"]["refund"]["entity"]["payment_id"])
        else:
            event_id = shiprocket.event_key(payload)
            if event_id in seen:
                continue
            seen.add(event_id)
            ship.append((tenant.tenant_id, event_id, shiprocket.webhook_type(payload), d.body.decode(), created))
            if payload["shipment_status"].startswith("RTO"):
                rto_awbs.add(payload["awb"])
    plan["refund_orders"] = len(refund_payments)
    plan["rto_orders"] = len(rto_awbs)
    plan["orders"] = len(tenant.orders)
    return pay, ship, plan


def copy_rows(url: str, pay: list[tuple], ship: list[tuple]) -> float:
    """COPY every row (one transaction, committed): the write ceiling. Returns seconds."""
    cols = "(tenant_id, event_id, webhook_type, payload, created_at)"
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"copy storeops.payment_webhooks {cols} from stdin") as copy:
                for row in pay:
                    copy.write_row(row)
            with cur.copy(f"copy storeops.shipping_webhooks {cols} from stdin") as copy:
                for row in ship:
                    copy.write_row(row)
        conn.commit()
    return time.perf_counter() - started


def apply_all(url: str, workers: int = 2, batch: int = BATCH) -> dict:
    """Each worker: payments until 0, then shipments until 0, again until a pass does nothing."""
    handled = [0] * workers
    calls = [0] * workers
    per_fn: dict[str, list[float]] = {"process_payment_webhooks": [0.0, 0.0], "process_shipping_webhooks": [0.0, 0.0]}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                while True:
                    did = 0
                    for fn in ("process_payment_webhooks", "process_shipping_webhooks"):
                        while True:
                            t = time.perf_counter()
                            n = conn.execute(f"select storeops.{fn}(%s)", (batch,)).fetchone()[0]
                            with lock:
                                per_fn[fn][0] += n
                                per_fn[fn][1] += time.perf_counter() - t
                            calls[k] += 1
                            did += n
                            if n == 0:
                                break
                    handled[k] += did
                    if did == 0:
                        return
        except BaseException as exc:  # noqa: BLE001 (reported by the caller)
            errors.append(exc)

    started = time.perf_counter()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return {"seconds": time.perf_counter() - started, "handled": sum(handled), "calls": sum(calls),
            "per_worker": handled,
            # events per second of one connection's time inside each function (2 connections ran at once)
            "per_function": {fn: {"events": int(v[0]), "connection_seconds": round(v[1], 2),
                                  "events_per_connection_second": round(v[0] / v[1], 1) if v[1] else None}
                             for fn, v in per_fn.items()}}


def check_state(url: str, tenant_id: str, plan: dict) -> dict:
    checks = {
        "orders": "select count(*) from storeops.orders where tenant_id = %(t)s",
        "orders_delivered": "select count(*) from storeops.orders where tenant_id = %(t)s and status = 'delivered'",
        "orders_cancelled": "select count(*) from storeops.orders where tenant_id = %(t)s and status = 'cancelled'",
        "orders_paid_in_full": "select count(*) from storeops.orders where tenant_id = %(t)s "
                               "and amount_paid = amount and paid_at is not null",
        "payment_captured": "select count(*) from storeops.orders where tenant_id = %(t)s and payment_status = 'captured'",
        "payment_partially_refunded": "select count(*) from storeops.orders where tenant_id = %(t)s "
                                      "and payment_status = 'partially_refunded'",
        "refunds_processed": "select count(*) from storeops.refunds where tenant_id = %(t)s and status = 'processed'",
        "reconciliation_matched": "select count(*) from storeops.payment_reconciliation where tenant_id = %(t)s "
                                  "and status = 'matched'",
        "shipments_delivered": "select count(*) from storeops.shiprocket_shipments where tenant_id = %(t)s "
                               "and status = 'DELIVERED'",
        "shipments_rto_delivered": "select count(*) from storeops.shiprocket_shipments where tenant_id = %(t)s "
                                   "and status = 'RTO DELIVERED'",
        "unprocessed": "select (select count(*) from storeops.payment_webhooks where not processed)"
                       " + (select count(*) from storeops.shipping_webhooks where not processed)",
        "failed_attempts": "select (select count(*) from storeops.payment_webhooks where attempts > 0)"
                           " + (select count(*) from storeops.shipping_webhooks where attempts > 0)",
        "retry_queue_rows": "select count(*) from storeops.operation_retry_queue",
    }
    with psycopg.connect(url, autocommit=True) as conn:
        got = {name: conn.execute(sql, {"t": tenant_id}).fetchone()[0] for name, sql in checks.items()}
    n, refunds, rto = plan["orders"], plan["refund_orders"], plan["rto_orders"]
    want = {
        "orders": n, "orders_delivered": n - rto, "orders_cancelled": rto, "orders_paid_in_full": n,
        "payment_captured": n - refunds, "payment_partially_refunded": refunds, "refunds_processed": refunds,
        "reconciliation_matched": n, "shipments_delivered": n - rto, "shipments_rto_delivered": rto,
        "unprocessed": 0, "failed_attempts": 0, "retry_queue_rows": 0,
    }
    wrong = {k: {"got": got[k], "want": want[k]} for k in want if got[k] != want[k]}
    return {"got": got, "want": want, "wrong": wrong}


def function_profile(url: str, limit: int = 10) -> list[dict]:
    """Where the apply's time went inside Postgres: pg_stat_user_functions (track_functions = pl,
    set on this database only), by self time."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            """select schemaname || '.' || funcname, calls, round(total_time::numeric, 1), round(self_time::numeric, 1)
               from pg_stat_user_functions order by self_time desc limit %s""", (limit,)).fetchall()
    return [{"function": f, "calls": c, "total_ms": float(t), "self_ms": float(st)} for f, c, t, st in rows]


def run(env: BenchEnv, sizes: Sizes, section: Section) -> dict:
    url = env.new_database("apply")
    with psycopg.connect(url, autocommit=True) as conn:  # a per-function profile of the apply, this database only
        conn.execute(f'alter database "{url.rsplit("/", 1)[1]}" set track_functions = \'pl\'')
    tenant = seed_tenant(url, max(10, int(sizes.apply_events / EVENTS_PER_ORDER)), seed=3)
    pay, ship, plan = build_rows(tenant)
    total = len(pay) + len(ship)
    copy_seconds = copy_rows(url, pay, ship)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("analyze storeops.payment_webhooks")
        conn.execute("analyze storeops.shipping_webhooks")
    meter = CpuMeter({"postgres": {env.postmaster_pid()}, "harness": {os.getpid()}}).start()
    result = apply_all(url)
    section.cpu["apply (2 connections)"] = meter.stop()
    state = check_state(url, tenant.tenant_id, plan)
    profile = function_profile(url)
    rate = total / result["seconds"]
    copy_rate = total / copy_seconds
    section.add("events applied to final state", rate, "/s", baseline=copy_rate,
                baseline_label="COPY of the same rows (write ceiling)", target=f">= {TARGET_RATE:,}/s",
                met=rate >= TARGET_RATE and not state["wrong"])
    section.add("events", float(total), "", target="~100,000 mixed" if not env.smoke else "")
    section.add("final state matches the plan", float(len(state["want"]) - len(state["wrong"])), "checks",
                baseline=float(len(state["want"])), baseline_label="checks", target="all", met=not state["wrong"])
    if state["wrong"]:
        section.notes.append("FINAL STATE MISMATCH: " + ", ".join(
            f"{k} got {v['got']} want {v['want']}" for k, v in state["wrong"].items()))
    details = {"events": total, "payment_events": len(pay), "shipping_events": len(ship), "plan": plan,
               "copy_seconds": round(copy_seconds, 2), "apply_seconds": round(result["seconds"], 2),
               "calls": result["calls"], "per_worker": result["per_worker"], "per_function": result["per_function"],
               "batch": BATCH, "state": state["got"], "function_profile": profile}
    return {"details": details}
