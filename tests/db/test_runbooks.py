"""sql/runbooks: the seed guide's operator SQL, one named file per snippet, each run against sample data.

Each runbook is run unqualified, exactly as written, with only its placeholders ('order-uuid', ...)
replaced by real ids: statement by statement through the `conn` fixture (whose search_path puts
storeops first, like a psql session on a migrated database), and once more through the real psql
binary with ON_ERROR_STOP against a freshly migrated database. The assertions are what the guide
promises the operator: which rows come back, in which order, and what changes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlparse
from _sample_data import SampleData, load_sample_data
from psycopg.rows import dict_row

ROOT = Path(__file__).resolve().parents[2]
RUNBOOKS = ROOT / "sql" / "runbooks"
# The seed guide lives beside the checkout (../shared/seed) or, if the lead copies it in, under docs/.
GUIDE_CANDIDATES = [
    Path(os.environ.get("STOREOPS_SEED_GUIDE", "/nonexistent")),
    ROOT / "docs" / "enterprise-systems-guide.md",
    ROOT.parent / "shared" / "seed" / "enterprise-systems-guide.md",
]
PSQL = "/usr/bin/psql" if os.path.exists("/usr/bin/psql") else shutil.which("psql")

TESTED: set[str] = set()


def runbook_test(*names: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Marks a test as the one covering these runbooks (test_every_runbook_has_a_test checks)."""
    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        TESTED.update(names)
        return fn
    return mark


@dataclass
class Result:
    command: str
    rowcount: int
    rows: list[dict[str, Any]]


def _runbook_names() -> list[str]:
    return sorted(p.stem for p in RUNBOOKS.glob("*.sql"))


def _split(text: str) -> list[str]:
    """Statements as psql would send them; chunks that are only comments are not statements."""
    return [s for s in sqlparse.split(text) if sqlparse.format(s, strip_comments=True).strip()]


def _header_and_body(text: str) -> tuple[str, str]:
    lines = text.splitlines(keepends=True)
    n = 0
    while n < len(lines) and lines[n].startswith("--"):
        n += 1
    return "".join(lines[:n]), "".join(lines[n:])


def declared_placeholders(name: str) -> list[str]:
    """The 'quoted' placeholders the header's Replace: line tells the operator to replace."""
    header, _ = _header_and_body((RUNBOOKS / f"{name}.sql").read_text())
    replace = header.split("Replace:", 1)[1] if "Replace:" in header else ""
    replace = " ".join(line.removeprefix("--").strip() for line in replace.splitlines())
    return re.findall(r"('[^']+') with\b", replace)


def substituted(name: str, values: dict[str, str]) -> str:
    """The runbook's text with each placeholder (e.g. "'order-uuid'") replaced by a value."""
    text = (RUNBOOKS / f"{name}.sql").read_text()
    _, body = _header_and_body(text)
    missing = [p for p in declared_placeholders(name) if p not in values]
    assert not missing, f"{name}.sql: the test gives no value for {missing}"
    for placeholder, value in values.items():
        assert placeholder in body, f"{name}.sql has no {placeholder} to replace"
        text = text.replace(placeholder, value)
    return text


def run_runbook(conn: psycopg.Connection, name: str, **values: Any) -> list[Result]:
    """Run sql/runbooks/<name>.sql verbatim, statement by statement. values: placeholder (without
    quotes, e.g. order_uuid for 'order-uuid') -> id; each becomes a quoted SQL literal."""
    literals = {f"'{key.replace('_', '-')}'": f"'{value}'" for key, value in values.items()}
    results = []
    for statement in _split(substituted(name, literals)):
        cur = conn.cursor(row_factory=dict_row)
        cur.execute(statement)
        rows = cur.fetchall() if cur.description else []
        results.append(Result(cur.statusmessage or "", cur.rowcount, rows))
    return results


def rows_of(conn: psycopg.Connection, name: str, **values: Any) -> list[dict[str, Any]]:
    results = run_runbook(conn, name, **values)
    assert len(results) == 1, f"{name}.sql ran {len(results)} statements"
    return results[0].rows


