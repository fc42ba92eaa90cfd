"""Helpers shared by tests (import as `from support import ...`)."""

from __future__ import annotations

import uuid

import psycopg


def make_tenant(c: psycopg.Connection, name: str = "Test Store") -> uuid.UUID:
    return c.execute("insert into storeops.tenants (name) values (%s) returning id", (name,)).fetchone()[0]


def make_order(c: psycopg.Connection, tenant_id, amount: int = 50_000, currency: str = "INR",
               razorpay_order_id: str | None = None) -> uuid.UUID:
    return c.execute(
        "insert into storeops.orders (tenant_id, amount, currency, razorpay_order_id) values (%s, %s, %s, %s) returning id",
        (tenant_id, amount, currency, razorpay_order_id),
    ).fetchone()[0]


def as_tenant(c: psycopg.Connection, tenant_id, via: str = "setting") -> None:
    """Act as the tenant-scoped role for the rest of the transaction."""
    c.execute("set local role storeops_tenant")
    if via == "jwt":
        c.execute("select set_config('request.jwt.claims', %s, true)", (f'{{"tenant_id": "{tenant_id}"}}',))
    else:
        c.execute("select set_config('storeops.tenant_id', %s, true)", (str(tenant_id),))


def as_runner(c: psycopg.Connection) -> None:
    c.execute("set local role storeops_runner")


def roll_back_to_before(url: str, migration: str) -> None:
    """Roll `url`'s database back to just before `migration` (and every newer one), as an upgrade
    from then would find it: a test stores what that database held, then applies them again."""
    from runner import migrate

    applied = migrate.state(url).applied
    assert migrate.rollback(url, len(applied) - applied.index(migration))[-1] == migration


def refused(c: psycopg.Connection, sql: str, args=None, error: type[psycopg.Error] = psycopg.Error,
            sqlstate: str | None = None) -> psycopg.Error:
    """The statement must fail with `error` (and `sqlstate`, when given); a savepoint keeps the
    transaction usable. Returns the error."""
    import pytest

    c.execute("savepoint refused")
    with pytest.raises(error) as caught:
        c.execute(sql, args)
    c.execute("rollback to savepoint refused")
    if sqlstate is not None:
        assert caught.value.sqlstate == sqlstate, caught.value
    return caught.value
