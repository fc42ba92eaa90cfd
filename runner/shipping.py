"""Shipping service: the polling fallback for shipments Shiprocket's webhooks went quiet about.

Never holds a transaction across HTTP: list the stale shipments (one short transaction), ask
Shiprocket (no transaction), then apply each result in its own short transaction through
storeops.apply_tracking_event, the same SQL the webhooks go through.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runner.shiprocket import ShiprocketClient, poll_result_to_event

log = logging.getLogger(__name__)

ClientFor = Callable[[str], Awaitable[ShiprocketClient | None]]

LIST_STALE = """
select id, tenant_id, order_id, awb, status, status_code, last_event_at, last_polled_at
from storeops.list_stale_shipments(%(older_than)s, %(limit)s)
"""
APPLY_EVENT = "select storeops.apply_tracking_event(%(tenant_id)s, %(event)s, 'poll') as outcome"
RECORD_POLLED = "select storeops.record_shipments_polled(%(ids)s) as polled"


@dataclass(frozen=True)
class StaleShipment:
    id: uuid.UUID
    tenant_id: uuid.UUID
    order_id: uuid.UUID
    awb: str
    status: str
    status_code: int | None
    last_event_at: datetime | None
    last_polled_at: datetime | None


@dataclass(frozen=True)
class Outcome:
    outcome: str


async def list_stale_shipments(pool: AsyncConnectionPool, older_than_hours: float = 6,
                               limit: int = 200) -> list[StaleShipment]:
    async with pool.connection() as conn:
        async with conn.cursor(row_factory=class_row(StaleShipment)) as cur:
            await cur.execute(LIST_STALE, {"older_than": timedelta(hours=older_than_hours), "limit": limit})
            return await cur.fetchall()


async def poll_stale_shipments(pool: AsyncConnectionPool, client: ShiprocketClient | ClientFor,
                               older_than_hours: float = 6, limit: int = 200, *, budget: float = 300.0) -> int:
    """Refreshes shipments with no update for `older_than_hours` from Shiprocket's batch tracking API,
    `limit` at a time until none is left or `budget` seconds have passed (one batch an hour, as until
    session 11, saw each of more than 1,200 live shipments less often than every six hours).

    `client` is one ShiprocketClient for every shipment, or an async callable giving the client for
    a tenant (Context.tenant_shiprocket_client: the tenant's own API user, else the platform's; None
    when neither is configured). The shipments of all tenants sharing an account are asked in one
    call (50 AWBs a request); each account sees only its own shipments.

    Returns how many shipments got new history or a new status. Shipments Shiprocket has no data
    for yet (`track_status: 0`) are marked polled and tried again after the next interval. A tenant
    with no client, and an account whose call fails (ShiprocketError, HTTP; logged once), are left
    for the rest of the run, unmarked, so the next run asks again; the other accounts go on. If every
    call of the run failed, the first error is raised after the rest was done."""
    client_for = client if callable(client) and not hasattr(client, "track_awbs") else None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    clients: dict[uuid.UUID, ShiprocketClient | None] = {}  # per tenant, for this run
    broken: set[int] = set()  # id() of the clients that failed in this run
    skipped: set[uuid.UUID] = set()  # still stale, not to be asked about again in this run
    seen: set[uuid.UUID] = set()
    changed, calls, errors = 0, 0, []
    while loop.time() < deadline:
        listed = await list_stale_shipments(pool, older_than_hours, limit + len(skipped))
        stale = [s for s in listed if s.id not in skipped][:limit]
        if not stale or seen.issuperset(s.id for s in stale):
            break
        seen.update(s.id for s in stale)
        by_client: dict[int, tuple[ShiprocketClient, list[StaleShipment]]] = {}
        for shipment in stale:
            if shipment.tenant_id not in clients:
                clients[shipment.tenant_id] = (await client_for(str(shipment.tenant_id)) if client_for is not None
                                               else client)
                if clients[shipment.tenant_id] is None:
                    log.warning("no Shiprocket API user for this tenant (nor the platform's): its stale shipments "
                                "are not polled", extra={"tenant_id": str(shipment.tenant_id)})
            tenant_client = clients[shipment.tenant_id]
            if tenant_client is None or id(tenant_client) in broken:
                skipped.add(shipment.id)
                continue
            by_client.setdefault(id(tenant_client), (tenant_client, []))[1].append(shipment)
        polled: list[uuid.UUID] = []
        for key, (account, shipments) in by_client.items():
            if loop.time() >= deadline:
                skipped.update(s.id for s in shipments)
                continue
            calls += 1
            try:
                tracking = await account.track_awbs([s.awb for s in shipments])
            except Exception as exc:  # noqa: BLE001 (this account's call; the others go on)
                log.error("Shiprocket tracking failed for an API user: its shipments are asked again next run",
                          extra={"api_user": getattr(account, "email", None), "shipments": len(shipments),
                                 "tenants": len({s.tenant_id for s in shipments}),
                                 "error": f"{type(exc).__name__}: {exc}"[:300]})
                errors.append(exc)
                broken.add(key)
                skipped.update(s.id for s in shipments)
                continue
            changed += await _apply_polled(pool, shipments, tracking)
            polled.extend(s.id for s in shipments)
        if polled:
            async with pool.connection() as conn:
                await conn.execute(RECORD_POLLED, {"ids": polled})
        if len(stale) < limit:
            break
    if errors and len(errors) == calls:
        raise errors[0]
    return changed


async def _apply_polled(pool: AsyncConnectionPool, shipments: list[StaleShipment], tracking: dict) -> int:
    """Applies what Shiprocket answered for `shipments`, each in its own short transaction; returns
    how many got new history or a new status."""
    changed = 0
    for shipment in shipments:
        found = tracking.get(shipment.awb)
        event = poll_result_to_event(shipment.awb, found) if found is not None else None
        if event is None:
            continue
        try:
            async with pool.connection() as conn:
                async with conn.cursor(row_factory=class_row(Outcome)) as cur:
                    await cur.execute(APPLY_EVENT, {"tenant_id": shipment.tenant_id, "event": Jsonb(event)})
                    row = await cur.fetchone()
        except Exception:  # one bad result must not stop the others
            log.exception("could not apply polled tracking for awb %s", shipment.awb)
            continue
        if row is not None and row.outcome in ("applied", "history"):
            changed += 1
    return changed
