"""pg_cron schedules installed by `storeops cron install`, and the runner through PgBouncer in
transaction mode (no session state, no LISTEN: polling)."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from runner_proc import ROOT, SHIPROCKET_TOKEN, RunnerProcess

from runner import migrate
from runner.cluster import free_port, running_as_root


def test_cron_install_creates_the_sql_jobs_idempotently(cluster):
    url = cluster.url("storeops")  # pg_cron's cron.database_name in the test cluster
    migrate.apply(url)
    env = {**os.environ, "DATABASE_URL": url}
    for _ in range(2):
        result = subprocess.run([sys.executable, "-m", "runner", "cron", "install"], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
    with psycopg.connect(url, autocommit=True) as c:
        jobs = dict(c.execute("select jobname, schedule from cron.job where jobname like 'storeops-%'").fetchall())
        assert jobs == {
            "storeops-process-webhooks": "* * * * *",
            "storeops-webhook-retries": "*/5 * * * *",
            "storeops-reconciliation-review": "30 3 * * *",
            "storeops-cleanup-webhooks": "0 4 * * 0",
        }
        # Every scheduled command runs as written.
        for (command,) in c.execute("select command from cron.job where jobname like 'storeops-%'").fetchall():
            c.execute(command)
        # The jobs belong to this database and the role that installed them, as pg_cron runs them.
        assert c.execute("select count(*) from cron.job where jobname like 'storeops-%%' and database = %s",
                         (url.rsplit("/", 1)[1],)).fetchone()[0] == 4
    result = subprocess.run([sys.executable, "-m", "runner", "cron", "remove"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert "removed 4" in result.stdout


@pytest.fixture
def pgbouncer(cluster, fresh_db, tmp_path):
    exe = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(exe).exists():
        pytest.fail("pgbouncer is not installed (make test installs it)")
    port = free_port()
    dbname = fresh_db.rsplit("/", 1)[1]
    # Not under tmp_path: pytest's base temp directory is private to root, and pgbouncer runs as postgres.
    workdir = Path(tempfile.mkdtemp(prefix="storeops-pgb-", dir="/tmp"))
    os.chmod(workdir, 0o755)
    (workdir / "userlist.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(f"""[databases]
{dbname} = host=127.0.0.1 port={cluster.port} dbname={dbname}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/userlist.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 10
ignore_startup_parameters = extra_float_digits,options
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
""")
    cmd = [exe, str(workdir / "pgbouncer.ini")]
    if running_as_root():
        entry = pwd.getpwnam("postgres")
        for p in (workdir, *workdir.iterdir()):
            os.chown(p, entry.pw_uid, entry.pw_gid)
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"postgresql://postgres@127.0.0.1:{port}/{dbname}"
    deadline = time.monotonic() + 10
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            break
        except psycopg.OperationalError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    shutil.rmtree(workdir, ignore_errors=True)


def test_runner_works_through_pgbouncer_transaction_mode(pgbouncer, fresh_db, tmp_path):
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = c.execute("insert into storeops.tenants (name) values ('Bouncer') returning id").fetchone()[0]
        order = c.execute("insert into storeops.orders (tenant_id, amount, status, payment_status) "
                          "values (%s, 10000, 'paid', 'captured') returning id", (tenant,)).fetchone()[0]
        c.execute("insert into storeops.shiprocket_shipments (tenant_id, order_id, awb) values (%s, %s, 'AWB777')",
                  (tenant, order))
    runner = RunnerProcess(pgbouncer, env={"STOREOPS_LISTEN_URL": "", "STOREOPS_POLL_INTERVAL": "0.2"},
                           log_path=tmp_path / "runner.log").start()
    try:
        import json

        body = json.dumps({"awb": "AWB777", "current_status": "DELIVERED", "shipment_status": "DELIVERED",
                           "shipment_status_id": 7, "current_timestamp": "23 05 2023 11:43:52",
                           "order_id": str(order), "sr_order_id": 1, "scans": []}).encode()
        for _ in range(2):
            r = httpx.post(runner.base_url + "/functions/v1/shipping-webhook", content=body,
                           headers={"x-api-key": SHIPROCKET_TOKEN, "content-type": "application/json"})
            assert r.status_code == 200, r.text
        with psycopg.connect(fresh_db, autocommit=True) as c:
            deadline = time.monotonic() + 15
            status = None
            while time.monotonic() < deadline:
                status = c.execute("select status from storeops.orders where id = %s", (order,)).fetchone()[0]
                if status == "delivered":
                    break
                time.sleep(0.1)
            assert status == "delivered", runner.output()[-3000:]
            assert c.execute("select count(*) from storeops.shipping_webhooks").fetchone()[0] == 1
    finally:
        code, _ = runner.stop()
    assert code == 0
