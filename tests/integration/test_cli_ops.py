"""Operator commands as a person runs them: storeops health, status, verify-domain."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
from fakes.dns_servers import knot  # noqa: F401  (fixture)
from fakes.razorpay_server import FakeRazorpay
from fakes.shiprocket_server import shiprocket_server  # noqa: F401  (fixture)
from runner_proc import ROOT


def _cli(url: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=90, env={**os.environ, "DATABASE_URL": url, **env})


def test_health_checks_every_dependency_and_records_them(fresh_db, knot, shiprocket_server):  # noqa: F811
    knot.set_zone("platform.test", ["stores IN A 192.0.2.10"])
    with FakeRazorpay() as rzp:
        env = {"RAZORPAY_API_BASE": rzp.url, "RAZORPAY_KEY_ID": rzp.key_id, "RAZORPAY_KEY_SECRET": rzp.key_secret,
               "SHIPROCKET_API_BASE": shiprocket_server.url, "SHIPROCKET_EMAIL": shiprocket_server.email,
               "SHIPROCKET_PASSWORD": shiprocket_server.password, "STOREOPS_DNS_NAMESERVERS": knot.address,
               "STOREOPS_PLATFORM_CNAME": "stores.platform.test"}
        ok = _cli(fresh_db, "health", **env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        for check in ("domain_verification", "payment_gateway", "shipping_api", "database"):
            assert check in ok.stdout
        down = _cli(fresh_db, "health", **{**env, "RAZORPAY_API_BASE": "http://127.0.0.1:9"})
    assert down.returncode == 1
    assert "down" in down.stdout and "Traceback" not in down.stderr
    with psycopg.connect(fresh_db) as c:
        rows = c.execute("""select check_type, status, error from storeops.system_health_checks
                            order by checked_at, check_type""").fetchall()
    assert len(rows) == 8
    first, second = rows[:4], rows[4:]
    assert {r[1] for r in first} == {"healthy"}
    gateway = [r for r in second if r[0] == "payment_gateway"][0]
    assert gateway[1] == "down" and gateway[2]
    # The seed's runbook query sees them.
    with psycopg.connect(fresh_db) as c:
        seen = c.execute("SELECT * FROM system_health_checks WHERE check_type = 'payment_gateway' "
                         "ORDER BY checked_at DESC LIMIT 10").fetchall()
    assert len(seen) == 2


def test_status_shows_backlog_retries_and_mismatches(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        c.execute("insert into storeops.payment_webhooks (event_id, webhook_type, payload) values ('e1', 'payment.captured', '{}')")
        c.execute("select storeops.schedule_operation_retry(null, 'refund_create', gen_random_uuid(), '{}', 'gateway timeout')")
        c.execute("""insert into storeops.payment_reconciliation (received_amount, expected_amount, status, reason, razorpay_payment_id)
                     values (900, 1000, 'mismatch', 'under', 'pay_X')""")
        tenant = c.execute("insert into storeops.tenants (name) values ('M') returning id").fetchone()[0]
        c.execute("""insert into storeops.orders (tenant_id, amount, amount_paid, payment_status)
                     values (%s, 123456, 123456, 'captured')""", (tenant,))
        c.execute("update storeops.orders set status = 'cancelled'")
    result = _cli(fresh_db, "status")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Unprocessed webhooks" in out and "razorpay" in out
    assert "payment.captured" in out
    assert "refund_create" in out and "pending" in out
    assert "mismatch" in out and "under" in out and "-100" in out
    owed = out.split("== Refunds owed on cancelled orders", 1)[1].split("==", 1)[0]
    assert "INR" in owed and "123456" in owed


def test_verify_domain_cli_logs_an_attempt(fresh_db, knot):  # noqa: F811
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = c.execute("insert into storeops.tenants (name) values ('D') returning id").fetchone()[0]
        token = c.execute("insert into storeops.custom_domains (tenant_id, domain) values (%s, 'www.shop.test') "
                          "returning verification_token", (tenant,)).fetchone()[0]
    knot.set_zone("shop.test", [f'_storeops-verification.www IN TXT "{token}"', "www IN CNAME stores.platform.test."])
    knot.set_zone("platform.test", ["stores IN A 192.0.2.10"])
    env = {"STOREOPS_DNS_NAMESERVERS": knot.address, "STOREOPS_PLATFORM_CNAME": "stores.platform.test"}
    result = _cli(fresh_db, "verify-domain", "WWW.Shop.Test.", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verified" in result.stdout
    missing = _cli(fresh_db, "verify-domain", "nope.shop.test", **env)
    assert missing.returncode == 1 and "no custom domain" in missing.stderr
    with psycopg.connect(fresh_db) as c:
        assert c.execute("select status from storeops.custom_domains").fetchone()[0] == "verified"
        assert c.execute("select count(*) from storeops.domain_verification_logs where success").fetchone()[0] == 1
    # A second store claims it too: by name the command cannot tell which claim to check, and says so.
    with psycopg.connect(fresh_db, autocommit=True) as c:
        other = c.execute("insert into storeops.tenants (name) values ('E') returning id").fetchone()[0]
        second, token2 = c.execute("insert into storeops.custom_domains (tenant_id, domain) values (%s, 'www.shop.test') "
                                   "returning id, verification_token", (other,)).fetchone()
    knot.set_zone("shop.test", [f'_storeops-verification.www IN TXT "{token}"', f'_storeops-verification.www IN TXT "{token2}"',
                                "www IN CNAME stores.platform.test."])
    both = _cli(fresh_db, "verify-domain", "www.shop.test", **env)
    assert both.returncode == 1 and "2 stores have a claim on www.shop.test" in both.stderr and str(second) in both.stderr
    by_id = _cli(fresh_db, "verify-domain", str(second), **env)
    assert by_id.returncode == 1 and "verified by another store" in by_id.stdout  # checked, not verified
