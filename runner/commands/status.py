"""`storeops status`: the seed's monitoring views at a glance."""

from __future__ import annotations

import psycopg

from runner.config import resolve_database_url

SECTIONS = [
    ("Unprocessed webhooks", """
        select 'razorpay' as provider, count(*) as unprocessed, min(created_at) as oldest
        from storeops.payment_webhooks where not processed
        union all
        select 'shiprocket', count(*), min(created_at) from storeops.shipping_webhooks where not processed"""),
    ("Webhooks in the last 24 h", """
        select 'razorpay' as provider, webhook_type, count(*) as total,
               count(*) filter (where processed) as processed, count(*) filter (where not processed) as pending
        from storeops.payment_webhooks where created_at > now() - interval '24 hours' group by webhook_type
        union all
        select 'shiprocket', webhook_type, count(*), count(*) filter (where processed), count(*) filter (where not processed)
        from storeops.shipping_webhooks where created_at > now() - interval '24 hours' group by webhook_type
        order by 1, 2"""),
    ("Retry queue", """
        select operation_type, status, count(*) as rows,
               count(*) filter (where status = 'pending' and next_retry_at <= now()) as due,
               min(next_retry_at) filter (where status = 'pending') as next_due
        from storeops.operation_retry_queue where status in ('pending', 'processing', 'failed')
        group by 1, 2 order by 1, 2"""),
    ("Reconciliation needing attention", """
        select status, reason, count(*) as rows, sum(received_amount - coalesce(expected_amount, 0)) as net_difference_paise
        from storeops.payment_reconciliation where status in ('pending', 'mismatch') group by 1, 2 order by 1, 2"""),
    ("Refunds owed on cancelled orders", """
        select currency, count(*) as orders, sum(owed) as owed_paise,
               count(*) filter (where auto_refund and auto_refund_id is null) as auto_refund_due,
               min(flagged_at) as oldest
        from storeops.refunds_owed group by 1 order by 1"""),
    ("Last health checks", """
        select distinct on (check_type) check_type, status, response_time_ms, error, checked_at
        from storeops.system_health_checks order by check_type, checked_at desc"""),
]


def register(sub) -> None:
    p = sub.add_parser("status", help="monitoring at a glance: backlog, 24 h stats, retries, mismatches, refunds owed, health")
    p.set_defaults(func=cmd_status)


def print_table(title: str, columns: list[str], rows: list[tuple]) -> None:
    print(f"\n== {title}")
    if not rows:
        print("  (none)")
        return
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def cmd_status(args) -> int:
    with psycopg.connect(resolve_database_url(), connect_timeout=5) as conn:
        for title, sql in SECTIONS:
            cur = conn.execute(sql)
            rows = cur.fetchall()
            print_table(title, [c.name for c in cur.description], rows)
    return 0
