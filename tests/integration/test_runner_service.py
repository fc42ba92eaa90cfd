"""The runner as a real process: startup checks, health/metrics, graceful and hard stops, several
runners sharing work, alerts delivered once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import psycopg
from runner_proc import ROOT, RunnerProcess

from runner.cluster import free_port


def test_serve_refuses_an_unmigrated_database(empty_db):
    result = subprocess.run([sys.executable, "-m", "runner", "serve"], cwd=ROOT, capture_output=True, text=True,
                            env={"DATABASE_URL": empty_db, "PATH": "/usr/bin:/bin"}, timeout=60)
    assert result.returncode != 0
    assert "storeops migrate" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_health_ready_metrics_and_graceful_sigterm(fresh_db, tmp_path):
    runner = RunnerProcess(fresh_db, log_path=tmp_path / "runner.log").start()
    try:
        assert httpx.get(runner.base_url + "/healthz").json() == {"status": "ok"}
        ready = httpx.get(runner.base_url + "/readyz")
        assert ready.status_code == 200 and ready.json()["database"] == "ok"
        with psycopg.connect(fresh_db, autocommit=True) as c:
            c.execute("select storeops.schedule_operation_retry(null, 'domain_verify', gen_random_uuid(), '{}', 'x')")
            tenant = c.execute("insert into storeops.tenants (name) values ('M') returning id").fetchone()[0]
            c.execute("""insert into storeops.orders (tenant_id, amount, amount_paid, payment_status)
                         values (%s, 5000, 5000, 'captured')""", (tenant,))
            c.execute("update storeops.orders set status = 'cancelled'")  # paid, then cancelled: its refund is owed
        text = httpx.get(runner.base_url + "/metrics").text
        assert 'storeops_refunds_owed_orders{currency="INR"} 1.0' in text
        assert 'storeops_retry_queue_depth{operation_type="domain_verify",status="pending"} 1.0' in text
        assert "storeops_webhook_processing_seconds" in text
        assert "storeops_retry_queue_oldest_pending_seconds" in text
        assert httpx.get(runner.base_url + "/nope").status_code == 404
        spec = httpx.get(runner.base_url + "/openapi.json").json()
        assert "/functions/v1/razorpay-webhook" in spec["paths"]
    finally:
        code, took = runner.stop(signal.SIGTERM)
    assert code == 0, runner.output()[-2000:]
    assert took < 10
    # Structured JSON logs, one object per line.
    lines = [ln for ln in runner.output().splitlines() if ln.startswith("{")]
    assert lines and all("event" in json.loads(ln) for ln in lines)


class _Sink:
    """A Slack-compatible webhook sink on loopback that counts alert POSTs (optionally slowly)."""

    def __init__(self, delay: float = 0.0):
        self.posts: list[dict] = []
        self.delay = delay
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                time.sleep(sink.delay)
                sink.posts.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a):
                pass

        self.server = _SinkServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


class _SinkServer(ThreadingHTTPServer):
    # The default listen backlog is 5: two workers posting 20 at a time overflowed it, and the
    # kernel dropped connections (1 s SYN retries, resets) that the workers then retried minutes later.
    request_queue_size = 128


def _wait(predicate, timeout: float = 30.0, every: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_two_runners_deliver_each_alert_and_operation_once(fresh_db, tmp_path):
    sink = _Sink()
    env = {"STOREOPS_ALERT_URL": sink.url, "STOREOPS_POLL_INTERVAL": "0.2"}
    a = RunnerProcess(fresh_db, command="work", env=env, log_path=tmp_path / "a.log").start()
    b = RunnerProcess(fresh_db, command="work", env=env, log_path=tmp_path / "b.log").start()
    try:
        with psycopg.connect(fresh_db, autocommit=True) as c:
            # 150 alerts via the failure trigger, and 150 queued alert_post operations.
            for _ in range(150):
                c.execute("select storeops.raise_alert('operation_failed', null, '{}')")
            ids = [r[0] for r in c.execute(
                "select id from storeops.alerts order by created_at").fetchall()]
            for alert_id in ids:
                c.execute("select storeops.enqueue_operation(null, 'alert_post', %s, %s)",
                          (alert_id, json.dumps({"alert_id": str(alert_id)})))
            assert _wait(lambda: c.execute(
                "select count(*) from storeops.operation_retry_queue where status = 'completed'").fetchone()[0] == 150
                and c.execute("select count(*) from storeops.alerts where delivered_at is null").fetchone()[0] == 0)
    finally:
        a.stop()
        b.stop()
        sink.close()
    # 150 deliveries from the alert table + 150 from the queue: each exactly once, none twice.
    assert len(sink.posts) == 300
    assert all(p["kind"] == "operation_failed" and p["text"] for p in sink.posts)


def test_sigkilled_runner_claims_come_back_after_the_lease(fresh_db, tmp_path):
    slow = _Sink(delay=60)
    fast = _Sink()
    with psycopg.connect(fresh_db, autocommit=True) as c:
        ids = [uuid.uuid4() for _ in range(5)]
        for i in ids:
            c.execute("insert into storeops.alerts (id, kind) values (%s, 'operation_failed')", (i,))
        c.execute("update storeops.alerts set delivered_at = now()")  # only the queued posts matter here
        for i in ids:
            c.execute("select storeops.enqueue_operation(null, 'alert_post', %s, %s)", (i, json.dumps({"alert_id": str(i)})))
        a = RunnerProcess(fresh_db, command="work", log_path=tmp_path / "a.log",
                          env={"STOREOPS_ALERT_URL": slow.url, "STOREOPS_LEASE_SECONDS": "3",
                               "STOREOPS_POLL_INTERVAL": "0.2"}).start()
        assert _wait(lambda: c.execute(
            "select count(*) from storeops.operation_retry_queue where status = 'processing'").fetchone()[0] == 5)
        a.stop(signal.SIGKILL)
        held = c.execute("select count(*) from storeops.operation_retry_queue where status = 'processing'").fetchone()[0]
        assert held == 5  # the dead runner still "holds" them until the lease runs out
        b = RunnerProcess(fresh_db, command="work", log_path=tmp_path / "b.log",
                          env={"STOREOPS_ALERT_URL": fast.url, "STOREOPS_POLL_INTERVAL": "0.2"}).start()
        try:
            assert _wait(lambda: c.execute(
                "select count(*) from storeops.operation_retry_queue where status = 'completed'").fetchone()[0] == 5,
                timeout=30), b.output()[-2000:]
        finally:
            b.stop()
            slow.close()
            fast.close()
    assert len(fast.posts) == 5


def _sigterm_under_load(runner, sender, stop: threading.Event, acked: list[str], url: str, stored_sql: str) -> None:
    """Four senders (sender(n)) post while the runner gets SIGTERM after 1.5 s: it exits cleanly
    within 10 s, and every webhook it acknowledged is stored (stored_sql lists their keys)."""
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    code, took = runner.stop(signal.SIGTERM)
    stop.set()
    for t in threads:
        t.join(10)
    assert code == 0, runner.output()[-2000:]
    assert took < 10
    assert len(acked) > 50
    with psycopg.connect(url) as c:
        stored = {r[0] for r in c.execute(stored_sql).fetchall()}
    assert set(acked) <= stored


def test_sigterm_under_load_exits_in_time_and_keeps_every_acknowledged_webhook(fresh_db, tmp_path):
    from runner_proc import SHIPROCKET_TOKEN

    runner = RunnerProcess(fresh_db, log_path=tmp_path / "runner.log",
                           env={"STOREOPS_RATE_LIMIT_SOURCE": "0"}).start()
    acked: list[str] = []
    refused: list[int] = []
    stop = threading.Event()

    def sender(offset: int) -> None:
        i = 0
        with httpx.Client(base_url=runner.base_url, timeout=5) as client:
            while not stop.is_set() and i < 5000:
                awb = f"SIGTERM{offset}-{i}"
                body = json.dumps({"awb": awb, "shipment_status_id": 18, "shipment_status": "IN TRANSIT",
                                   "current_status": "IN TRANSIT", "current_timestamp": "23 05 2023 11:43:52",
                                   "scans": []}).encode()
                try:
                    r = client.post("/functions/v1/shipping-webhook", content=body,
                                    headers={"x-api-key": SHIPROCKET_TOKEN})
                except httpx.HTTPError:
                    refused.append(0)
                else:
                    (acked.append(awb) if r.status_code == 200 else refused.append(r.status_code))
                i += 1

    _sigterm_under_load(runner, sender, stop, acked, fresh_db,
                        "select payload->>'awb' from storeops.shipping_webhooks")


def test_sigterm_while_a_gateway_hangs_exits_cleanly_and_gives_the_claim_back(fresh_db, tmp_path):
    """A refund retry is waiting on a Razorpay that accepts connections and never answers."""
    import socket as socketlib

    hang = socketlib.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(16)
    with psycopg.connect(fresh_db, autocommit=True) as c:
        tenant = c.execute("insert into storeops.tenants (name) values ('Hang') returning id").fetchone()[0]
        order = c.execute("""insert into storeops.orders (tenant_id, amount, status, payment_status, amount_paid,
                             razorpay_payment_id) values (%s, 10000, 'paid', 'captured', 10000, 'pay_HangTest00001')
                             returning id""", (tenant,)).fetchone()[0]
        refund = c.execute("""insert into storeops.refunds (tenant_id, order_id, razorpay_payment_id, amount)
                              values (%s, %s, 'pay_HangTest00001', 5000) returning id""", (tenant, order)).fetchone()[0]
        c.execute("select storeops.enqueue_operation(%s, 'refund_create', %s, %s)",
                  (tenant, refund, json.dumps({"refund_id": str(refund)})))
        runner = RunnerProcess(fresh_db, log_path=tmp_path / "runner.log", env={
            "RAZORPAY_API_BASE": f"http://127.0.0.1:{hang.getsockname()[1]}", "RAZORPAY_KEY_ID": "rzp_test_hang",
            "RAZORPAY_KEY_SECRET": "hang-secret", "STOREOPS_POLL_INTERVAL": "0.2"}).start()
        try:
            assert _wait(lambda: c.execute("select status from storeops.operation_retry_queue").fetchone()[0]
                         == "processing")
            time.sleep(0.5)  # the handler is now waiting on the socket
        finally:
            code, took = runner.stop(signal.SIGTERM)
            hang.close()
        assert code == 0, runner.output()[-2000:]
        assert took < 10
        status, attempts, locked_by = c.execute(
            "select status, attempts, locked_by from storeops.operation_retry_queue").fetchone()
    assert (status, attempts, locked_by) == ("pending", 0, None)  # given back, no attempt counted


def _tenant_with_orders(db: str, n: int) -> tuple[str, list[tuple[str, str]]]:
    """A tenant (platform webhook secret) with `n` orders: [(order uuid, razorpay order id)]."""
    from fakes.razorpay_server import razorpay_id

    with psycopg.connect(db, autocommit=True) as c:
        tenant = str(c.execute("insert into storeops.tenants (name) values ('Wake Store') returning id").fetchone()[0])
        orders = []
        for _ in range(n):
            rzp = razorpay_id("order")
            oid = c.execute("insert into storeops.orders (tenant_id, amount, razorpay_order_id) values (%s, 50000, %s) "
                            "returning id", (tenant, rzp)).fetchone()[0]
            orders.append((str(oid), rzp))
    return tenant, orders


def _post_captures(base_url: str, tenant: str, orders: list[tuple[str, str]]) -> None:
    from fakes.razorpay_server import payment_entity, signed_webhook, webhook_event
    from runner_proc import WEBHOOK_SECRET

    with httpx.Client(base_url=base_url, timeout=5) as client:
        for _oid, rzp in orders:
            event = webhook_event("payment.captured",
                                  payment=payment_entity(amount=50000, order_id=rzp, status="captured"))
            body, headers = signed_webhook(event, WEBHOOK_SECRET)
            r = client.post(f"/functions/v1/razorpay-webhook/{tenant}", content=body, headers=headers)
            assert r.status_code == 200, r.text


def _paid(db: str, orders: list[tuple[str, str]]) -> int:
    with psycopg.connect(db, autocommit=True) as c:
        return c.execute("select count(*) from storeops.orders where id = any(%s::uuid[]) and status = 'paid'",
                         ([o for o, _ in orders],)).fetchone()[0]


def _wait_paid(db: str, orders: list[tuple[str, str]], timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if _paid(db, orders) == len(orders):
            break
        time.sleep(0.05)
    return _paid(db, orders), time.monotonic() - started


def test_the_receiver_wakes_its_own_worker_without_listen_or_polling(fresh_db, tmp_path):
    # No LISTEN connection and an hourly poll: only the receiver's direct wake-up can apply these soon.
    runner = RunnerProcess(fresh_db, log_path=tmp_path / "runner.log",
                           env={"STOREOPS_LISTEN_URL": "", "STOREOPS_POLL_INTERVAL": "3600"}).start()
    try:
        time.sleep(1.0)  # past the worker's first (startup) pass
        tenant, orders = _tenant_with_orders(fresh_db, 5)
        _post_captures(runner.base_url, tenant, orders)
        paid, took = _wait_paid(fresh_db, orders, timeout=5)
        assert paid == len(orders), runner.output()[-2000:]
        assert took < 2.0
    finally:
        runner.stop()


def test_serve_no_worker_only_receives_and_a_separate_worker_applies(fresh_db, tmp_path):
    receiver = RunnerProcess(fresh_db, log_path=tmp_path / "receiver.log", args=("--no-worker",)).start()
    worker = None
    try:
        tenant, orders = _tenant_with_orders(fresh_db, 5)
        _post_captures(receiver.base_url, tenant, orders)
        time.sleep(1.5)  # a worker would have applied them by now
        assert _paid(fresh_db, orders) == 0
        with psycopg.connect(fresh_db) as c:
            stored = c.execute("select count(*) from storeops.payment_webhooks where tenant_id = %s and not processed",
                               (tenant,)).fetchone()[0]
        assert stored == len(orders)
        worker = RunnerProcess(fresh_db, command="work", log_path=tmp_path / "worker.log").start()
        paid, _took = _wait_paid(fresh_db, orders, timeout=10)
        assert paid == len(orders), worker.output()[-2000:]
        # ...and from then on, the receiver's NOTIFY wakes it for new webhooks.
        tenant2, more = _tenant_with_orders(fresh_db, 3)
        _post_captures(receiver.base_url, tenant2, more)
        paid, took = _wait_paid(fresh_db, more, timeout=5)
        assert paid == len(more)
        assert took < 1.0  # NOTIFY, not the worker's 1 s poll
    finally:
        receiver.stop()
        if worker is not None:
            worker.stop()


def test_sigterm_under_load_on_the_fast_path_keeps_every_acknowledged_webhook(fresh_db, tmp_path):
    from fakes.razorpay_server import payment_entity, signed_webhook, webhook_event
    from runner_proc import WEBHOOK_SECRET

    runner = RunnerProcess(fresh_db, log_path=tmp_path / "runner.log",
                           env={"STOREOPS_RATE_LIMIT_SOURCE": "0", "STOREOPS_RATE_LIMIT_TENANT": "0"}).start()
    tenant, _ = _tenant_with_orders(fresh_db, 0)
    acked: list[str] = []
    stop = threading.Event()

    def sender(_offset: int) -> None:
        with httpx.Client(base_url=runner.base_url, timeout=5) as client:
            while not stop.is_set():
                event = webhook_event("payment.captured", payment=payment_entity(amount=100, status="captured"))
                body, headers = signed_webhook(event, WEBHOOK_SECRET)
                try:
                    r = client.post(f"/functions/v1/razorpay-webhook/{tenant}", content=body, headers=headers)
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    acked.append(headers["X-Razorpay-Event-Id"])

    _sigterm_under_load(runner, sender, stop, acked, fresh_db, "select event_id from storeops.payment_webhooks")
