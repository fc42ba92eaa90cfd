"""Migrations: apply, re-apply (no-op), roll back all, apply again; what migrating must leave behind."""

import psycopg
from support import roll_back_to_before

from runner import migrate

SPEC_TABLES = {
    "tenants": {"id", "name"},
    "orders": {"id", "tenant_id", "amount", "currency", "status", "payment_status", "razorpay_order_id",
               "razorpay_payment_id", "refund_amount", "created_at", "updated_at"},
    "custom_domains": {"id", "tenant_id", "domain", "status", "verification_token", "verification_attempts",
                       "last_verification_error", "last_verified_at", "auto_verify", "ssl_status",
                       "ssl_expires_at", "created_at"},
    "domain_verification_logs": {"id", "domain_id", "tenant_id", "success", "error", "dns_records", "verified_at"},
    "payment_webhooks": {"id", "tenant_id", "event_id", "webhook_type", "payload", "processed", "processed_at",
                         "error", "created_at"},
    "payment_reconciliation": {"id", "tenant_id", "order_id", "expected_amount", "received_amount", "currency",
                               "status", "notes", "reconciled_at", "reconciled_by", "created_at"},
    "refunds": {"id", "tenant_id", "order_id", "razorpay_refund_id", "amount", "currency", "reason", "status",
                "created_at"},
    "shiprocket_shipments": {"id", "tenant_id", "order_id", "awb", "status", "created_at"},
    "shipping_webhooks": {"id", "tenant_id", "webhook_type", "payload", "processed", "processed_at", "error",
                          "created_at"},
    "shipping_tracking_updates": {"id", "shipment_id", "status", "location", "timestamp"},
    "operation_retry_queue": {"id", "tenant_id", "operation_type", "operation_id", "payload", "status", "attempts",
                              "max_attempts", "next_retry_at", "last_error", "created_at"},
    "system_health_checks": {"id", "check_type", "status", "response_time_ms", "error", "checked_at"},
}


def _tables(url):
    with psycopg.connect(url) as c:
        return {r[0] for r in c.execute(
            "select table_name from information_schema.tables where table_schema = 'storeops'")}


def test_apply_is_idempotent_and_rollback_reapply_round_trips(empty_db):
    first = migrate.apply(empty_db)
    assert first and first[0].startswith("0001_")
    assert migrate.apply(empty_db) == []
    assert migrate.state(empty_db).current
    assert set(SPEC_TABLES) <= _tables(empty_db)

    rolled = migrate.rollback(empty_db)
    assert rolled == list(reversed(first))
    assert _tables(empty_db) == set()
    with psycopg.connect(empty_db) as c:
        assert c.execute("select count(*) from pg_namespace where nspname like 'storeops%'").fetchone()[0] == 0

    assert migrate.apply(empty_db) == first
    assert set(SPEC_TABLES) <= _tables(empty_db)


def test_migrating_sets_search_path_for_new_sessions(empty_db):
    migrate.apply(empty_db)
    with psycopg.connect(empty_db) as c:
        assert "storeops" in c.execute("show search_path").fetchone()[0]
        # The seed guide's unqualified SQL resolves.
        c.execute("select * from get_pending_retries(100)").fetchall()
        c.execute("select * from payment_webhooks where processed = false order by created_at desc").fetchall()


def test_spec_columns_present(conn):
    rows = conn.execute(
        "select table_name, column_name from information_schema.columns where table_schema = 'storeops'"
    ).fetchall()
    have: dict[str, set[str]] = {}
    for table, column in rows:
        have.setdefault(table, set()).add(column)
    for table, required in SPEC_TABLES.items():
        assert required <= have[table], f"{table} lacks {required - have[table]}"


def test_money_columns_are_bigint(conn):
    rows = conn.execute(
        """select table_name, column_name, data_type from information_schema.columns
           where table_schema = 'storeops'
             and column_name in ('amount', 'refund_amount', 'amount_paid', 'expected_amount', 'received_amount')"""
    ).fetchall()
    assert rows
    for table, column, data_type in rows:
        assert data_type == "bigint", f"{table}.{column} is {data_type}"
    # No float or numeric column anywhere in the pack.
    floats = conn.execute(
        """select table_name, column_name from information_schema.columns
           where table_schema = 'storeops' and data_type in ('real', 'double precision', 'numeric', 'money')"""
    ).fetchall()
    assert floats == []


