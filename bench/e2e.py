"""Section 2: end-to-end latency at a sustained rate: from the webhook's 2xx reaching the sender to
the order row's update being committed.

A small raw asyncio HTTP/1.1 client (keep-alive connections, requests released on a fixed
schedule) sends one signed payment.captured per order to `storeops serve --processes N`; each
event turns its order paid. The cluster runs with track_commit_timestamp, so
pg_xact_commit_timestamp(orders.xmin) is the moment the worker's update of that order committed
(visible to everyone). Latency = that commit time - the time the client read the 2xx, both on this
machine's clock. The seed's design applied webhooks from a 5-minute cron: 300 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time

import orjson
import psycopg

from bench.common import Section, Sizes, seed_tenant
from bench.env import BenchEnv, CpuMeter
from runner.simulate import payment_entity, payment_event, rzp_id, sign

TARGET_P99_MS = 50.0
SEED_CRON_SECONDS = 300.0


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


async def _drive(host: str, port: int, raw: list[bytes], rate: float,
                 connections: int) -> list[tuple[int, float, float, int]]:
    """Send raw[i] at start + i/rate over `connections` keep-alive connections. Returns, per
    request answered, (index, wall time sent, wall time the response was read, status)."""
    results: list[tuple[int, float, float, int] | None] = [None] * len(raw)
    queue: asyncio.Queue[int | None] = asyncio.Queue()

    async def conn_worker():
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                i = await queue.get()
                if i is None:
                    return
                sent = time.time()
                writer.write(raw[i])
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                results[i] = (i, sent, time.time(), status)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    workers = [asyncio.create_task(conn_worker()) for _ in range(connections)]
    start = time.perf_counter()
    for i in range(len(raw)):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait(i)
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    return [r for r in results if r is not None]


def _requests(tenant, orders, host: str) -> tuple[list[bytes], list[str]]:
    raw, events = [], []
    path = f"/functions/v1/razorpay-webhook/{tenant.tenant_id}"
    for _uuid, rzp_order, amount, _awb in orders:
        body = orjson.dumps(payment_event("payment.captured", payment_entity(rzp_id("pay"), rzp_order, amount,
                                                                              "captured")))
        event_id = rzp_id("evt")
        head = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Razorpay-Signature: {sign(body, tenant.razorpay_secret)}\r\n"
                f"X-Razorpay-Event-Id: {event_id}\r\n\r\n").encode()
        raw.append(head + body)
        events.append(event_id)
    return raw, events


def _run_client(port: int, raw: list[bytes], rate: float, connections: int):
    coro = _drive("127.0.0.1", port, raw, rate, connections)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run(env: BenchEnv, sizes: Sizes, section: Section) -> dict:
    url = env.new_database("e2e")
    n = int(sizes.e2e_rate * sizes.e2e_seconds)
    warm = max(50, int(sizes.e2e_rate))  # one second of traffic first, not measured
    tenant = seed_tenant(url, n + warm, seed=11)
    runner = env.start_runner(url, "e2e-serve")
    memory = {}
    try:
        raw_w, _ = _requests(tenant, tenant.orders[:warm], "127.0.0.1")
        _run_client(runner.port, raw_w, sizes.e2e_rate, 16)
        orders = tenant.orders[warm:]
        raw, events = _requests(tenant, orders, "127.0.0.1")
        with psycopg.connect(url, autocommit=True) as conn:
            commits0 = conn.execute("select xact_commit from pg_stat_database where datname = current_database()"
                                    ).fetchone()[0]
        meter = CpuMeter({"runner": {runner.proc.pid}, "postgres": {env.postmaster_pid()},
                          "client+harness": {os.getpid()}}).start()
        started = metered = time.perf_counter()
        results = _run_client(runner.port, raw, sizes.e2e_rate, 16)
        send_seconds = time.perf_counter() - started
        # let the workers finish what is stored, then read when each order's update committed
        deadline = time.monotonic() + 60
        with psycopg.connect(url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                left = conn.execute("select count(*) from storeops.payment_webhooks where not processed").fetchone()[0]
                if left == 0:
                    break
                time.sleep(0.1)
            cpu = meter.stop()
            metered = time.perf_counter() - metered
            commits = conn.execute("select xact_commit from pg_stat_database where datname = current_database()"
                                   ).fetchone()[0] - commits0
            rows = conn.execute(
                """select o.id::text, extract(epoch from pg_xact_commit_timestamp(o.xmin))::float8, o.status
                   from storeops.orders o where o.tenant_id = %s""", (tenant.tenant_id,)).fetchall()
            hooks = conn.execute(
                """select event_id, extract(epoch from processed_at - created_at)::float8 * 1000, processed
                   from storeops.payment_webhooks where tenant_id = %s""", (tenant.tenant_id,)).fetchall()
        memory["e2e"] = runner.peak_rss_mb()
    finally:
        env.stop_service(runner)
    section.cpu[f"storeops serve at {sizes.e2e_rate:g}/s"] = cpu

    committed = {oid: (ts, status) for oid, ts, status in rows}
    by_event = {e: o[0] for e, o in zip(events, orders, strict=True)}
    lat, acks, missing, not_paid = [], [], 0, 0
    for i, sent, got, status in results:
        event_id = events[i]
        acks.append((got - sent) * 1000)
        if not 200 <= status < 300:
            continue
        ts, order_status = committed.get(by_event[event_id], (None, None))
        if ts is None:
            missing += 1
            continue
        if order_status != "paid":
            not_paid += 1
        lat.append((ts - got) * 1000)
    hook_ms = [ms for _e, ms, processed in hooks if processed and ms is not None]
    ok = sum(1 for r in results if 200 <= r[3] < 300)
    p50, p99 = _pct(lat, 0.50), _pct(lat, 0.99)
    details = {
        "rate_offered": sizes.e2e_rate, "rate_achieved": round(len(results) / send_seconds, 1), "requests": len(results),
        "2xx": ok, "orders_updated": len(lat), "orders_missing": missing, "orders_not_paid": not_paid,
        "e2e_ms": {"p50": p50, "p90": _pct(lat, 0.90), "p99": p99, "max": max(lat) if lat else None,
                   "negative_share": round(sum(1 for x in lat if x < 0) / len(lat), 3) if lat else None},
        "ack_ms": {"p50": _pct(acks, 0.5), "p99": _pct(acks, 0.99)},
        "created_to_processed_ms": {"p50": _pct(hook_ms, 0.5), "p99": _pct(hook_ms, 0.99)},
        "processes": env.processes,
        # transactions the database committed while the events were sent and applied: intake batches,
        # NOTIFYs and the workers' passes (each wake-up runs its statements in their own transactions)
        "db_commits": commits, "db_commits_per_webhook": round(commits / max(1, ok), 1),
        "postgres_cpu_us_per_webhook": round(1e6 * cpu.get("postgres", 0.0) * metered / max(1, ok)),
    }
    section.add("2xx → order update committed, p50", p50, "ms", baseline=SEED_CRON_SECONDS * 1000,
                baseline_label="seed design: 5-minute cron (300 s)", higher_is_better=False)
    section.add("2xx → order update committed, p99", p99, "ms", baseline=SEED_CRON_SECONDS * 1000,
                baseline_label="seed design: 5-minute cron (300 s)", target=f"< {TARGET_P99_MS:g} ms",
                met=p99 is not None and p99 < TARGET_P99_MS and missing == 0, higher_is_better=False)
    section.add("rate sustained", details["rate_achieved"], "/s", target=f"{sizes.e2e_rate:g}/s offered")
    section.add("acknowledgement p99 at this rate", details["ack_ms"]["p99"], "ms", higher_is_better=False)
    section.add("webhook created_at → processed_at p99 (DB clock, transaction starts)",
                details["created_to_processed_ms"]["p99"], "ms", higher_is_better=False)
    if missing or not_paid:
        section.notes.append(f"{missing} acknowledged events had no committed order update and {not_paid} orders "
                             "were not paid at the end.")
    return {"memory": memory, "details": details}
