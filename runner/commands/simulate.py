"""`storeops simulate`: signed, realistic traffic against a running storeops (a demo and a load)."""

from __future__ import annotations

import asyncio
import secrets
import time

import psycopg

from runner.config import Settings, resolve_database_url


def register(sub) -> None:
    p = sub.add_parser("simulate", help="send signed, realistic Razorpay and Shiprocket webhooks to a running storeops")
    p.add_argument("--url", default=None, help="storeops base URL (default http://127.0.0.1:$STOREOPS_HTTP_PORT)")
    p.add_argument("--orders", type=int, default=100, help="orders to create and play through (default 100)")
    p.add_argument("--concurrency", type=int, default=16, help="connections at once (default 16)")
    p.add_argument("--rate", type=float, default=0.0, help="requests per second cap (default: as fast as it can)")
    p.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable run")
    p.add_argument("--wait", type=float, default=30.0, help="seconds to wait for every order to settle (default 30)")
    p.set_defaults(func=cmd_simulate)


def cmd_simulate(args) -> int:
    from runner.simulate import deliver, plan_traffic, seed_demo

    settings = Settings.from_env()
    base = args.url or f"http://127.0.0.1:{settings.http_port}"
    rzp_secret, sr_token = "whsec_" + secrets.token_hex(16), "sr_" + secrets.token_hex(16)
    with psycopg.connect(resolve_database_url(settings), autocommit=True, connect_timeout=5) as conn:
        tenant, orders = seed_demo(conn, args.orders, razorpay_secret=rzp_secret, shiprocket_token=sr_token,
                                   seed=args.seed)
    deliveries = plan_traffic(tenant, orders, rzp_secret, sr_token, seed=args.seed)
    print(f"tenant {tenant}: {len(orders)} orders, {len(deliveries)} webhook deliveries to {base}")
    result = asyncio.run(deliver(base, deliveries, concurrency=args.concurrency, rate=args.rate))
    print(f"sent {result['requests']} in {result['seconds']} s ({result['per_second']}/s), "
          f"ack p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, statuses {result['statuses']}")
    deadline = time.monotonic() + args.wait
    with psycopg.connect(resolve_database_url(settings), autocommit=True, connect_timeout=5) as conn:
        while True:
            rows = conn.execute("select status, count(*) from storeops.orders where tenant_id = %s group by 1 order by 1",
                                (tenant,)).fetchall()
            pending = conn.execute(
                """select (select count(*) from storeops.payment_webhooks where tenant_id = %s and not processed)
                        + (select count(*) from storeops.shipping_webhooks where tenant_id = %s and not processed)""",
                (tenant, tenant)).fetchone()[0]
            if pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    print("orders by status: " + ", ".join(f"{s}={n}" for s, n in rows) + f"; unprocessed webhooks: {pending}")
    return 0 if pending == 0 and set(result["statuses"]) <= {200} else 1
