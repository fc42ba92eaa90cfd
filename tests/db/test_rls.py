"""Row-level security: every storeops table, every command, as the real non-superuser roles.

storeops_tenant sees and changes only its own tenant's rows, with the tenant taken from the
Supabase/PostgREST JWT claims (`request.jwt.claims` ->> tenant_id) or else the `storeops.tenant_id`
setting; both sources are tested. What a tenant may do at all is the command array each migration
passes to storeops_private.enable_tenant_rls; anything else is "permission denied". storeops_runner
crosses tenants and can do nothing else.

TABLES below says, per table, how to make a row for tenant X and which commands each role has.
The list of tables comes from the catalog, so a table added by a later migration without an entry
here (or without RLS) fails test_every_storeops_table_has_an_rls_case.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from _sample_data import (
    insert,
    new_alert,
    new_cancelled_paid_order,
    new_custom_domain,
    new_domain_verification_log,
    new_operation_retry,
    new_operation_retry_policy,
    new_order,
    new_payment_reconciliation,
    new_payment_webhook,
    new_razorpay_payment,
    new_refund,
    new_scheduler_tick,
    new_shipping_tracking_update,
    new_shipping_webhook,
    new_shiprocket_shipment,
    new_shiprocket_status_code,
    new_system_health_check,
    new_tenant,
    new_tenant_secret,
)
from psycopg import sql
from psycopg.types.json import Jsonb

ALL = frozenset({"select", "insert", "update", "delete"})
NONE: frozenset[str] = frozenset()
SOURCES = ("jwt", "setting")


@dataclass(frozen=True)
class Case:
    """How a table behaves under RLS.

    make: column values for a new row of tenant X (inserts what the row needs first, as superuser);
      called with None for a row of no tenant where the tenant column is nullable.
    tenant_commands: the array its migration passes to enable_tenant_rls (none: tenants get nothing).
    tenant_column: the column RLS compares to the tenant; None for platform-wide tables (a tenant
      either may not read them at all or, for shared reference data, reads every row).
    runner_commands: what storeops_runner may do.
    change: a column and a new value, for update tests.
    tenant_columns: for a command the tenant has on some columns only, those columns (the rest of
      the row is written by storeops's own functions and the runner).
    move_refused: the error a tenant gets moving its row to another tenant (a trigger may refuse
      before the policy does).
    """

    make: Callable[[psycopg.Connection, Any], dict[str, Any]]
    tenant_commands: frozenset[str]
    change: tuple[str, Any]
    tenant_column: str | None = "tenant_id"
    runner_commands: frozenset[str] = ALL
    key: str = "id"
    tenant_columns: dict[str, frozenset[str]] | None = None
    move_refused: str = "new row violates row-level security policy"


TABLES: dict[str, Case] = {
    # 0001
    "tenants": Case(new_tenant, frozenset({"select", "update"}), ("name", "Renamed Store"), tenant_column="id"),
    "tenant_secrets": Case(new_tenant_secret, NONE, ("secret", "whsec_rotated")),
    # 0002
    "operation_retry_policies": Case(new_operation_retry_policy, NONE, ("max_attempts", 7), tenant_column=None,
                                     runner_commands=frozenset({"select"}), key="operation_type"),
    "operation_retry_queue": Case(new_operation_retry, frozenset({"select"}), ("last_error", "changed")),
    # 0003
    "orders": Case(new_order, ALL, ("amount", 12_345)),
    "payment_webhooks": Case(new_payment_webhook, frozenset({"select"}), ("error", "changed")),
    "payment_reconciliation": Case(new_payment_reconciliation, frozenset({"select", "update"}),
                                   ("notes", "Checked against the Razorpay settlement report")),
    "refunds": Case(new_refund, frozenset({"select"}), ("reason", "changed")),
    # 0004
    "shiprocket_shipments": Case(new_shiprocket_shipment, ALL, ("courier_name", "Blue Dart"),
                                 move_refused="belongs to another tenant"),  # 0057: its order is not B's
    "shipping_webhooks": Case(new_shipping_webhook, frozenset({"select"}), ("error", "changed")),
    "shipping_tracking_updates": Case(new_shipping_tracking_update, frozenset({"select"}), ("location", "changed")),
    # 0005
    # 0056: the verification and SSL state is written by the checks only
    "custom_domains": Case(new_custom_domain, ALL, ("auto_verify", True), tenant_columns={
        "insert": frozenset({"id", "tenant_id", "domain", "auto_verify"}), "update": frozenset({"auto_verify"})}),
    "domain_verification_logs": Case(new_domain_verification_log, frozenset({"select"}), ("error", "changed")),
    # 0006
    "system_health_checks": Case(new_system_health_check, NONE, ("status", "down"), tenant_column=None),
    # 0010
    "razorpay_payments": Case(new_razorpay_payment, frozenset({"select"}), ("method", "card")),
    # 0020: reference data every tenant reads, only migrations write.
    "shiprocket_status_codes": Case(new_shiprocket_status_code, frozenset({"select"}), ("label", "CHANGED"),
                                    tenant_column=None, runner_commands=frozenset({"select"}), key="code"),
    # 0040
    "alerts": Case(new_alert, frozenset({"select"}), ("claimed_by", "runner-x")),
    "scheduler_ticks": Case(new_scheduler_tick, NONE, ("outcome", "ok"), tenant_column=None, key="job"),
    # 0054
    "cancelled_paid_orders": Case(new_cancelled_paid_order, frozenset({"select"}), ("auto_attempts", 2),
                                  key="order_id"),
}

TENANT_TABLES = [t for t, case in TABLES.items() if case.tenant_column is not None]


# -- helpers ---------------------------------------------------------------------------------------

def _tenant(c: psycopg.Connection) -> uuid.UUID:
    return insert(c, "tenants", new_tenant(c))


def _act_as_tenant(c: psycopg.Connection, tenant_id: uuid.UUID, via: str) -> None:
    c.execute("set local role storeops_tenant")
    if via == "jwt":
        claims = {"sub": str(uuid.uuid4()), "role": "authenticated", "tenant_id": str(tenant_id)}
        c.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
    else:
        c.execute("select set_config('storeops.tenant_id', %s, true)", (str(tenant_id),))


def _table(name: str) -> sql.Composable:
    return sql.Identifier("storeops", name)


@contextlib.contextmanager
def _denied(c: psycopg.Connection, match: str = "permission denied") -> Iterator[None]:
    """The statement inside must fail with 42501; a savepoint keeps the transaction usable."""
    c.execute("savepoint denial")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match=match):
        yield
    c.execute("rollback to savepoint denial")


def _row_of(c: psycopg.Connection, table: str, tenant_id: uuid.UUID) -> Any:
    """The key of an existing row of tenant_id in table (for tenants: the tenant itself)."""
    case = TABLES[table]
    if case.tenant_column == case.key:
        return tenant_id
    return insert(c, table, case.make(c, tenant_id), case.key)


def _insert_query(table: str, values: dict[str, Any]) -> tuple[sql.Composable, dict[str, Any]]:
    key = TABLES[table].key
    query = sql.SQL("insert into {t} ({cols}) values ({vals}) returning {key}").format(
        t=_table(table), cols=sql.SQL(", ").join(map(sql.Identifier, values)),
        vals=sql.SQL(", ").join(map(sql.Placeholder, values)), key=sql.Identifier(key))
    return query, {k: Jsonb(v) if isinstance(v, dict | list) else v for k, v in values.items()}


def _keys(c: psycopg.Connection, query: sql.Composable, params: Any = None) -> set[Any]:
    return {r[0] for r in c.execute(query, params).fetchall()}


def _value(c: psycopg.Connection, table: str, column: str, key: Any) -> Any:
    case = TABLES[table]
    row = c.execute(sql.SQL("select {col} from {t} where {k} = %s").format(
        col=sql.Identifier(column), t=_table(table), k=sql.Identifier(case.key)), (key,)).fetchone()
    return None if row is None else row[0]


def _exists(c: psycopg.Connection, table: str, key: Any) -> bool:
    return c.execute(sql.SQL("select exists (select 1 from {t} where {k} = %s)").format(
        t=_table(table), k=sql.Identifier(TABLES[table].key)), (key,)).fetchone()[0]


# -- the table list comes from the catalog ---------------------------------------------------------

def _catalog_tables(c: psycopg.Connection) -> dict[str, bool]:
    rows = c.execute(
        """select c.relname, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'storeops' and c.relkind in ('r', 'p') and not c.relispartition""").fetchall()
    return dict(rows)


def test_every_storeops_table_has_an_rls_case(conn):
    catalog = _catalog_tables(conn)
    missing = sorted(set(catalog) - set(TABLES))
    assert not missing, (
        f"storeops tables without an RLS test case: {', '.join(missing)}. Add each to TABLES in "
        "tests/db/test_rls.py: how to make a row for tenant X (a new_<table> helper in tests/db/_sample_data.py) "
        "and the tenant commands its migration passes to storeops_private.enable_tenant_rls.")
    stale = sorted(set(TABLES) - set(catalog))
    assert not stale, f"TABLES in tests/db/test_rls.py names tables that no longer exist: {', '.join(stale)}"
    without_rls = sorted(name for name, rls in catalog.items() if not rls)
    assert not without_rls, f"row level security is off for: {', '.join(without_rls)}"


def test_no_view_or_definer_function_lets_a_tenant_around_rls(conn):
    """A view runs as its owner (a superuser, who bypasses RLS) unless security_invoker is set, and so
    does a security definer function: either, reachable by storeops_tenant, would leak other tenants."""
    views = conn.execute(
        """select n.nspname || '.' || c.relname, c.relkind, coalesce(c.reloptions, '{}')
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname in ('storeops', 'storeops_private') and c.relkind in ('v', 'm')
             and (has_table_privilege('storeops_tenant', c.oid, 'select')
                  or has_table_privilege('storeops_runner', c.oid, 'select'))""").fetchall()
    leaky = [name for name, kind, options in views
             if kind == "m" or not {"security_invoker=true", "security_invoker=on", "security_invoker=1"} & set(options)]
    assert not leaky, f"views readable by storeops roles without security_invoker (bypass RLS): {leaky}"
    definers = conn.execute(
        """select p.oid::regprocedure::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname in ('storeops', 'storeops_private') and p.prosecdef
             and has_function_privilege('storeops_tenant', p.oid, 'execute')""").fetchall()
    assert not definers, (f"security definer functions a tenant can call (they bypass RLS): {definers}; "
                          "scope them to storeops.current_tenant_id() and add a tenant-isolation test here")


@pytest.mark.parametrize("table", TABLES)
def test_grants_match_the_declared_commands(conn, table):
    """Privileges exactly as declared: nothing for PUBLIC, no TRUNCATE/REFERENCES/TRIGGER for anyone."""
    case = TABLES[table]
    privileges = ("select", "insert", "update", "delete", "truncate", "references", "trigger")
    by_column = case.tenant_columns or {}
    for role, allowed in (("storeops_tenant", case.tenant_commands - set(by_column)),
                          ("storeops_runner", case.runner_commands)):
        have = {p for p in privileges if conn.execute(
            "select has_table_privilege(%s, %s, %s)", (role, f"storeops.{table}", p)).fetchone()[0]}
        assert have == set(allowed), f"{role} on storeops.{table}: has {sorted(have)}, expected {sorted(allowed)}"
    columns = [r[0] for r in conn.execute(
        "select attname from pg_attribute where attrelid = %s::regclass and attnum > 0 and not attisdropped",
        (f"storeops.{table}",)).fetchall()]
    for command, allowed_columns in by_column.items():
        have = {col for col in columns if conn.execute(
            "select has_column_privilege('storeops_tenant', %s, %s, %s)", (f"storeops.{table}", col, command)).fetchone()[0]}
        assert have == allowed_columns, (f"storeops_tenant {command} on storeops.{table}: has columns {sorted(have)}, "
                                         f"expected {sorted(allowed_columns)}")
    public = conn.execute(
        """select count(*) from pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
           where c.oid = %s::regclass and a.grantee = 0""", (f"storeops.{table}",)).fetchone()[0]
    assert public == 0, f"PUBLIC has privileges on storeops.{table}"
    # One policy per command and role, each naming its role.
    policies = conn.execute(
        "select cmd, roles::text[] from pg_policies where schemaname = 'storeops' and tablename = %s",
        (table,)).fetchall()
    want = {(cmd.upper(), "storeops_tenant") for cmd in case.tenant_commands} | {
        (cmd.upper(), "storeops_runner") for cmd in case.runner_commands}
    got = {(cmd, role) for cmd, roles in policies for role in roles}
    assert got == want, f"policies on storeops.{table}: {sorted(got)}, expected {sorted(want)}"


# -- the tenant role -------------------------------------------------------------------------------

@pytest.mark.parametrize("via", SOURCES)
@pytest.mark.parametrize("table", TABLES)
def test_tenant_select(conn, table, via):
    case = TABLES[table]
    a, b = _tenant(conn), _tenant(conn)
    row_a, row_b = _row_of(conn, table, a), _row_of(conn, table, b)
    nullable = case.tenant_column is not None and conn.execute(
        """select not attnotnull from pg_attribute where attrelid = %s::regclass and attname = %s""",
        (f"storeops.{table}", case.tenant_column)).fetchone()[0]
    row_nobody = insert(conn, table, case.make(conn, None), case.key) if nullable else None
    _act_as_tenant(conn, a, via)
    if "select" not in case.tenant_commands:
        with _denied(conn):
            conn.execute(sql.SQL("select * from {}").format(_table(table)))
        return
    if case.tenant_column is None:
        # Shared reference data: every tenant reads all of it.
        keys = _keys(conn, sql.SQL("select {k} from {t}").format(k=sql.Identifier(case.key), t=_table(table)))
        assert {row_a, row_b} <= keys
        return
    rows = conn.execute(sql.SQL("select {k}, {tc} from {t}").format(
        k=sql.Identifier(case.key), tc=sql.Identifier(case.tenant_column), t=_table(table))).fetchall()
    keys = {k for k, _ in rows}
    assert row_a in keys, f"tenant A cannot see its own {table} row"
    assert row_b not in keys, f"tenant A sees tenant B's {table} row"
    assert {tenant for _, tenant in rows} == {a}
    if row_nobody is not None:
        assert row_nobody not in keys, f"a tenant sees a {table} row that belongs to no tenant"


@pytest.mark.parametrize("via", SOURCES)
@pytest.mark.parametrize("table", TABLES)
def test_tenant_insert(conn, table, via):
    case = TABLES[table]
    a, b = _tenant(conn), _tenant(conn)
    own, other = case.make(conn, a), case.make(conn, b)
    _act_as_tenant(conn, a, via)
    if "insert" not in case.tenant_commands:
        with _denied(conn):
            conn.execute(*_insert_query(table, own))
        return
    assert len(conn.execute(*_insert_query(table, own)).fetchall()) == 1
    with _denied(conn, match="new row violates row-level security policy"):
        conn.execute(*_insert_query(table, other))


@pytest.mark.parametrize("via", SOURCES)
@pytest.mark.parametrize("table", TABLES)
def test_tenant_update(conn, table, via):
    case = TABLES[table]
    column, value = case.change
    a, b = _tenant(conn), _tenant(conn)
    row_a, row_b = _row_of(conn, table, a), _row_of(conn, table, b)
    before_b = _value(conn, table, column, row_b)
    assert before_b != value
    _act_as_tenant(conn, a, via)
    update = sql.SQL("update {t} set {col} = %s where {k} = %s returning {k}").format(
        t=_table(table), col=sql.Identifier(column), k=sql.Identifier(case.key))
    if "update" not in case.tenant_commands:
        with _denied(conn):
            conn.execute(update, (value, row_a))
        return
    assert _keys(conn, update, (value, row_b)) == set(), f"tenant A updated tenant B's {table} row"
    assert _keys(conn, update, (value, row_a)) == {row_a}
    everything = sql.SQL("update {t} set {col} = %s returning {k}").format(
        t=_table(table), col=sql.Identifier(column), k=sql.Identifier(case.key))
    assert row_b not in _keys(conn, everything, (value,))
    # Moving one's own row to another tenant is refused by the policy's WITH CHECK.
    move = sql.SQL("update {t} set {tc} = %s where {k} = %s").format(
        t=_table(table), tc=sql.Identifier(case.tenant_column), k=sql.Identifier(case.key))
    limited = (case.tenant_columns or {}).get("update")
    refusal = ("permission denied" if limited is not None and case.tenant_column not in limited
               else case.move_refused)
    conn.execute("savepoint move")
    with pytest.raises(psycopg.Error, match=refusal):
        conn.execute(move, (uuid.uuid4() if case.tenant_column == case.key else b, row_a))
    conn.execute("rollback to savepoint move")
    conn.execute("reset role")
    assert _value(conn, table, column, row_b) == before_b, f"tenant B's {table} row changed"
    assert _value(conn, table, column, row_a) == value


@pytest.mark.parametrize("via", SOURCES)
@pytest.mark.parametrize("table", TABLES)
def test_tenant_delete(conn, table, via):
    case = TABLES[table]
    a, b = _tenant(conn), _tenant(conn)
    row_a, row_b = _row_of(conn, table, a), _row_of(conn, table, b)
    _act_as_tenant(conn, a, via)
    delete = sql.SQL("delete from {t} where {k} = %s returning {k}").format(
        t=_table(table), k=sql.Identifier(case.key))
    if "delete" not in case.tenant_commands:
        with _denied(conn):
            conn.execute(delete, (row_a,))
        conn.execute("reset role")
        assert _exists(conn, table, row_a)
        return
    assert _keys(conn, delete, (row_b,)) == set(), f"tenant A deleted tenant B's {table} row"
    assert _keys(conn, delete, (row_a,)) == {row_a}
    conn.execute("reset role")
    assert _exists(conn, table, row_b)
    assert not _exists(conn, table, row_a)


@pytest.mark.parametrize("table", [t for t in TENANT_TABLES if "select" in TABLES[t].tenant_commands])
def test_tenant_without_a_tenant_sees_nothing(conn, table):
    a = _tenant(conn)
    _row_of(conn, table, a)
    count = sql.SQL("select count(*) from {}").format(_table(table))
    for claims, setting in [(None, None), ('{"sub": "x", "role": "authenticated"}', None), ("", ""), ("null", None)]:
        conn.execute("savepoint s")
        conn.execute("set local role storeops_tenant")
        if claims is not None:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (claims,))
        if setting is not None:
            conn.execute("select set_config('storeops.tenant_id', %s, true)", (setting,))
        assert conn.execute(count).fetchone()[0] == 0, f"{table} visible with claims={claims!r} setting={setting!r}"
        conn.execute("rollback to savepoint s")


def test_jwt_claims_win_over_the_setting(conn):
    a, b = _tenant(conn), _tenant(conn)
    order_a = insert(conn, "orders", new_order(conn, a))
    insert(conn, "orders", new_order(conn, b))
    conn.execute("set local role storeops_tenant")
    conn.execute("select set_config('storeops.tenant_id', %s, true)", (str(b),))
    conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"tenant_id": str(a)}),))
    assert _keys(conn, sql.SQL("select id from storeops.orders")) == {order_a}
    # Supabase keeps custom claims under app_metadata; that works too.
    conn.execute("select set_config('request.jwt.claims', %s, true)",
                 (json.dumps({"app_metadata": {"tenant_id": str(a)}}),))
    assert _keys(conn, sql.SQL("select id from storeops.orders")) == {order_a}


def test_a_tenant_claim_that_is_not_a_uuid_is_an_error_not_a_match(conn):
    # An order to read: on an empty table a sequential scan never evaluates the policy, and
    # whether the planner picks one depends on the table's statistics (a flaky test otherwise).
    insert(conn, "orders", new_order(conn, _tenant(conn)))
    conn.execute("set local role storeops_tenant")
    conn.execute("select set_config('request.jwt.claims', %s, true)", ('{"tenant_id": "acme"}',))
    with pytest.raises(psycopg.errors.InvalidTextRepresentation, match="not a uuid"):
        conn.execute("select * from storeops.orders")


def test_tenant_cannot_read_tenant_secrets_at_all(conn):
    a = _tenant(conn)
    insert(conn, "tenant_secrets", new_tenant_secret(conn, a))
    for via in SOURCES:
        conn.execute("savepoint s")
        _act_as_tenant(conn, a, via)
        with _denied(conn):
            conn.execute("select count(*) from storeops.tenant_secrets")
        with _denied(conn):
            conn.execute("select * from storeops.get_tenant_secrets(%s, 'razorpay_webhook')", (a,))
        with _denied(conn):
            conn.execute("select secret from storeops.tenant_secrets where tenant_id = %s", (a,))
        conn.execute("rollback to savepoint s")


def test_tenant_cannot_call_runner_functions(conn):
    a = _tenant(conn)
    _act_as_tenant(conn, a, "jwt")
    assert conn.execute("select storeops.current_tenant_id()").fetchone()[0] == a
    with _denied(conn):
        conn.execute("select storeops.schedule_operation_retry(%s, 'payment_webhook', %s, '{}', 'x')", (a, uuid.uuid4()))
    with _denied(conn):
        conn.execute("select * from storeops.claim_operation_retries('tenant-worker')")


# -- the runner role -------------------------------------------------------------------------------

@pytest.mark.parametrize("command", sorted(ALL))
@pytest.mark.parametrize("table", TABLES)
def test_runner_crosses_tenants(conn, table, command):
    case = TABLES[table]
    a, b = _tenant(conn), _tenant(conn)
    row_a, row_b = _row_of(conn, table, a), _row_of(conn, table, b)
    new_a, new_b = case.make(conn, a), case.make(conn, b)
    column, value = case.change
    k, t = sql.Identifier(case.key), _table(table)
    statements = {
        "select": (sql.SQL("select {k} from {t} where {k} = any(%s)").format(k=k, t=t), ([row_a, row_b],)),
        "update": (sql.SQL("update {t} set {col} = %s where {k} = any(%s) returning {k}").format(
            t=t, col=sql.Identifier(column), k=k), (value, [row_a, row_b])),
        "delete": (sql.SQL("delete from {t} where {k} = any(%s) returning {k}").format(k=k, t=t), ([row_a, row_b],)),
    }
    conn.execute("set local role storeops_runner")
    if command not in case.runner_commands:
        with _denied(conn):
            if command == "insert":
                conn.execute(*_insert_query(table, new_a))
            else:
                conn.execute(*statements[command])
        return
    if command == "insert":
        assert len(conn.execute(*_insert_query(table, new_a)).fetchall()) == 1
        assert len(conn.execute(*_insert_query(table, new_b)).fetchall()) == 1
    else:
        assert _keys(conn, *statements[command]) == {row_a, row_b}


def test_runner_cannot_do_ddl_or_escalate(conn):
    conn.execute("set local role storeops_runner")
    for statement in (
        "create table storeops.runner_scratch (id int)",
        "create table public.runner_scratch (id int)",
        "create schema runner_scratch",
        "create function storeops.runner_scratch() returns int language sql as 'select 1'",
        "alter table storeops.orders add column runner_scratch int",
        "alter table storeops.orders disable row level security",
        "alter table storeops.tenant_secrets no force row level security",
        "drop policy orders_tenant_select on storeops.orders",
        "drop table storeops.payment_webhooks",
        "truncate storeops.payment_webhooks",
        "create index runner_scratch_idx on storeops.orders (currency)",
        "create role runner_scratch",
        "copy (select 1) to program 'true'",
    ):
        conn.execute("savepoint denial")
        try:
            conn.execute(statement)
        except psycopg.errors.InsufficientPrivilege:
            conn.execute("rollback to savepoint denial")
        else:
            raise AssertionError(f"storeops_runner could run: {statement}")


def test_runner_cannot_read_outside_its_grants(conn):
    conn.execute("set local role storeops_runner")
    yoyo_tables = conn.execute(
        "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'public' and relname like '%yoyo%' and relkind = 'r'").fetchall()
    assert yoyo_tables, "expected yoyo's bookkeeping tables in schema public"
    for (name,) in yoyo_tables:
        with _denied(conn):
            conn.execute(sql.SQL("select * from {}").format(sql.Identifier("public", name)))
    for statement in ("select * from pg_authid", "select pg_read_file('PG_VERSION')",
                      "select * from pg_ls_dir('.')"):
        with _denied(conn, match="permission denied|must be superuser|Only roles"):
            conn.execute(statement)


def test_runner_reads_platform_tables_tenants_cannot(conn):
    """system_health_checks and operation_retry_policies have no tenant: the runner reads them, a tenant
    gets permission denied, not an empty list that looks like 'all healthy'."""
    insert(conn, "system_health_checks", new_system_health_check(conn))
    a = _tenant(conn)
    conn.execute("savepoint s")
    conn.execute("set local role storeops_runner")
    assert conn.execute("select count(*) from storeops.system_health_checks").fetchone()[0] >= 1
    conn.execute("select * from storeops.operation_retry_policies").fetchall()
    conn.execute("rollback to savepoint s")
    _act_as_tenant(conn, a, "setting")
    with _denied(conn):
        conn.execute("select * from storeops.system_health_checks")
    with _denied(conn):
        conn.execute("select * from storeops.operation_retry_policies")


def test_tenant_sees_only_own_rows_of_a_realistic_dataset(conn):
    """With the full sample landscape loaded, each tenant's view of every table holds only its rows."""
    from _sample_data import load_sample_data

    sample = load_sample_data(conn)
    tenants = {sample["tenant_chai"], sample["tenant_khadi"]}
    totals = {}
    for table in TENANT_TABLES:
        case = TABLES[table]
        totals[table] = conn.execute(sql.SQL("select {tc}, count(*) from {t} group by 1").format(
            tc=sql.Identifier(case.tenant_column), t=_table(table))).fetchall()
    for tenant in tenants:
        for via in SOURCES:
            conn.execute("savepoint s")
            _act_as_tenant(conn, tenant, via)
            for table in TENANT_TABLES:
                case = TABLES[table]
                if "select" not in case.tenant_commands:
                    continue
                seen = conn.execute(sql.SQL("select count(*) from {t}").format(t=_table(table))).fetchone()[0]
                expected = sum(n for owner, n in totals[table] if owner == tenant)
                assert seen == expected, f"{table} as {via} tenant: saw {seen}, owns {expected}"
            conn.execute("rollback to savepoint s")