def ids(rows: list[dict[str, Any]]) -> list[Any]:
    return [r["id"] for r in rows]


@pytest.fixture
def sample(conn) -> SampleData:
    return load_sample_data(conn)


def _one(conn: psycopg.Connection, query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


# -- the files themselves ----------------------------------------------------------------------------

def test_every_runbook_has_a_test():
    files = set(_runbook_names())
    assert len(files) >= 22
    untested = sorted(files - TESTED)
    assert not untested, (f"runbooks without a test: {', '.join(untested)}. Add a test to tests/db/test_runbooks.py "
                          "marked @runbook_test('<name>') that loads sample data and checks what it returns.")
    stale = sorted(TESTED - files)
    assert not stale, f"tests name runbooks that do not exist: {', '.join(stale)}"


@pytest.mark.parametrize("name", _runbook_names())
def test_runbook_header_says_what_it_is_for_and_what_to_replace(name):
    header, body = _header_and_body((RUNBOOKS / f"{name}.sql").read_text())
    assert header.count("\n") >= 3, f"{name}.sql needs a -- header saying what it is for"
    assert "Source: enterprise-systems-guide.md" in header, f"{name}.sql does not say where in the guide it is from"
    assert "Replace:" in header, f"{name}.sql does not say which placeholders to replace (or 'nothing')"
    placeholders = declared_placeholders(name)
    assert placeholders or "Replace: nothing" in header
    for placeholder in placeholders:
        assert placeholder in body, f"{name}.sql header names {placeholder}, which its SQL does not contain"
    assert _split(body), f"{name}.sql has no statement"


def _guide() -> Path | None:
    return next((p for p in GUIDE_CANDIDATES if p.is_file()), None)


def test_every_sql_snippet_of_the_guide_is_a_runbook_verbatim():
    guide = _guide()
    if guide is None:
        pytest.skip("seed guide not found (set STOREOPS_SEED_GUIDE)")
    text = guide.read_text()
    chunks = re.findall(r"```sql\n(.*?)```", text, re.S) + re.findall(r"`(SELECT [^`]*;)`", text)
    statements = [
        "\n".join(line for line in s.strip("\n").splitlines() if not line.lstrip().startswith("--")).strip("\n")
        for chunk in chunks for s in _split(chunk)]
    assert len(statements) >= 22
    runbooks = [(RUNBOOKS / f"{n}.sql").read_text() for n in _runbook_names()]
    missing = [s for s in statements if not any(s in r for r in runbooks)]
    assert not missing, "guide SQL not found verbatim in sql/runbooks:\n\n" + "\n\n".join(missing)


# -- domains ---------------------------------------------------------------------------------------

@runbook_test("enable_auto_verification")
def test_enable_auto_verification_turns_it_on_for_that_domain_only(conn, sample):
    (result,) = run_runbook(conn, "enable_auto_verification", domain_id=sample["domain_khadi"])
    assert (result.command, result.rowcount) == ("UPDATE 1", 1)
    flags = dict(conn.execute("select id, auto_verify from custom_domains").fetchall())
    assert flags[sample["domain_khadi"]] is True
    assert flags[sample["domain_chai"]] is False and flags[sample["domain_chai_www"]] is False


@runbook_test("view_verification_history", "troubleshoot_domain_verification_logs")
def test_verification_history_is_that_domains_attempts_newest_first(conn, sample):
    expected = sample.labels("log_chai_1h", "log_chai_2h", "log_chai_3h")
    rows = rows_of(conn, "view_verification_history", domain_id=sample["domain_chai"])
    assert ids(rows) == expected
    assert [r["success"] for r in rows] == [True, False, False]
    assert "wrong token" in rows[1]["error"]
    assert rows[2]["dns_records"][0]["type"] == "TXT"
    # The troubleshooting one-liner is the same query with 'id' as its placeholder.
    assert ids(rows_of(conn, "troubleshoot_domain_verification_logs", id=sample["domain_chai"])) == expected
    assert ids(rows_of(conn, "troubleshoot_domain_verification_logs", id=sample["domain_khadi"])) == [
        sample["log_khadi"]]


@runbook_test("troubleshoot_domain_verify_retries")
def test_domain_verify_retries_are_listed_in_every_state(conn, sample):
    rows = rows_of(conn, "troubleshoot_domain_verify_retries")
    assert set(ids(rows)) == set(sample.labels("retry_dv_due", "retry_dv_completed"))
    assert {r["status"] for r in rows} == {"pending", "completed"}


# -- payments ---------------------------------------------------------------------------------------

@runbook_test("view_pending_reconciliations")
def test_pending_reconciliations_are_pending_and_mismatch_newest_first(conn, sample):
    rows = rows_of(conn, "view_pending_reconciliations")
    assert ids(rows) == sample.labels("rec_mismatch_new", "rec_pending_new", "rec_pending_old", "rec_mismatch_old")
    mismatch = rows[3]
    assert (mismatch["expected_amount"], mismatch["received_amount"], mismatch["difference"]) == (129_900, 120_000, -9_900)


@runbook_test("resolve_mismatch")
def test_resolve_mismatch_closes_that_row_only(conn, sample):
    user = uuid.uuid4()
    target = sample["rec_mismatch_old"]
    (result,) = run_runbook(conn, "resolve_mismatch", user_uuid=user, reconciliation_id=target)
    assert (result.command, result.rowcount) == ("UPDATE 1", 1)
    row = conn.cursor(row_factory=dict_row).execute(
        "select status, notes, reconciled_at, reconciled_by, updated_at from payment_reconciliation where id = %s",
        (target,)).fetchone()
    assert row == {"status": "resolved", "notes": "Resolved manually", "reconciled_at": sample.now,
                   "reconciled_by": user, "updated_at": sample.now}
    assert _one(conn, "select status from payment_reconciliation where id = %s", sample["rec_mismatch_new"]) == "mismatch"
    assert target not in ids(rows_of(conn, "view_pending_reconciliations"))
    assert len(rows_of(conn, "view_pending_reconciliations")) == 3


@runbook_test("reconciliation_review")
def test_reconciliation_review_lists_open_rows_older_than_a_day(conn, sample):
    rows = rows_of(conn, "reconciliation_review")
    assert set(ids(rows)) == set(sample.labels("rec_pending_old", "rec_mismatch_old"))


@runbook_test("view_refunds")
def test_view_refunds_lists_that_orders_refunds_newest_first(conn, sample):
    rows = rows_of(conn, "view_refunds", order_uuid=sample["order_paid"])
    assert ids(rows) == sample.labels("refund_paid_new", "refund_paid_old")
    assert [(r["amount"], r["currency"], r["status"]) for r in rows] == [(5_000, "INR", "pending"),
                                                                         (10_000, "INR", "processed")]
    assert all(isinstance(r["amount"], int) for r in rows)
    assert rows_of(conn, "view_refunds", order_uuid=sample["order_pending"]) == []


@runbook_test("view_unprocessed_payment_webhooks")
def test_unprocessed_payment_webhooks_newest_first_however_old(conn, sample):
    rows = rows_of(conn, "view_unprocessed_payment_webhooks")
    assert ids(rows) == sample.labels("pw_captured_new_open", "pw_refund_created_new_open", "pw_failed_25h_open",
                                      "pw_200d_open")
    assert {r["processed"] for r in rows} == {False}


@runbook_test("payment_webhook_stats")
def test_payment_webhook_stats_count_each_type_over_24_hours_only(conn, sample):
    rows = rows_of(conn, "payment_webhook_stats")
    stats = {r["webhook_type"]: (r["total"], r["processed"], r["pending"]) for r in rows}
    assert stats == {
        "payment.captured": (3, 2, 1),
        "payment.failed": (1, 1, 0),
        "refund.created": (1, 0, 1),
        "refund.processed": (1, 1, 0),
    }


@runbook_test("troubleshoot_recent_payment_webhooks")
def test_recent_payment_webhooks_are_the_ten_newest(conn, sample):
    rows = rows_of(conn, "troubleshoot_recent_payment_webhooks")
    assert ids(rows) == sample.labels(
        "pw_captured_new_open", "pw_captured_new_done1", "pw_refund_processed_new_done", "pw_failed_new_done",
        "pw_captured_new_done2", "pw_refund_created_new_open", "pw_captured_25h_done1", "pw_failed_25h_open",
        "pw_captured_25h_done2", "pw_89d_done")


@runbook_test("troubleshoot_payment_webhook_retries")
def test_payment_webhook_retries_are_listed_in_every_state(conn, sample):
    rows = rows_of(conn, "troubleshoot_payment_webhook_retries")
    assert set(ids(rows)) == set(sample.labels("retry_pw_due", "retry_pw_due_older", "retry_pw_later",
                                               "retry_pw_failed"))


# -- shipping --------------------------------------------------------------------------------------

@runbook_test("view_tracking_history")
def test_tracking_history_is_that_shipments_scans_newest_first(conn, sample):
    rows = rows_of(conn, "view_tracking_history", shipment_uuid=sample["shipment_fwd"])
    assert ids(rows) == sample.labels("track_fwd_3h", "track_fwd_26h", "track_fwd_50h")
    assert [r["timestamp"] for r in rows] == [sample.now - timedelta(hours=h) for h in (3, 26, 50)]


@runbook_test("get_current_status")
def test_current_status_is_each_shipments_latest_scan(conn, sample):
    rows = rows_of(conn, "get_current_status", order_uuid=sample["order_shipped"])
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == set(sample.labels("shipment_fwd", "shipment_second"))
    fwd = by_id[sample["shipment_fwd"]]
    assert (fwd["current_tracking_status"], fwd["current_location"], fwd["last_update"]) == (
        "REACHED AT DESTINATION HUB", "Chennai_Guindy_DC (Tamil Nadu)", sample.now - timedelta(hours=3))
    assert fwd["awb"] == "19041424751540"
    # A shipment with no scans yet still shows, with no tracking status.
    second = by_id[sample["shipment_second"]]
    assert (second["current_tracking_status"], second["current_location"], second["last_update"]) == (None, None, None)
    delivered = rows_of(conn, "get_current_status", order_uuid=sample["order_delivered"])
    assert [(r["id"], r["current_tracking_status"]) for r in delivered] == [(sample["shipment_delivered"], "DELIVERED")]


@runbook_test("view_unprocessed_shipping_webhooks")
def test_unprocessed_shipping_webhooks_newest_first_however_old(conn, sample):
    rows = rows_of(conn, "view_unprocessed_shipping_webhooks")
    assert ids(rows) == sample.labels("sw_ofd_new_open", "sw_transit_new_open", "sw_150d_open")


@runbook_test("shipping_webhook_stats")
def test_shipping_webhook_stats_count_each_type_over_24_hours_only(conn, sample):
    rows = rows_of(conn, "shipping_webhook_stats")
    stats = {r["webhook_type"]: (r["total"], r["processed"], r["pending"]) for r in rows}
    assert stats == {
        "IN TRANSIT": (2, 1, 1),
        "DELIVERED": (1, 1, 0),
        "OUT FOR DELIVERY": (1, 0, 1),
        "RTO INITIATED": (1, 1, 0),
    }


@runbook_test("troubleshoot_recent_shipping_webhooks")
def test_recent_shipping_webhooks_are_the_ten_newest(conn, sample):
    rows = rows_of(conn, "troubleshoot_recent_shipping_webhooks")
    assert ids(rows) == sample.labels(
        "sw_ofd_new_open", "sw_transit_new_open", "sw_transit_new_done", "sw_rto_new_done", "sw_delivered_new_done",
        "sw_pickup_30h_done", "sw_transit_30h_done", "sw_60d_done", "sw_91d_done", "sw_95d_done")


@runbook_test("troubleshoot_recent_tracking_updates")
def test_recent_tracking_updates_are_the_ten_latest_scans(conn, sample):
    rows = rows_of(conn, "troubleshoot_recent_tracking_updates")
    assert ids(rows) == sample.labels("track_fwd_3h", "track_fwd_26h", "track_fwd_50h",
                                      *(f"track_del_{i}" for i in range(7, 0, -1)))


# -- retries, health, cleanup ------------------------------------------------------------------------

@runbook_test("get_pending_retries")
def test_pending_retries_are_due_rows_oldest_first_and_reading_them_changes_nothing(conn, sample):
    snapshot = "select id, status, locked_until, claim_token, attempts from operation_retry_queue order by id"
    before = conn.execute(snapshot).fetchall()
    rows = rows_of(conn, "get_pending_retries")
    assert ids(rows) == sample.labels("retry_pw_due_older", "retry_sync_lease_expired", "retry_pw_due", "retry_dv_due")
    assert conn.execute(snapshot).fetchall() == before


@runbook_test("schedule_manual_retry")
def test_manual_retry_keeps_one_live_row_and_backs_off(conn, sample):
    webhook = sample["pw_captured_new_open"]
    values = {"'tenant-uuid'": f"'{sample['tenant_chai']}'", "'webhook-uuid'": f"'{webhook}'",
              '"webhook_id": "uuid"': f'"webhook_id": "{webhook}"', "'Error message'": "'order not found yet'"}
    live = """select id, attempts, next_retry_at, payload, last_error from operation_retry_queue
              where tenant_id = %s and operation_type = 'payment_webhook' and operation_id = %s
                and status in ('pending', 'processing')"""
    cur = conn.cursor(row_factory=dict_row)
    for attempt, minutes in ((1, 5), (2, 10)):
        (statement,) = _split(substituted("schedule_manual_retry", values))
        conn.execute(statement)
        rows = cur.execute(live, (sample["tenant_chai"], webhook)).fetchall()
        assert len(rows) == 1, "a manual retry must never duplicate the live row"
        assert rows[0]["attempts"] == attempt
        assert rows[0]["next_retry_at"] == sample.now + timedelta(minutes=minutes)
        assert rows[0]["payload"] == {"webhook_id": str(webhook)}
        assert rows[0]["last_error"] == "order not found yet"
    total = _one(conn, "select count(*) from operation_retry_queue where operation_id = %s", webhook)
    assert total == 1


@runbook_test("view_health_checks")
def test_health_checks_are_the_last_ten_payment_gateway_checks(conn, sample):
    rows = rows_of(conn, "view_health_checks")
    assert ids(rows) == sample.labels(*(f"health_pg_{i}" for i in range(10)))
    assert {r["check_type"] for r in rows} == {"payment_gateway"}
    assert [r["status"] for r in rows][2:5] == ["degraded", "healthy", "down"]


@runbook_test("cleanup_old_webhooks")
def test_cleanup_deletes_only_processed_webhooks_older_than_90_days(conn, sample):
    def webhook_ids() -> set[Any]:
        return {r[0] for r in conn.execute("select id from payment_webhooks union all select id from shipping_webhooks")}

    before = webhook_ids()
    results = run_runbook(conn, "cleanup_old_webhooks")
    assert [r.command for r in results] == ["DELETE 1", "DELETE 2"]
    deleted = before - webhook_ids()
    assert deleted == set(sample.labels("pw_120d_done", "sw_95d_done", "sw_91d_done"))
    # Unprocessed ones stay however old; processed ones younger than 90 days stay.
    assert set(sample.labels("pw_200d_open", "sw_150d_open", "pw_89d_done", "sw_60d_done")) <= webhook_ids()


# -- psql ------------------------------------------------------------------------------------------

# What the psql run puts in place of each placeholder (a sample label, or a literal value).
PSQL_VALUES: dict[str, str] = {
    "'domain-id'": "domain_khadi",
    "'id'": "domain_chai",
    "'order-uuid'": "order_paid",
    "'shipment-uuid'": "shipment_fwd",
    "'reconciliation-id'": "rec_mismatch_old",
    "'tenant-uuid'": "tenant_chai",
    "'webhook-uuid'": "pw_captured_new_open",
}
PSQL_LITERALS: dict[str, str] = {
    "'user-uuid'": "'6f1c2a4e-0000-4000-8000-0000000000aa'",
    "'Error message'": "'Razorpay order not found'",
}
PSQL_OVERRIDES: dict[str, dict[str, str]] = {
    "get_current_status": {"'order-uuid'": "order_shipped"},
}
# Runbooks that change rows: psql's command tags they must print (the rest must return rows).
PSQL_TAGS: dict[str, list[str]] = {
    "enable_auto_verification": ["UPDATE 1"],
    "resolve_mismatch": ["UPDATE 1"],
    "cleanup_old_webhooks": ["DELETE 1", "DELETE 2"],
}


def _psql_values(name: str, sample: SampleData) -> dict[str, str]:
    values: dict[str, str] = {}
    for placeholder in declared_placeholders(name):
        label = PSQL_OVERRIDES.get(name, {}).get(placeholder) or PSQL_VALUES.get(placeholder)
        if label is not None:
            values[placeholder] = f"'{sample[label]}'"
        else:
            assert placeholder in PSQL_LITERALS, f"{name}.sql: add a value for {placeholder} to PSQL_VALUES"
            values[placeholder] = PSQL_LITERALS[placeholder]
    if name == "schedule_manual_retry":
        values['"webhook_id": "uuid"'] = f'"webhook_id": "{sample["pw_captured_new_open"]}"'
    return values


@pytest.mark.parametrize("role", ["postgres", "storeops_runner"])
def test_every_runbook_runs_verbatim_in_psql(fresh_db, tmp_path, role):
    """psql -v ON_ERROR_STOP=1 -f <runbook>, placeholders replaced, against a migrated database, as the
    superuser an operator uses and as the runner's role (which the guide's queries must also suit)."""
    assert PSQL, "psql not found: install postgresql-client-15"
    with psycopg.connect(fresh_db) as c:
        sample = load_sample_data(c)
        c.commit()
    env = {**os.environ, "PGOPTIONS": f"-c role={role}" if role != "postgres" else ""}
    whoami = subprocess.run([PSQL, fresh_db, "-X", "-A", "-t", "-c", "select current_user"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert whoami.stdout.strip() == role, whoami.stderr
    failures = []
    for name in _runbook_names():
        path = tmp_path / f"{name}.sql"
        path.write_text(substituted(name, _psql_values(name, sample)))
        proc = subprocess.run([PSQL, fresh_db, "-X", "-v", "ON_ERROR_STOP=1", "-f", str(path)],
                              capture_output=True, text=True, env=env, timeout=60)
        out = proc.stdout
        if proc.returncode != 0 or "ERROR" in proc.stderr:
            failures.append(f"{name}.sql: exit {proc.returncode}: {proc.stderr.strip()}")
        elif name in PSQL_TAGS:
            if [line for line in out.splitlines() if re.fullmatch(r"(UPDATE|DELETE) \d+", line)] != PSQL_TAGS[name]:
                failures.append(f"{name}.sql: expected {PSQL_TAGS[name]}, got:\n{out}")
        elif "(0 rows)" in out or not re.search(r"\(\d+ rows?\)", out):
            failures.append(f"{name}.sql returned no rows:\n{out}")
    assert not failures, "\n".join(failures)
    # The manual retry really went through psql: one live row for that webhook.
    with psycopg.connect(fresh_db) as c:
        payload = c.execute("select payload from storeops.operation_retry_queue where operation_id = %s",
                            (sample["pw_captured_new_open"],)).fetchall()
    assert [json.dumps(p[0]) for p in payload] == [json.dumps({"webhook_id": str(sample["pw_captured_new_open"])})]