def test_every_table_has_comment_rls_and_updated_at_trigger(conn):
    rows = conn.execute(
        """select c.relname, obj_description(c.oid, 'pg_class'), c.relrowsecurity
           from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'storeops' and c.relkind = 'r'"""
    ).fetchall()
    assert len(rows) >= len(SPEC_TABLES)
    for name, comment, rls in rows:
        assert comment, f"{name} has no comment"
        assert rls, f"{name} has no row level security"
    missing = conn.execute(
        """select c.table_name from information_schema.columns c
           where c.table_schema = 'storeops' and c.column_name = 'updated_at'
             and not exists (select 1 from information_schema.triggers t
                             where t.event_object_schema = 'storeops' and t.event_object_table = c.table_name
                               and t.event_manipulation = 'UPDATE')"""
    ).fetchall()
    assert missing == []


def test_updated_at_trigger_moves_on_update(conn):
    tid = conn.execute("insert into tenants (name) values ('A') returning id").fetchone()[0]
    conn.execute("update tenants set updated_at = now() - interval '1 day' where id = %s", (tid,))
    before = conn.execute("select updated_at from tenants where id = %s", (tid,)).fetchone()[0]
    conn.execute("update tenants set name = 'B' where id = %s", (tid,))
    after = conn.execute("select updated_at from tenants where id = %s", (tid,)).fetchone()[0]
    # The trigger overrides the explicit backdating too, so both are now(): equal within the transaction.
    assert after == before
    assert after == conn.execute("select now()").fetchone()[0]


def test_every_foreign_key_has_an_index(conn):
    rows = conn.execute(
        """select c.conrelid::regclass::text, c.conname
           from pg_constraint c join pg_namespace n on n.oid = c.connamespace
           where n.nspname = 'storeops' and c.contype = 'f'
             and not exists (
               select 1 from pg_index i
               where i.indrelid = c.conrelid and (i.indkey::int2[])[0:array_length(c.conkey, 1) - 1] = c.conkey)"""
    ).fetchall()
    assert rows == []


def test_every_function_has_a_comment_and_readers_are_stable(conn):
    rows = conn.execute(
        """select p.proname, obj_description(p.oid, 'pg_proc'), p.provolatile
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname in ('storeops', 'storeops_private') and p.prokind = 'f'"""
    ).fetchall()
    for name, comment, volatile in rows:
        assert comment, f"function {name} has no comment"
        if name.startswith(("get_", "list_")):
            assert volatile == "s", f"{name} should be stable"


def test_constraints_are_named_after_rules(conn):
    rows = conn.execute(
        """select conname from pg_constraint c join pg_namespace n on n.oid = c.connamespace
           where n.nspname = 'storeops' and conname ~ '_check$|_fkey1$'"""
    ).fetchall()
    assert rows == [], "unnamed (auto-generated) constraints: " + ", ".join(r[0] for r in rows)


def test_roles_exist_and_runner_cannot_do_ddl(conn):
    roles = {r[0] for r in conn.execute(
        "select rolname from pg_roles where rolname in ('storeops_runner', 'storeops_tenant')")}
    assert roles == {"storeops_runner", "storeops_tenant"}
    conn.execute("set local role storeops_runner")
    for ddl in ("create table storeops.x (id int)", "drop table storeops.orders", "alter table storeops.orders add column x int",
                "truncate storeops.orders"):
        conn.execute("savepoint s")
        try:
            conn.execute(ddl)
        except psycopg.errors.InsufficientPrivilege:
            conn.execute("rollback to savepoint s")
        else:
            raise AssertionError(f"runner role could run: {ddl}")


def test_schema_snapshot_is_current(empty_db):
    """sql/schema.sql is what a fresh migrate produces; regenerate it with `make schema`."""
    from pathlib import Path

    from runner.schema_dump import dump

    migrate.apply(empty_db)
    snapshot = Path(__file__).resolve().parents[2] / "sql" / "schema.sql"
    assert snapshot.read_text() == dump(empty_db), "sql/schema.sql is stale: run `make schema`"


def test_0045_gives_up_on_a_long_transaction_instead_of_queueing_intake_behind_it(fresh_db):
    """Dropping an index waits for an ACCESS EXCLUSIVE lock, and every insert would queue behind
    that wait: 0045 sets a lock timeout, so a deploy meeting a long transaction fails cleanly after
    10 s (nothing applied) and works once that transaction is gone."""
    ours = "0045_drop_unused_webhook_type_indexes"
    roll_back_to_before(fresh_db, ours)  # and any newer ones
    with psycopg.connect(fresh_db) as holder:
        holder.execute("select count(*) from storeops.payment_webhooks")  # holds ACCESS SHARE until it ends
        try:
            migrate.apply(fresh_db)
        except psycopg.errors.LockNotAvailable:
            pass
        else:
            raise AssertionError("0045 applied while a transaction held payment_webhooks")
        assert migrate.state(fresh_db).pending[0] == ours
        holder.rollback()
    assert migrate.apply(fresh_db)[0] == ours
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select count(*) from pg_indexes where indexname like '%webhooks_type_created_idx'").fetchone()[0] == 0
