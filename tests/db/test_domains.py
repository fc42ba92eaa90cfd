"""Domain verification state machine in SQL: record_domain_verification, record_ssl_check,
list_domains_due_for_recheck, and the seed guide's queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb
from support import as_tenant, make_tenant, refused, roll_back_to_before

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
QUERY = [{"name": "_storeops-verification.shop.example.in", "type": "TXT", "answers": [], "rcode": "NXDOMAIN",
          "ttl": None, "resolver": "127.0.0.1:5353", "elapsed_ms": 1.2}]


def make_domain(c, tenant, domain="shop.example.in", status="pending"):
    return c.execute(
        "insert into storeops.custom_domains (tenant_id, domain, status) values (%s, %s, %s) returning id",
        (tenant, domain, status)).fetchone()[0]


def record(c, domain_id, success, definitive=True, error=None, at=T0):
    return c.execute(
        """select status, verification_attempts, consecutive_failures, last_verification_error,
                  last_verified_at, last_checked_at
           from storeops.record_domain_verification(%s, %s, %s, %s, %s, 7, %s)""",
        (domain_id, success, definitive, error, Jsonb(QUERY), at)).fetchone()


def retry_row(c, domain_id):
    return c.execute(
        """select status, attempts, next_retry_at, payload from storeops.operation_retry_queue
           where operation_type = 'domain_verify' and operation_id = %s order by created_at desc limit 1""",
        (domain_id,)).fetchone()


@pytest.fixture
def tenant(conn):
    return make_tenant(conn)


def test_success_verifies_and_logs_the_attempt(conn, tenant):
    d = make_domain(conn, tenant)
    status, attempts, failures, error, verified_at, checked_at = record(conn, d, True)
    assert (status, attempts, failures, error) == ("verified", 1, 0, None)
    assert verified_at == checked_at == T0
    # The seed guide's history query, verbatim.
    logs = conn.execute(f"SELECT * FROM domain_verification_logs WHERE domain_id = '{d}' ORDER BY verified_at DESC")
    rows = logs.fetchall()
    cols = [col.name for col in logs.description]
    log = dict(zip(cols, rows[0], strict=True))
    assert len(rows) == 1 and log["success"] is True and log["tenant_id"] == tenant
    assert log["dns_records"] == QUERY and log["duration_ms"] == 7 and log["verified_at"] == T0


def test_failures_of_a_new_domain_are_retried_5_10_20_40_80_minutes_then_failed(conn, tenant):
    d = make_domain(conn, tenant)
    now = T0
    for n, minutes in enumerate([5, 10, 20, 40, 80], start=1):
        status, attempts, failures, error, _, _ = record(conn, d, False, True, "NXDOMAIN for shop.example.in", now)
        assert (status, attempts, error) == ("pending", n, "NXDOMAIN for shop.example.in")
        q_status, q_attempts, next_at, payload = retry_row(conn, d)
        assert (q_status, q_attempts, next_at) == ("pending", n, now + timedelta(minutes=minutes))
        assert payload["domain_id"] == str(d)
        now = next_at
    status, attempts, *_ = record(conn, d, False, True, "NXDOMAIN for shop.example.in", now)
    assert status == "failed" and attempts == 6
    assert retry_row(conn, d)[0] == "failed"
    # The runbook's queue check sees the domain's retry row.
    rows = conn.execute("SELECT * FROM operation_retry_queue WHERE operation_type = 'domain_verify'").fetchall()
    assert len(rows) == 1
    assert conn.execute("select count(*) from domain_verification_logs where domain_id = %s", (d,)).fetchone()[0] == 6


def test_success_after_failures_completes_the_live_retry(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, False, True, "no TXT record at _storeops-verification.shop.example.in")
    assert retry_row(conn, d)[0] == "pending"
    status, attempts, failures, error, *_ = record(conn, d, True, at=T0 + timedelta(minutes=5))
    assert (status, attempts, failures, error) == ("verified", 2, 0, None)
    assert retry_row(conn, d)[0] == "completed"
    assert conn.execute("select count(*) from get_pending_retries(100) where operation_id = %s", (d,)).fetchone()[0] == 0


def test_verified_domain_goes_at_risk_after_two_definitive_failures(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    first = record(conn, d, False, True, "CNAME points to old.host.in, expected stores.storeops.in", T0 + timedelta(hours=6))
    assert first[0] == "verified" and first[2] == 1
    second = record(conn, d, False, True, "CNAME points to old.host.in, expected stores.storeops.in", T0 + timedelta(hours=7))
    assert second[0] == "at_risk" and second[2] == 2
    assert second[4] == T0  # last_verified_at keeps the last success
    # Records come back: verified again, counter reset.
    back = record(conn, d, True, at=T0 + timedelta(hours=8))
    assert back[0] == "verified" and back[2] == 0


def at_risk_since(c, domain_id):
    return c.execute("select at_risk_since from storeops.custom_domains where id = %s", (domain_id,)).fetchone()[0]


def test_an_at_risk_domain_fails_at_a_definitive_failure_after_seven_days_of_grace(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    gone = "CNAME points to old.host.in, expected stores.storeops.in"
    record(conn, d, False, True, gone, T0 + timedelta(days=1))
    assert record(conn, d, False, True, gone, T0 + timedelta(days=2))[0] == "at_risk"
    assert at_risk_since(conn, d) == T0 + timedelta(days=2)
    # Within the grace: still at risk, and the grace runs from when it went at risk.
    assert record(conn, d, False, True, gone, T0 + timedelta(days=8))[0] == "at_risk"
    assert at_risk_since(conn, d) == T0 + timedelta(days=2)
    # Past it, a timeout still demotes nothing ("could not ask" is not "failed").
    assert record(conn, d, False, False, "timeout at 127.0.0.1:5353", T0 + timedelta(days=9, minutes=1))[0] == "at_risk"
    status, _, _, error, verified_at, _ = record(conn, d, False, True, gone, T0 + timedelta(days=9, minutes=2))
    assert status == "failed"
    assert error == f"{gone} (at risk since 2026-03-03 10:00 UTC; 7-day grace over)"
    assert verified_at == T0 and at_risk_since(conn, d) is None
    assert retry_row(conn, d)[0] == "failed"  # its live retry ends: nothing checks it again and makes it pending
    # No longer re-checked as a verified domain would be.
    due = conn.execute("select id from storeops.list_domains_due_for_recheck(interval '0', 100, %s)",
                       (T0 + timedelta(days=30),)).fetchall()
    assert (d,) not in due
    # Its records are back (its owner asked again): verified.
    assert record(conn, d, True, at=T0 + timedelta(days=12))[0] == "verified"


def test_the_grace_starts_again_each_time_a_domain_goes_at_risk(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    for day in (1, 2):
        record(conn, d, False, True, "NXDOMAIN for shop.example.in", T0 + timedelta(days=day))
    assert record(conn, d, True, at=T0 + timedelta(days=5))[0] == "verified"
    assert at_risk_since(conn, d) is None
    for day in (10, 11):
        record(conn, d, False, True, "NXDOMAIN for shop.example.in", T0 + timedelta(days=day))
    assert at_risk_since(conn, d) == T0 + timedelta(days=11)
    # 8 days after it first went at risk, but 6 since this time: still at risk.
    assert record(conn, d, False, True, "NXDOMAIN for shop.example.in", T0 + timedelta(days=17))[0] == "at_risk"


def test_timeouts_and_servfail_never_flag_a_verified_domain_but_are_retried(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    for i in range(1, 7):
        row = record(conn, d, False, False, "timeout at 127.0.0.1:5353 asking for TXT x", T0 + timedelta(hours=i))
        assert row[0] == "verified" and row[2] == 0
    assert retry_row(conn, d)[0] == "failed"  # retries used up, still verified
    # A definitive failure between transient ones counts; the transient ones neither count nor reset.
    record(conn, d, False, True, "NXDOMAIN for shop.example.in", T0 + timedelta(hours=8))
    record(conn, d, False, False, "SERVFAIL from 127.0.0.1:5353 for TXT x", T0 + timedelta(hours=9))
    row = record(conn, d, False, True, "NXDOMAIN for shop.example.in", T0 + timedelta(hours=10))
    assert row[0] == "at_risk"


def test_failure_log_keeps_the_error_and_definitive_flag(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, False, False, "timeout at 10.0.0.1:53 asking for TXT x")
    success, definitive, error = conn.execute(
        "select success, definitive, error from domain_verification_logs where domain_id = %s", (d,)).fetchone()
    assert (success, definitive, error) == (False, False, "timeout at 10.0.0.1:53 asking for TXT x")


def test_unknown_domain_is_an_error(conn):
    with pytest.raises(psycopg.errors.NoDataFound, match="does not exist"):
        conn.execute("select storeops.record_domain_verification(gen_random_uuid(), true, true, null, '[]')")


def test_tenant_sees_only_its_own_logs(conn, tenant):
    other = make_tenant(conn, "Other")
    mine, theirs = make_domain(conn, tenant, "a.example.in"), make_domain(conn, other, "b.example.in")
    record(conn, mine, True)
    record(conn, theirs, True)
    as_tenant(conn, tenant)
    seen = {r[0] for r in conn.execute("select domain_id from storeops.domain_verification_logs")}
    assert seen == {mine}


def test_recheck_lists_auto_verify_and_stale_verified_domains(conn, tenant):
    fresh = make_domain(conn, tenant, "fresh.example.in")
    stale = make_domain(conn, tenant, "stale.example.in")
    auto = make_domain(conn, tenant, "auto.example.in")
    queued = make_domain(conn, tenant, "queued.example.in")
    plain = make_domain(conn, tenant, "plain.example.in")  # pending, not auto_verify: left to its owner
    record(conn, fresh, True, at=T0 + timedelta(hours=5))
    record(conn, stale, True, at=T0 - timedelta(hours=1))
    conn.execute(f"UPDATE custom_domains SET auto_verify = true WHERE id = '{auto}'")  # the seed's statement
    conn.execute(f"UPDATE custom_domains SET auto_verify = true WHERE id = '{queued}'")
    record(conn, queued, False, True, "NXDOMAIN for queued.example.in", T0)  # on the retry schedule now
    due = [r[0] for r in conn.execute(
        "select domain from storeops.list_domains_due_for_recheck(interval '6 hours', 100, %s)",
        (T0 + timedelta(hours=6),))]
    assert due == ["auto.example.in", "stale.example.in"]
    assert plain not in due
    limited = conn.execute("select count(*) from storeops.list_domains_due_for_recheck('6 hours', 1, %s)",
                           (T0 + timedelta(hours=6),)).fetchone()[0]
    assert limited == 1


@pytest.mark.parametrize(("status", "expires_in", "expected"), [
    ("active", timedelta(days=90), "active"),
    ("active", timedelta(days=20), "expiring"),
    ("expiring", timedelta(days=-1), "expired"),
])
def test_ssl_status_follows_the_expiry(conn, tenant, status, expires_in, expected):
    d = make_domain(conn, tenant)
    row = conn.execute(
        "select ssl_status, ssl_expires_at, ssl_issuer, ssl_error, ssl_checked_at from storeops.record_ssl_check(%s, %s, %s, %s, null, %s)",
        (d, status, T0 + expires_in, "Let's Encrypt / R11", T0)).fetchone()
    assert row[0] == expected and row[1] == T0 + expires_in and row[2] == "Let's Encrypt / R11" and row[4] == T0
    assert (row[3] is None) == (expected != "expired")


def test_ssl_failure_keeps_the_last_known_certificate_and_the_reason(conn, tenant):
    d = make_domain(conn, tenant)
    conn.execute("select storeops.record_ssl_check(%s, 'active', %s, 'R11', null, %s)", (d, T0 + timedelta(days=60), T0))
    row = conn.execute(
        "select ssl_status, ssl_expires_at, ssl_issuer, ssl_error from storeops.record_ssl_check(%s, 'failed', null, null, %s, %s)",
        (d, "connection refused by shop.example.in:443", T0)).fetchone()
    assert row == ("failed", T0 + timedelta(days=60), "R11", "connection refused by shop.example.in:443")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not one of"):
        conn.execute("select storeops.record_ssl_check(%s, 'great', null, null, null)", (d,))


def _refused(c, sql, args, error=psycopg.errors.InsufficientPrivilege):
    refused(c, sql, args, error)


def test_a_tenant_adds_domains_and_switches_auto_verify_but_cannot_write_their_verification(conn, tenant):
    as_tenant(conn, tenant)
    d, status, token = conn.execute(
        "insert into storeops.custom_domains (tenant_id, domain) values (%s, 'mine.example.in') "
        "returning id, status, verification_token", (tenant,)).fetchone()
    assert status == "pending" and len(token) == 32  # storeops's token, not one the store chose
    conn.execute(f"UPDATE custom_domains SET auto_verify = true WHERE id = '{d}'")  # the seed guide's, verbatim
    for sql in (
        # marking a domain verified without any DNS check, at insert or later
        "insert into storeops.custom_domains (tenant_id, domain, status) values (%s, 'victim.example.in', 'verified')",
        "update storeops.custom_domains set status = 'verified', last_verified_at = now() where tenant_id = %s",
        # choosing the token (say, one an earlier owner of the domain left in DNS)
        "insert into storeops.custom_domains (tenant_id, domain, verification_token) values (%s, 'old.example.in', 'abc')",
        # renaming a checked domain to one never checked; hiding a domain at risk; faking SSL
        "update storeops.custom_domains set domain = 'never-checked.example.in' where tenant_id = %s",
        "update storeops.custom_domains set at_risk_since = null, consecutive_failures = 0 where tenant_id = %s",
        "update storeops.custom_domains set ssl_status = 'active' where tenant_id = %s",
    ):
        _refused(conn, sql, (tenant,))
    assert conn.execute("select status, auto_verify, domain from storeops.custom_domains where id = %s",
                        (d,)).fetchone() == ("pending", True, "mine.example.in")
    conn.execute("delete from storeops.custom_domains where id = %s", (d,))  # and it can remove one


@pytest.mark.parametrize("bad", ["bücher.de", " shop.example.in", "shop_1.example.in", "localhost",
                                 "-shop.example.in", "shop-.example.in", "a..example.in", "shop.example.in\u3002",
                                 "shop.example.in/", f"{'a' * 64}.example.in"])
def test_a_domain_is_stored_as_a_host_name_in_a_label_form(conn, tenant, bad):
    _refused(conn, "insert into storeops.custom_domains (tenant_id, domain) values (%s, %s)", (tenant, bad),
             psycopg.errors.CheckViolation)


def test_a_label_and_plain_host_names_are_accepted(conn, tenant):
    for good in ("xn--bcher-kva.de", "shop-1.example.in", "a.in", f"{'a' * 63}.example.in"):
        make_domain(conn, tenant, good)


def domain_alerts(c, domain_id):
    return c.execute("select kind, tenant_id, details from storeops.alerts where details ->> 'domain_id' = %s",
                     (str(domain_id),)).fetchall()


def test_a_verified_domain_going_at_risk_then_failing_raises_one_alert_each(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    gone = "CNAME points to old.host.in, expected stores.storeops.in"
    record(conn, d, False, True, gone, T0 + timedelta(days=1))
    assert domain_alerts(conn, d) == []  # one failure: still verified, nobody paged
    record(conn, d, False, True, gone, T0 + timedelta(days=2))
    record(conn, d, False, True, gone, T0 + timedelta(days=3))  # still at risk: no second alert
    [(kind, tenant_id, details)] = domain_alerts(conn, d)
    assert (kind, tenant_id) == ("domain_at_risk", tenant)
    assert details["domain"] == "shop.example.in" and details["error"] == gone
    assert details["at_risk_since"].startswith("2026-03-03")
    assert record(conn, d, False, True, gone, T0 + timedelta(days=10))[0] == "failed"
    kinds = [k for k, _, _ in domain_alerts(conn, d)]
    assert sorted(kinds) == ["domain_at_risk", "domain_failed"]
    failed = next(x for k, _, x in domain_alerts(conn, d) if k == "domain_failed")
    assert "7-day grace over" in failed["error"] and failed["last_verified_at"].startswith("2026-03-01")


def test_a_new_domain_that_never_verifies_raises_no_domain_alert(conn, tenant):
    d = make_domain(conn, tenant)
    now = T0
    for _ in range(6):
        status = record(conn, d, False, True, "NXDOMAIN for shop.example.in", now)[0]
        now += timedelta(hours=3)
    assert status == "failed"
    assert domain_alerts(conn, d) == []  # the retry queue's operation_failed says it (never a live store)


def ssl_check(c, domain_id, status, expires_at, at, error=None):
    return c.execute("select ssl_status from storeops.record_ssl_check(%s, %s, %s, 'R11', %s, %s)",
                     (domain_id, status, expires_at, error, at)).fetchone()[0]


def ssl_alerts(c, domain_id):
    return c.execute("select kind, tenant_id, details ->> 'ssl_expires_at' from storeops.alerts "
                     "where details ->> 'domain_id' = %s and kind like 'ssl_%%' order by created_at, kind",
                     (str(domain_id),)).fetchall()


def test_a_live_domains_certificate_running_out_raises_one_alert_per_certificate_and_state(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    first_cert, renewed = T0 + timedelta(days=40), T0 + timedelta(days=130)
    assert ssl_check(conn, d, "active", first_cert, T0) == "active"
    # 29 days left: shown as expiring, but ACME clients renew about now; nobody is paged yet.
    assert ssl_check(conn, d, "active", first_cert, T0 + timedelta(days=11)) == "expiring"
    assert ssl_alerts(conn, d) == []
    assert ssl_check(conn, d, "active", first_cert, T0 + timedelta(days=26)) == "expiring"  # 14 days left
    assert ssl_check(conn, d, "active", first_cert, T0 + timedelta(days=27)) == "expiring"  # known: no second
    assert ssl_check(conn, d, "failed", None, T0 + timedelta(days=28), "timeout") == "failed"  # a blip
    assert ssl_check(conn, d, "active", first_cert, T0 + timedelta(days=29)) == "expiring"  # still known
    assert ssl_check(conn, d, "active", first_cert, T0 + timedelta(days=41)) == "expired"
    assert ssl_check(conn, d, "active", first_cert, T0 + timedelta(days=42)) == "expired"
    # Renewed, and months later near its end again: told again.
    assert ssl_check(conn, d, "active", renewed, T0 + timedelta(days=43)) == "active"
    assert ssl_check(conn, d, "active", renewed, T0 + timedelta(days=117)) == "expiring"
    alerts = ssl_alerts(conn, d)
    assert sorted((k, t, e[:10]) for k, t, e in alerts) == [
        ("ssl_expired", tenant, "2026-04-10"), ("ssl_expiring", tenant, "2026-04-10"),
        ("ssl_expiring", tenant, "2026-07-09")]


def test_a_failed_check_just_before_the_threshold_does_not_swallow_the_alert(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    cert = T0 + timedelta(days=40)
    assert ssl_check(conn, d, "active", cert, T0) == "active"
    assert ssl_check(conn, d, "failed", None, T0 + timedelta(days=27), "timeout") == "failed"  # 13 days left, unseen
    assert ssl_check(conn, d, "active", cert, T0 + timedelta(days=28)) == "expiring"
    assert [k for k, _, _ in ssl_alerts(conn, d)] == ["ssl_expiring"]


def test_a_domain_not_live_raises_no_certificate_alert(conn, tenant):
    d = make_domain(conn, tenant)  # pending: nobody is sent there yet
    assert ssl_check(conn, d, "active", T0 - timedelta(days=1), T0) == "expired"
    assert conn.execute("select count(*) from storeops.alerts where details ->> 'domain_id' = %s",
                        (str(d),)).fetchone()[0] == 0


def asked(c, domain_id, at, error="NXDOMAIN for _storeops-verification.shop.example.in"):
    """A check someone asked for (the admin endpoint, `storeops verify-domain`)."""
    return c.execute(
        "select status from storeops.record_domain_verification(%s, false, true, %s, %s, 7, %s, p_manual => true)",
        (domain_id, error, Jsonb(QUERY), at)).fetchone()[0]


def retry_rows(c, domain_id):
    return c.execute("select status, attempts, next_retry_at from storeops.operation_retry_queue "
                     "where operation_type = 'domain_verify' and operation_id = %s order by created_at", (domain_id,)).fetchall()


def test_pressing_verify_again_and_again_leaves_the_retry_schedule_alone(conn, tenant):
    d = make_domain(conn, tenant)
    assert asked(conn, d, T0) == "pending"  # the first ask starts the schedule
    assert retry_rows(conn, d) == [("pending", 1, T0 + timedelta(minutes=5))]
    for n in range(1, 7):  # a store waiting for DNS to propagate, clicking
        assert asked(conn, d, T0 + timedelta(seconds=10 * n)) == "pending"
    assert retry_rows(conn, d) == [("pending", 1, T0 + timedelta(minutes=5))]  # not failed, not pushed out
    assert conn.execute("select count(*) from storeops.domain_verification_logs where domain_id = %s",
                        (d,)).fetchone()[0] == 7  # every click is in the history
    # The automatic tries go on as scheduled.
    record(conn, d, False, True, "NXDOMAIN", T0 + timedelta(minutes=5))
    assert retry_rows(conn, d) == [("pending", 2, T0 + timedelta(minutes=15))]


def test_a_failed_auto_verify_domain_stays_failed_without_a_new_schedule_until_it_verifies(conn, tenant):
    d = make_domain(conn, tenant)
    conn.execute("update storeops.custom_domains set auto_verify = true where id = %s", (d,))
    now = T0
    for _ in range(6):
        record(conn, d, False, True, "NXDOMAIN", now)
        now += timedelta(hours=3)
    assert retry_rows(conn, d)[-1][0] == "failed"
    alerts_before = conn.execute("select count(*) from storeops.alerts").fetchone()[0]
    # The 6-hourly re-checks of an auto_verify domain: logged, still failed, nothing queued or alerted.
    for _ in range(4):
        assert record(conn, d, False, True, "NXDOMAIN", now)[0] == "failed"
        now += timedelta(hours=6)
    assert len(retry_rows(conn, d)) == 1
    assert conn.execute("select count(*) from storeops.alerts").fetchone()[0] == alerts_before
    # Its owner asking again starts a schedule; records that appear verify it.
    assert asked(conn, d, now) == "pending" and len(retry_rows(conn, d)) == 2
    assert record(conn, d, True, at=now + timedelta(minutes=5))[0] == "verified"


def test_an_at_risk_domain_is_followed_by_the_re_checks_not_a_retry_schedule_each(conn, tenant):
    d = make_domain(conn, tenant)
    record(conn, d, True)
    gone = "CNAME points to old.host.in, expected stores.storeops.in"
    record(conn, d, False, True, gone, T0 + timedelta(days=1))  # verified, one failure: checked again soon
    assert retry_rows(conn, d) == [("pending", 1, T0 + timedelta(days=1, minutes=5))]
    assert record(conn, d, False, True, gone, T0 + timedelta(days=1, minutes=5))[0] == "at_risk"
    conn.execute("update storeops.operation_retry_queue set status = 'completed' where operation_id = %s", (d,))  # the worker
    for k in range(1, 8):  # the 6-hourly re-checks of the first days at risk
        assert record(conn, d, False, True, gone, T0 + timedelta(days=1, hours=6 * k))[0] == "at_risk"
    assert len(retry_rows(conn, d)) == 1  # no new schedule each time
    assert conn.execute("select count(*) from storeops.alerts where kind = 'operation_failed'").fetchone()[0] == 0
    assert record(conn, d, False, True, gone, T0 + timedelta(days=8, minutes=6))[0] == "failed"
    kinds = [k for k, _, _ in domain_alerts(conn, d)]
    assert sorted(kinds) == ["domain_at_risk", "domain_failed"]


def test_a_domain_name_stored_before_the_check_still_gets_its_checks_and_is_reported(fresh_db):
    from runner import migrate

    roll_back_to_before(fresh_db, "0056_domain_state_is_written_by_checks_only")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = make_tenant(c)
        odd = make_domain(c, tenant, "bücher.de")  # a U-label, inserted directly before 0056
        make_domain(c, tenant, "fine.example.in")
    migrate.apply(fresh_db)
    with psycopg.connect(fresh_db) as c:
        [(tenant_id, details)] = c.execute(
            "select tenant_id, details from storeops.alerts where kind = 'domain_names_to_fix'").fetchall()
        assert tenant_id is None and details["domains"] == 1 and details["sample"][0]["domain"] == "bücher.de"
        assert record(c, odd, True)[0] == "verified"  # its row can still be updated
        _refused(c, "update storeops.custom_domains set domain = 'bücher-2.de' where id = %s", (odd,),
                 psycopg.errors.CheckViolation)


def test_several_stores_may_claim_a_domain_and_only_one_holds_it(conn, tenant):
    squatter, owner = tenant, make_tenant(conn, "The Real Owner")
    squat = make_domain(conn, squatter, "brand.example.in")  # typed first, can never publish the TXT
    claim = make_domain(conn, owner, "brand.example.in")  # no longer refused
    _refused(conn, "insert into storeops.custom_domains (tenant_id, domain) values (%s, 'brand.example.in')", (owner,),
             psycopg.errors.UniqueViolation)  # once per store
    assert record(conn, claim, True)[0] == "verified"
    # The other claim's check finding records (both tokens published, say) does not make a second holder.
    status, _, failures, error, verified_at, _ = record(conn, squat, True, at=T0 + timedelta(minutes=1))
    assert (status, failures, verified_at) == ("pending", 1, None)
    assert error.startswith("brand.example.in is verified by another store")
    logged = conn.execute("select success, definitive, error from storeops.domain_verification_logs "
                          "where domain_id = %s", (squat,)).fetchone()
    assert logged[:2] == (False, True) and "another store" in logged[2]
    _refused(conn, "update storeops.custom_domains set status = 'verified' where id = %s", (squat,),
             psycopg.errors.UniqueViolation)
    # Once the holder's records are gone and its claim is released, the other claim can verify.
    gone = "no TXT record at _storeops-verification.brand.example.in"
    for day in (1, 2, 10):
        record(conn, claim, False, True, gone, T0 + timedelta(days=day))
    assert conn.execute("select status from storeops.custom_domains where id = %s", (claim,)).fetchone()[0] == "failed"
    assert record(conn, squat, True, at=T0 + timedelta(days=11))[0] == "verified"


def test_two_stores_checking_one_domain_at_once_take_turns(fresh_db):
    import threading

    with psycopg.connect(fresh_db, autocommit=True) as c:
        first, second = make_tenant(c, "First"), make_tenant(c, "Second")
        a, b = make_domain(c, first, "both.example.in"), make_domain(c, second, "both.example.in")
    with psycopg.connect(fresh_db) as one, psycopg.connect(fresh_db, autocommit=True) as two:
        assert record(one, a, True)[0] == "verified"  # not committed yet
        out = {}
        racer = threading.Thread(target=lambda: out.setdefault("b", record(two, b, True)))
        racer.start()
        racer.join(0.5)
        assert racer.is_alive()  # waits its turn instead of failing on the unique index later
        one.commit()
        racer.join(10)
    status, _, failures, error, _, _ = out["b"]
    assert (status, failures) == ("pending", 1) and "verified by another store" in error


def test_the_claims_migration_refuses_to_finish_over_an_interrupted_index_build(fresh_db):
    from runner import migrate

    roll_back_to_before(fresh_db, "0061_domains_are_claimed_per_store")
    with psycopg.connect(fresh_db, autocommit=True) as c:
        # What a cancelled CREATE INDEX CONCURRENTLY leaves behind: the index, marked invalid.
        c.execute("create index custom_domains_domain_idx on storeops.custom_domains (domain)")
        c.execute("update pg_index set indisvalid = false where indexrelid = 'storeops.custom_domains_domain_idx'::regclass")
    with pytest.raises(Exception, match="invalid"):
        migrate.apply(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as c:  # the old rule still holds meanwhile
        assert c.execute("select count(*) from pg_constraint where conname = 'custom_domains_domain_unique'").fetchone()[0] == 1
        c.execute("drop index if exists storeops.custom_domains_domain_idx")  # (yoyo's undo of the try may have)
    migrate.apply(fresh_db)
    assert not migrate.state(fresh_db).pending
