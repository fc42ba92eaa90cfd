"""The retry queue in SQL (migrations/0002_create_retry_queue.sql): backoff 5, 10, 20, 40, 80 minutes
then `failed`, one live row per operation, a read-only `get_pending_retries`, and the runners' claim /
complete / fail / release protocol with leases and claim tokens.

Time is controlled: every state-changing function takes `p_now`. `get_pending_retries(limit)` keeps
the seed's one-argument form and reads the clock itself, so its tests place rows far from now().
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.rows import dict_row, tuple_row

T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
MIN = timedelta(minutes=1)


def schedule(c, tenant, op_type, op_id, error="boom", payload=None, now=T0):
    return c.execute(
        "select * from storeops.schedule_operation_retry(%s, %s, %s, %s::jsonb, %s, %s)",
        (tenant, op_type, op_id, json.dumps(payload or {"k": "v"}), error, now),
    ).fetchone()


def claim(c, worker, limit=10, lease=timedelta(minutes=5), types=None, now=T0):
    return c.execute(
        "select * from storeops.claim_operation_retries(%s, %s, %s, %s, %s)",
        (worker, limit, lease, types, now),
    ).fetchall()


def complete(c, row_id, token, now=T0):
    return c.execute("select storeops.complete_operation_retry(%s, %s, %s)", (row_id, token, now)).fetchone()["complete_operation_retry"]


def fail(c, row_id, token, error="still down", retry_in=None, now=T0):
    return c.execute(
        "select * from storeops.fail_operation_retry(%s, %s, %s, %s, %s)", (row_id, token, error, retry_in, now)
    ).fetchone()


def make_tenant(c, name):
    cur = c.cursor(row_factory=tuple_row)
    return cur.execute("insert into storeops.tenants (name) values (%s) returning id", (name,)).fetchone()[0]


def row(c, row_id):
    return c.execute("select * from storeops.operation_retry_queue where id = %s", (row_id,)).fetchone()


def live_rows(c, tenant, op_type, op_id):
    return c.execute(
        """select * from storeops.operation_retry_queue
           where tenant_id is not distinct from %s and operation_type = %s and operation_id = %s
           order by status = 'failed' desc, created_at""",
        (tenant, op_type, op_id),
    ).fetchall()


@pytest.fixture
def db(conn):
    conn.row_factory = dict_row
    return conn


@pytest.fixture
def tenant(db):
    return make_tenant(db, "Retry Store")


# -- schedule_operation_retry ----------------------------------------------------------------------

def test_nth_schedule_waits_5_10_20_40_80_minutes_then_sixth_marks_failed(db, tenant):
    op = uuid.uuid4()
    ids = set()
    for n, minutes in enumerate([5, 10, 20, 40, 80], start=1):
        now = T0 + timedelta(hours=n)  # each failure happens at a different (controlled) time
        r = schedule(db, tenant, "payment_webhook", op, error=f"error {n}", now=now)
        ids.add(r["id"])
        assert r["status"] == "pending"
        assert r["attempts"] == n
        assert r["max_attempts"] == 5
        assert r["next_retry_at"] - now == timedelta(minutes=minutes), f"call {n}"
        assert r["last_error"] == f"error {n}"
    assert len(ids) == 1

    sixth = schedule(db, tenant, "payment_webhook", op, error="final error", now=T0 + timedelta(hours=6))
    assert sixth["id"] in ids
    assert sixth["status"] == "failed"
    assert sixth["last_error"] == "final error"
    assert sixth["attempts"] == 5
    # Every failure is kept, in order.
    assert [e["error"] for e in sixth["errors"]] == [f"error {n}" for n in range(1, 6)] + ["final error"]

    # A failed operation is no longer live: the next failure starts a new live row at attempt 1.
    again = schedule(db, tenant, "payment_webhook", op, now=T0 + timedelta(hours=7))
    assert again["id"] not in ids
    assert (again["status"], again["attempts"]) == ("pending", 1)
    assert again["next_retry_at"] - (T0 + timedelta(hours=7)) == 5 * MIN
    rows = live_rows(db, tenant, "payment_webhook", op)
    assert [r["status"] for r in rows] == ["failed", "pending"]


def test_seed_manual_retry_call_works_verbatim(db, tenant):
    # The guide's "Manual Retry" snippet, unqualified, with its placeholders replaced by real ids.
    webhook = uuid.uuid4()
    result = db.execute(
        f"""SELECT schedule_operation_retry(
  '{tenant}',
  'payment_webhook',
  '{webhook}',
  '{{"webhook_id": "uuid"}}'::jsonb,
  'Error message'
);"""
    ).fetchone()
    assert result["schedule_operation_retry"] is not None
    r = live_rows(db, tenant, "payment_webhook", webhook)
    assert len(r) == 1
    now = db.execute("select now() as now").fetchone()["now"]
    assert r[0]["status"] == "pending"
    assert r[0]["attempts"] == 1
    assert r[0]["payload"] == {"webhook_id": "uuid"}
    assert r[0]["last_error"] == "Error message"
    assert r[0]["next_retry_at"] == now + 5 * MIN


def test_max_attempts_comes_from_the_operation_type_policy(db, tenant):
    db.execute("insert into storeops.operation_retry_policies (operation_type, max_attempts) values ('refund', 2)")
    op = uuid.uuid4()
    first = schedule(db, tenant, "refund", op, now=T0)
    assert (first["max_attempts"], first["attempts"]) == (2, 1)
    second = schedule(db, tenant, "refund", op, now=T0 + MIN)
    assert (second["status"], second["attempts"]) == ("pending", 2)
    assert second["next_retry_at"] == T0 + MIN + 10 * MIN
    third = schedule(db, tenant, "refund", op, now=T0 + 2 * MIN)
    assert third["status"] == "failed"

    # A type without a policy row keeps the default of 5.
    other = schedule(db, tenant, "shipping_webhook", uuid.uuid4())
    assert other["max_attempts"] == 5


def test_repeats_update_the_live_row_and_keys_are_per_tenant_and_type(db, tenant):
    other_tenant = make_tenant(db, "Other Store")
    op = uuid.uuid4()
    a1 = schedule(db, tenant, "payment_webhook", op, payload={"v": 1})
    a2 = schedule(db, tenant, "payment_webhook", op, payload={"v": 2}, now=T0 + MIN)
    assert a1["id"] == a2["id"]
    assert a2["payload"] == {"v": 2}  # the latest payload wins
    b = schedule(db, other_tenant, "payment_webhook", op)
    c = schedule(db, tenant, "domain_verification", op)
    d = schedule(db, None, "payment_webhook", op)  # platform-level work has no tenant
    d2 = schedule(db, None, "payment_webhook", op, now=T0 + MIN)
    assert len({a1["id"], b["id"], c["id"], d["id"]}) == 4
    assert d2["id"] == d["id"] and d2["attempts"] == 2
    count = db.execute(
        "select count(*) as n from storeops.operation_retry_queue where operation_id = %s", (op,)
    ).fetchone()["n"]
    assert count == 4


def test_schedule_rejects_missing_operation(db, tenant):
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="operation_type"):
        schedule(db, tenant, " ", uuid.uuid4())


def test_a_second_live_row_is_refused_by_the_database(db, tenant):
    op = uuid.uuid4()
    schedule(db, tenant, "payment_webhook", op)
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            "insert into storeops.operation_retry_queue (tenant_id, operation_type, operation_id) values (%s, %s, %s)",
            (tenant, "payment_webhook", op),
        )


# -- get_pending_retries -----------------------------------------------------------------------------

def test_get_pending_retries_returns_due_rows_oldest_first_and_is_read_only(db, tenant):
    now = db.execute("select now() as now").fetchone()["now"]
    past = now - timedelta(days=1)
    late = schedule(db, tenant, "payment_webhook", uuid.uuid4(), now=past + 2 * MIN)   # due at past+7m
    early = schedule(db, tenant, "payment_webhook", uuid.uuid4(), now=past)           # due at past+5m
    schedule(db, tenant, "payment_webhook", uuid.uuid4(), now=now)                     # due in 5 minutes
    done = schedule(db, tenant, "payment_webhook", uuid.uuid4(), now=past)
    db.execute("update storeops.operation_retry_queue set status = 'completed' where id = %s", (done["id"],))
    gone = uuid.uuid4()
    for _ in range(6):
        schedule(db, tenant, "payment_webhook", gone, now=past - timedelta(days=1))

    before = db.execute("select md5(string_agg(q::text, ',' order by id)) as h from storeops.operation_retry_queue q").fetchone()

    # The guide's runbook form, in a read-only transaction: it must not need to write.
    rows = db.execute("SELECT * FROM get_pending_retries(100);").fetchall()
    assert [r["id"] for r in rows] == [early["id"], late["id"]]
    assert [r["id"] for r in db.execute("select * from get_pending_retries(1)")] == [early["id"]]

    after = db.execute("select md5(string_agg(q::text, ',' order by id)) as h from storeops.operation_retry_queue q").fetchone()
    assert after == before
    volatility = db.execute(
        "select provolatile from pg_proc where oid = 'storeops.get_pending_retries(integer)'::regprocedure"
    ).fetchone()["provolatile"]
    assert volatility == "s"


def test_get_pending_retries_runs_in_a_read_only_transaction(shared_db_url):
    with psycopg.connect(shared_db_url) as c:
        c.execute("set transaction read only")
        c.execute("select * from get_pending_retries(100)").fetchall()
        c.rollback()


# -- claim / complete / fail / release -----------------------------------------------------------------

def _due(db, tenant, n, op_type="payment_webhook", now=T0):
    """n rows due at T0 - n .. T0 - 1 minutes (oldest first)."""
    ids = []
    for i in range(n):
        ids.append(schedule(db, tenant, op_type, uuid.uuid4(), now=now - timedelta(minutes=5 + n - i))["id"])
    return ids


def test_claim_returns_rows_with_a_token_under_a_lease(db, tenant):
    due = _due(db, tenant, 3)
    schedule(db, tenant, "payment_webhook", uuid.uuid4(), now=T0)  # due at T0+5m: not yet
    rows = claim(db, "worker-a", limit=10, lease=timedelta(minutes=2))
    assert sorted(r["id"] for r in rows) == sorted(due)
    tokens = {r["claim_token"] for r in rows}
    assert None not in tokens and len(tokens) == 3
    for r in rows:
        assert r["status"] == "processing"
        assert r["locked_by"] == "worker-a"
        assert r["locked_until"] == T0 + 2 * MIN
    # Claimed rows are not handed out again while the lease holds.
    assert claim(db, "worker-b", now=T0 + MIN) == []


def test_claim_respects_limit_order_and_operation_types(db, tenant):
    pay = _due(db, tenant, 3, "payment_webhook")
    ship = _due(db, tenant, 2, "shipping_webhook")
    got = claim(db, "w", limit=2, types=["payment_webhook"])
    assert [r["id"] for r in got] == pay[:2]  # oldest first
    got = claim(db, "w", limit=10, types=["shipping_webhook"])
    assert sorted(r["id"] for r in got) == sorted(ship)
    assert [r["id"] for r in claim(db, "w")] == pay[2:]


def test_complete_needs_the_current_token(db, tenant):
    (rid,) = _due(db, tenant, 1)
    (r,) = claim(db, "w")
    before = row(db, rid)
    assert complete(db, rid, r["claim_token"] + 1000) is False
    assert fail(db, rid, r["claim_token"] + 1000)["id"] is None  # NULL: the claim is not ours
    assert row(db, rid) == before  # a wrong token changes nothing

    assert complete(db, rid, r["claim_token"], now=T0 + MIN) is True
    done = row(db, rid)
    assert done["status"] == "completed"
    assert done["completed_at"] == T0 + MIN
    assert done["locked_until"] is None
    # Completing twice is refused: the claim is over.
    assert complete(db, rid, r["claim_token"]) is False


def test_fail_schedules_the_next_backoff_step_or_the_retry_after(db, tenant):
    op = uuid.uuid4()
    schedule(db, tenant, "razorpay_refund", op, now=T0 - 10 * MIN)  # attempt 1, due at T0-5m
    (r,) = claim(db, "w")
    failed = fail(db, r["id"], r["claim_token"], error="HTTP 502")
    assert failed["status"] == "pending"
    assert failed["attempts"] == 2
    assert failed["next_retry_at"] == T0 + 10 * MIN
    assert failed["last_error"] == "HTTP 502"
    assert failed["locked_until"] is None
    # The old token is spent: it cannot complete the row it no longer holds.
    assert complete(db, r["id"], r["claim_token"]) is False

    (r2,) = claim(db, "w", now=T0 + 10 * MIN)
    assert r2["claim_token"] != r["claim_token"]
    # Razorpay said Retry-After: 90 seconds: that wins over the 20 minute step.
    after = fail(db, r2["id"], r2["claim_token"], error="HTTP 429", retry_in=timedelta(seconds=90),
                 now=T0 + 11 * MIN)
    assert after["attempts"] == 3
    assert after["next_retry_at"] == T0 + 11 * MIN + timedelta(seconds=90)


def test_fail_after_the_last_attempt_marks_failed(db, tenant):
    db.execute("insert into storeops.operation_retry_policies (operation_type, max_attempts) values ('once', 1)")
    schedule(db, tenant, "once", uuid.uuid4(), now=T0 - 10 * MIN)
    (r,) = claim(db, "w")
    final = fail(db, r["id"], r["claim_token"], error="gave up")
    assert final["status"] == "failed"
    assert claim(db, "w", now=T0 + timedelta(days=1)) == []


def test_an_expired_lease_is_claimable_again_and_the_old_token_is_dead(db, tenant):
    (rid,) = _due(db, tenant, 1)
    (first,) = claim(db, "crashed-worker", lease=timedelta(minutes=1))
    assert claim(db, "other", now=T0 + 30 * timedelta(seconds=1)) == []  # lease still holds

    (second,) = claim(db, "other", lease=timedelta(minutes=1), now=T0 + 2 * MIN)
    assert second["id"] == rid
    assert second["locked_by"] == "other"
    assert second["claim_token"] != first["claim_token"]
    assert second["attempts"] == first["attempts"]  # a lost lease is not a failure

    # The crashed worker wakes up: it can neither complete nor fail the row now.
    assert complete(db, rid, first["claim_token"], now=T0 + 3 * MIN) is False
    assert fail(db, rid, first["claim_token"], now=T0 + 3 * MIN)["id"] is None
    assert row(db, rid)["locked_by"] == "other"
    assert complete(db, rid, second["claim_token"], now=T0 + 3 * MIN) is True


def test_release_gives_back_only_that_workers_claims(db, tenant):
    _due(db, tenant, 4)
    a = claim(db, "worker-a", limit=3)
    b = claim(db, "worker-b", limit=3)
    assert (len(a), len(b)) == (3, 1)
    released = db.execute("select storeops.release_operation_retries('worker-a') as n").fetchone()["n"]
    assert released == 3
    for r in a:
        back = row(db, r["id"])
        assert (back["status"], back["locked_by"], back["attempts"]) == ("pending", None, r["attempts"])
        assert complete(db, r["id"], r["claim_token"]) is False
    assert row(db, b[0]["id"])["status"] == "processing"
    again = claim(db, "worker-c", limit=10)
    assert sorted(r["id"] for r in again) == sorted(r["id"] for r in a)


def test_complete_operation_retries_completes_only_current_claims(db, tenant):
    _due(db, tenant, 5)
    rows = claim(db, "w", limit=5)
    ids = [r["id"] for r in rows]
    tokens = [r["claim_token"] for r in rows]
    tokens[-1] += 1000  # one stale claim in the batch
    n = db.execute("select storeops.complete_operation_retries(%s, %s, %s) as n", (ids, tokens, T0)).fetchone()["n"]
    assert n == 4
    statuses = [row(db, i)["status"] for i in ids]
    assert statuses == ["completed"] * 4 + ["processing"]


def test_enqueue_operation_is_idempotent_and_runs_at_the_requested_time(db, tenant):
    op = uuid.uuid4()
    enqueue = "select storeops.enqueue_operation(%s, %s, %s, %s::jsonb, %s) as id"
    first = db.execute(enqueue, (tenant, "domain_verification", op, '{"domain": "shop.example.in"}', T0)).fetchone()["id"]
    second = db.execute(enqueue, (tenant, "domain_verification", op, '{"domain": "shop.example.in"}', T0)).fetchone()["id"]
    assert first == second
    assert len(live_rows(db, tenant, "domain_verification", op)) == 1
    r = row(db, first)
    assert (r["attempts"], r["status"], r["next_retry_at"]) == (0, "pending", T0)
    assert claim(db, "w", now=T0 - MIN) == []
    (c,) = claim(db, "w", now=T0)
    # A failure of enqueued work is retry 1: 5 minutes.
    f = fail(db, c["id"], c["claim_token"], now=T0 + MIN)
    assert (f["attempts"], f["next_retry_at"]) == (1, T0 + 6 * MIN)
    # While it is live, enqueue and schedule both land on the same row.
    assert db.execute(enqueue, (tenant, "domain_verification", op, "{}", T0)).fetchone()["id"] == first
    assert schedule(db, tenant, "domain_verification", op, now=T0 + 2 * MIN)["id"] == first
    (c,) = claim(db, "w", now=T0 + timedelta(hours=1))
    assert complete(db, c["id"], c["claim_token"]) is True
    # Once completed, enqueueing the same operation again is new work.
    third = db.execute(enqueue, (tenant, "domain_verification", op, "{}", T0)).fetchone()["id"]
    assert third != first


# -- committed, multi-connection tests ---------------------------------------------------------------

def _alert_bodies(notifies):
    """0002 sends the failure itself as JSON; later migrations may also notify the channel (0040's
    alerts table sends the alert id), so pick out the JSON ones."""
    bodies = []
    for n in notifies:
        try:
            bodies.append(json.loads(n.payload))
        except ValueError:
            continue
    return [b for b in bodies if isinstance(b, dict)]


def test_final_failure_notifies_storeops_alert_on_commit(fresh_db):
    op = uuid.uuid4()
    with psycopg.connect(fresh_db, autocommit=True) as listener, psycopg.connect(fresh_db, row_factory=dict_row) as c:
        listener.execute("listen storeops_alert")
        tenant = make_tenant(c, "Alert Store")
        for n in range(5):
            schedule(c, tenant, "payment_webhook", op, now=T0 + n * MIN)
        c.commit()
        assert list(listener.notifies(timeout=0.3)) == []  # retries 1-5 are not alerts

        final = schedule(c, tenant, "payment_webhook", op, error="card network down", now=T0 + 6 * MIN)
        assert final["status"] == "failed"
        assert list(listener.notifies(timeout=0.3)) == []  # nothing before commit
        c.commit()
        got = []
        for n in listener.notifies(timeout=5):
            got.append(n)
            if _alert_bodies(got):
                break
        got += list(listener.notifies(timeout=0.2))  # anything else that arrives with it
    assert got and all(n.channel == "storeops_alert" for n in got)
    bodies = _alert_bodies(got)
    failed = [b for b in bodies if isinstance(b, dict) and b.get("kind") == "operation_failed"]
    assert len(failed) == 1
    assert failed[0]["operation_type"] == "payment_webhook"
    assert failed[0]["operation_id"] == str(op)
    assert failed[0]["error"] == "card network down"


def _run_gated(fresh_db, n_threads, work):
    """Start n_threads each with its own connection, hold them behind a lock on the retry policies
    (which every schedule call reads first) until all are waiting, then let them go at once."""
    results: list = [None] * n_threads
    errors: list = []
    gate = psycopg.connect(fresh_db)
    gate.execute("lock table storeops.operation_retry_policies in access exclusive mode")

    def runner(i):
        try:
            with psycopg.connect(fresh_db, autocommit=True) as c:
                c.row_factory = dict_row
                results[i] = work(c, i)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waiting = gate.execute(
            "select count(*) from pg_locks where not granted and relation = 'storeops.operation_retry_policies'::regclass"
        ).fetchone()[0]
        if waiting == n_threads:
            break
        time.sleep(0.01)
    gate.commit()
    gate.close()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_concurrent_schedules_for_one_operation_keep_one_live_row(fresh_db):
    with psycopg.connect(fresh_db) as c:
        tenant = make_tenant(c, "Busy Store")
        c.execute("insert into storeops.operation_retry_policies (operation_type, max_attempts) values ('burst', 20)")
    op = uuid.uuid4()
    results = _run_gated(fresh_db, 8, lambda c, i: schedule(c, tenant, "burst", op, error=f"caller {i}"))
    assert all(r is not None and r["id"] is not None for r in results), "a call was lost"
    with psycopg.connect(fresh_db, row_factory=dict_row) as c:
        rows = live_rows(c, tenant, "burst", op)
    assert len(rows) == 1
    assert rows[0]["attempts"] == 8
    assert len(rows[0]["errors"]) == 8


def test_concurrent_schedules_past_max_attempts_fail_then_start_over(fresh_db):
    with psycopg.connect(fresh_db) as c:
        tenant = make_tenant(c, "Busy Store")
    op = uuid.uuid4()
    results = _run_gated(fresh_db, 8, lambda c, i: schedule(c, tenant, "payment_webhook", op, error=f"caller {i}"))
    assert all(r is not None and r["id"] is not None for r in results), "a call was lost"
    with psycopg.connect(fresh_db, row_factory=dict_row) as c:
        rows = live_rows(c, tenant, "payment_webhook", op)
    # Calls 1-5 are attempts, call 6 fails the row, calls 7 and 8 start (and continue) a new one.
    assert [(r["status"], r["attempts"]) for r in rows] == [("failed", 5), ("pending", 2)]


def test_eight_runners_claiming_at_once_never_claim_a_row_twice(fresh_db):
    total = 2000
    with psycopg.connect(fresh_db) as c:
        tenant = make_tenant(c, "Flash Sale")
        c.execute(
            """insert into storeops.operation_retry_queue
                 (tenant_id, operation_type, operation_id, attempts, next_retry_at)
               select %s, 'payment_webhook', gen_random_uuid(), 1, %s - make_interval(secs => g)
               from generate_series(1, %s) g""",
            (tenant, T0, total),
        )
    start = threading.Barrier(8)
    claimed: list[list] = [[] for _ in range(8)]
    errors: list = []

    def worker(i):
        try:
            with psycopg.connect(fresh_db, autocommit=True) as c:
                start.wait()
                while True:
                    rows = c.execute(
                        "select id, claim_token from storeops.claim_operation_retries(%s, 7, interval '5 minutes', null, %s)",
                        (f"worker-{i}", T0),
                    ).fetchall()
                    if not rows:
                        break
                    claimed[i].extend(r[0] for r in rows)
                    done = c.execute(
                        "select storeops.complete_operation_retries(%s, %s, %s)",
                        ([r[0] for r in rows], [r[1] for r in rows], T0),
                    ).fetchone()[0]
                    assert done == len(rows)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    every = [rid for ids in claimed for rid in ids]
    assert len(every) == len(set(every)), "a row was claimed twice"
    assert len(every) == total, f"{total - len(every)} due rows were never claimed"
    assert sum(1 for ids in claimed if ids) > 1, "only one runner got work"
    with psycopg.connect(fresh_db) as c:
        counts = dict(c.execute("select status, count(*) from storeops.operation_retry_queue group by status").fetchall())
    assert counts == {"completed": total}


def test_a_runner_mid_claim_does_not_hide_the_rest_of_the_queue(fresh_db):
    # Runner A has claimed the 3 oldest rows but not committed yet; runner B must get the next 3
    # (SKIP LOCKED must skip to further rows), not an empty batch that looks like an empty queue.
    with psycopg.connect(fresh_db, row_factory=dict_row) as c:
        tenant = make_tenant(c, "Two Runners")
        due = _due(c, tenant, 6)
    with psycopg.connect(fresh_db, row_factory=dict_row) as a, psycopg.connect(fresh_db, row_factory=dict_row) as b:
        got_a = claim(a, "runner-a", limit=3)
        got_b = claim(b, "runner-b", limit=3)
        assert [r["id"] for r in got_a] == due[:3]
        assert [r["id"] for r in got_b] == due[3:]
