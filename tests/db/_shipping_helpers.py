"""Helpers for the shipping tests: shipments, stored webhooks, and reading back what a user sees."""

from __future__ import annotations

import uuid

import psycopg
from psycopg.types.json import Jsonb


def make_shipment(c: psycopg.Connection, tenant_id, order_id, awb: str | None = None,
                  sr_order_id: str | None = None, channel_order_id: str | None = None,
                  is_return: bool = False) -> uuid.UUID:
    return c.execute(
        """insert into storeops.shiprocket_shipments (tenant_id, order_id, awb, sr_order_id, channel_order_id, is_return)
           values (%s, %s, %s, %s, %s, %s) returning id""",
        (tenant_id, order_id, awb, sr_order_id, channel_order_id, is_return),
    ).fetchone()[0]


def store_webhook(c: psycopg.Connection, tenant_id, payload: dict, event_id: str | None = None) -> uuid.UUID:
    from runner.shiprocket import event_key, webhook_type

    return c.execute(
        """insert into storeops.shipping_webhooks (tenant_id, event_id, webhook_type, payload)
           values (%s, %s, %s, %s) returning id""",
        (tenant_id, event_id or event_key(payload), webhook_type(payload), Jsonb(payload)),
    ).fetchone()[0]


def apply_event(c: psycopg.Connection, tenant_id, payload: dict, source: str = "webhook") -> str:
    return c.execute("select storeops.apply_tracking_event(%s, %s, %s)", (tenant_id, Jsonb(payload), source)).fetchone()[0]


def shipment_state(c: psycopg.Connection, shipment_id) -> tuple:
    return c.execute(
        "select status, status_code, is_terminal, last_event_at from storeops.shiprocket_shipments where id = %s",
        (shipment_id,),
    ).fetchone()


def order_status(c: psycopg.Connection, order_id) -> str:
    return c.execute("select status from storeops.orders where id = %s", (order_id,)).fetchone()[0]


def set_order_status(c: psycopg.Connection, order_id, status: str) -> None:
    c.execute("update storeops.orders set status = %s where id = %s", (status, order_id))


def history(c: psycopg.Connection, shipment_id) -> list[tuple]:
    return c.execute(
        """select "timestamp", status, status_code, location, unknown_status
           from storeops.shipping_tracking_updates where shipment_id = %s
           order by "timestamp", status, location""",
        (shipment_id,),
    ).fetchall()
