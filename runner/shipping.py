"""Shipping service: the polling fallback for shipments Shiprocket's webhooks went quiet about.

Never holds a transaction across HTTP: list the stale shipments (one short transaction), ask
Shiprocket (no transaction), then apply each result in its own short transaction through
storeops.apply_tracking_event, the same SQL the webhooks go through.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from runner.shiprocket import ShiprocketClient, poll_result_to_event

log = logging.getLogger(__name__)

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


async def poll_stale_shipments(pool: AsyncConnectionPool, client: ShiprocketClient,
                               older_than_hours: float = 6, limit: int = 200) -> int:
    """Refreshes shipments with no update for `older_than_hours` from Shiprocket's batch tracking API.

    Returns how many shipments got new history or a new status. Shipments Shiprocket has no data
    for yet (`track_status: 0`) are marked polled and tried again after the next interval. A
    Shiprocket error (ShiprocketError) propagates after nothing was marked, so the next run
    tries the same shipments again.
    """
    stale = await list_stale_shipments(pool, older_than_hours, limit)
    if not stale:
        return 0
    tracking = await client.track_awbs([s.awb for s in stale])
    changed = 0
    for shipment in stale:
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
    async with pool.connection() as conn:
        await conn.execute(RECORD_POLLED, {"ids": [s.id for s in stale]})
    return changed
