"""Operator commands: health, cleanup, cron install, refund, verify-domain."""

from __future__ import annotations

import asyncio
import decimal
from pathlib import Path

import httpx
import psycopg

from runner.cli import UserError
from runner.config import Settings, resolve_database_url
from runner.scheduler import CLEANUP_BATCH


def register(sub) -> None:
    h = sub.add_parser("health", help="check DNS resolver, Razorpay, Shiprocket and the database once; print a table")
    h.set_defaults(func=cmd_health)

    c = sub.add_parser("cleanup", help="delete processed webhooks older than 90 days, in batches")
    c.add_argument("--older-than", default="90 days", help="age (a Postgres interval, default '90 days')")
    c.add_argument("--batch", type=int, default=CLEANUP_BATCH,
                   help=f"rows per committed batch (default {CLEANUP_BATCH}); it deletes at most a third of the time")
    c.set_defaults(func=cmd_cleanup)

    cron = sub.add_parser("cron", help="pg_cron schedules for the SQL-only jobs (install|list|remove)")
    cron.add_argument("action", choices=["install", "list", "remove"])
    cron.set_defaults(func=cmd_cron)

    r = sub.add_parser("refund", help="refund an order through Razorpay (never twice for one idempotency key)")
    r.add_argument("--tenant", required=True, help="tenant uuid")
    r.add_argument("--order", required=True, help="order uuid")
    r.add_argument("--amount", required=True, help="amount in major units, e.g. 1000.00 (rupees)")
    r.add_argument("--reason", default=None)
    r.add_argument("--idempotency-key", default=None, help="re-use to retry the same refund safely")
    r.set_defaults(func=cmd_refund)

    v = sub.add_parser("verify-domain", help="verify a custom domain's DNS now and log the attempt")
    v.add_argument("domain", help="domain name or custom_domains id")
    v.set_defaults(func=cmd_verify_domain)


async def _with_ctx(fn):
    from runner.context import Context
    from runner.db import open_pool

    settings = Settings.from_env()
    pool = await open_pool(resolve_database_url(settings), min_size=1, max_size=4, name="cli", timeout=5)
    try:
        await pool.wait(timeout=5)
    except Exception as exc:
        await pool.close()
        raise UserError(f"cannot reach the database ({exc.__class__.__name__}): check DATABASE_URL or run "
                        "'storeops db start'") from exc
    ctx = Context(settings=settings, pool=pool, http=httpx.AsyncClient(timeout=10.0))
    try:
        return await fn(ctx)
    finally:
        await ctx.http.aclose()
        await pool.close()


def cmd_health(args) -> int:
    from runner.commands.status import print_table
    from runner.health import run_checks

    results = asyncio.run(_with_ctx(run_checks))
    print_table("Health", ["check_type", "status", "response_time_ms", "error"],
                [(r.check_type, r.status, r.response_time_ms, r.error or "") for r in results])
    return 0 if all(r.status != "down" for r in results) else 1


def cmd_cleanup(args) -> int:
    from runner.scheduler import cleanup

    n = asyncio.run(_with_ctx(lambda ctx: cleanup(ctx, args.older_than, args.batch)))
    print(f"deleted {n} processed webhook(s) older than {args.older_than}; unprocessed ones are kept")
    return 0


CRON_DIR = Path(__file__).resolve().parent.parent.parent / "sql" / "cron"


def cmd_cron(args) -> int:
    url = resolve_database_url()
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        available = conn.execute("select 1 from pg_available_extensions where name = 'pg_cron'").fetchone()
        if not available:
            raise UserError("pg_cron is not installed on this server (Debian: postgresql-15-cron)")
        try:
            conn.execute("create extension if not exists pg_cron")
        except psycopg.Error as exc:
            raise UserError(f"cannot create extension pg_cron here: {exc.diag.message_primary} "
                            "(pg_cron must be in shared_preload_libraries and cron.database_name must be this database)") from exc
        if args.action == "install":
            files = sorted(CRON_DIR.glob("*.sql"))
            for f in files:
                conn.execute(f.read_text())
            print(f"installed {len(files)} pg_cron schedule(s) from {CRON_DIR}")
        elif args.action == "remove":
            n = conn.execute("select count(cron.unschedule(jobname)) from cron.job where jobname like 'storeops-%'").fetchone()[0]
            print(f"removed {n} pg_cron schedule(s)")
        rows = conn.execute("select jobname, schedule, command from cron.job where jobname like 'storeops-%' order by 1").fetchall()
        for name, schedule, command in rows:
            print(f"  {name:32} {schedule:12} {command}")
    return 0


def cmd_refund(args) -> int:
    from runner import payments, razorpay

    try:
        paise = razorpay.amount_to_paise(decimal.Decimal(args.amount))
    except (ValueError, decimal.DecimalException) as exc:
        raise UserError(f"--amount: {exc}") from exc

    async def go(ctx):
        try:
            client = await ctx.tenant_razorpay_client(args.tenant)
        except ValueError as exc:
            raise UserError(str(exc)) from exc
        try:
            return await payments.create_refund(ctx.pool, client, args.tenant, args.order, paise, args.reason,
                                                args.idempotency_key)
        except psycopg.Error as exc:
            raise UserError(exc.diag.message_primary or str(exc)) from exc

    result = asyncio.run(_with_ctx(go))
    for k, v in result.items():
        print(f"{k}: {v}")
    return 0 if result.get("status") != "failed" else 1


def cmd_verify_domain(args) -> int:
    from runner import dns_check, domains

    async def go(ctx):
        async with ctx.pool.connection() as conn:
            try:
                import uuid

                uuid.UUID(args.domain)
                row = await (await conn.execute("select id from storeops.custom_domains where id = %s",
                                                (args.domain,))).fetchone()
            except ValueError:
                try:
                    name = dns_check.normalize_domain(args.domain)
                except ValueError as exc:
                    raise UserError(str(exc)) from exc
                rows = await (await conn.execute(
                    "select id, tenant_id, status from storeops.custom_domains where domain = %s "
                    "order by status in ('verified', 'at_risk') desc, created_at", (name,))).fetchall()
                if len(rows) > 1:  # several stores have a claim on it (migration 0061): say which to check
                    claims = ", ".join(f"{r[0]} (tenant {r[1]}, {r[2]})" for r in rows)
                    raise UserError(f"{len(rows)} stores have a claim on {name}; give the domain id of one: {claims}") from None
                row = rows[0] if rows else None
        if row is None:
            raise UserError(f"no custom domain {args.domain!r}")
        return await domains.verify_and_record(ctx.pool, ctx.settings, str(row[0]), manual=True)

    result = asyncio.run(_with_ctx(go))
    for k, v in result.items():
        if k not in ("records", "dns_records"):
            print(f"{k}: {v}")
    return 0 if result.get("success") else 1
