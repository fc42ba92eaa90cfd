"""Worker handlers for the retry-queue operation types that need network I/O. (Webhook
re-application is pure SQL: storeops.run_webhook_retries.)"""

from __future__ import annotations

from runner.registry import RetryLater, operation


def _retry_after(exc: BaseException) -> float | None:
    value = getattr(exc, "retry_after", None)
    return float(value) if value is not None else None


@operation("refund_create")
async def refund_create(ctx, row: dict) -> None:
    """Re-send a pending refund to Razorpay with its original idempotency key."""
    from runner import payments

    refund_id = (row.get("payload") or {}).get("refund_id") or str(row["operation_id"])
    client = await ctx.tenant_razorpay_client(row.get("tenant_id"))
    try:
        await payments.retry_refund(ctx.pool, client, refund_id)
    except Exception as exc:
        if getattr(exc, "retryable", True):
            raise RetryLater(str(exc), _retry_after(exc)) from exc
        raise


@operation("domain_verify")
async def domain_verify(ctx, row: dict) -> None:
    """Verify a domain again. Its outcome (and any next retry) is recorded by the domains SQL, so the
    claim itself is complete once the attempt is logged."""
    from runner import domains

    domain_id = (row.get("payload") or {}).get("domain_id") or str(row["operation_id"])
    try:
        await domains.verify_and_record(ctx.pool, ctx.settings, str(domain_id))
    except LookupError:
        return  # the domain was deleted: nothing left to verify


@operation("alert_post")
async def alert_post(ctx, row: dict) -> None:
    from runner.worker import post_alert

    if not ctx.settings.alert_url:
        return
    alert_id = (row.get("payload") or {}).get("alert_id") or str(row["operation_id"])
    async with ctx.pool.connection() as conn:
        found = await (await conn.execute(
            "select kind, details, created_at from storeops.alerts where id = %s", (alert_id,))).fetchone()
    if found is None:
        return
    await post_alert(ctx.http, ctx.settings.alert_url, found[0], found[1], found[2])
