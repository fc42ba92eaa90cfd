"""Faults the runner must survive without losing acknowledged work."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import psycopg
import pytest
from runner_proc import SHIPROCKET_TOKEN, RunnerProcess

from runner import migrate
from runner.cluster import Cluster, free_port


@pytest.fixture
def own_cluster():
    """A cluster this test may stop and start without disturbing the session's."""
    base = Path(tempfile.mkdtemp(prefix="storeops-fault-pg-", dir="/tmp"))
    os.chmod(base, 0o755)
    cluster = Cluster(base / "pg", port=free_port(), settings={"fsync": "off"})
    cluster.start()
    migrate.apply(cluster.url())
    yield cluster
    cluster.destroy()


def _event(i: int) -> bytes:
    return json.dumps({"awb": f"AWB{i:05d}", "current_status": "IN TRANSIT", "shipment_status": "IN TRANSIT",
                       "shipment_status_id": 18, "current_timestamp": f"23 05 2023 11:{i // 60 % 60:02d}:{i % 60:02d}",
                       "order_id": f"ord-{i}", "scans": []}).encode()


def test_intake_answers_503_while_postgres_is_down_and_recovers(own_cluster, tmp_path):
    url = own_cluster.url()
    with psycopg.connect(url, autocommit=True) as c:
        tenant = c.execute("insert into storeops.tenants (name) values ('T') returning id").fetchone()[0]
    runner = RunnerProcess(url, log_path=tmp_path / "runner.log").start()
    hook = f"{runner.base_url}/functions/v1/shipping-webhook/{tenant}"
    headers = {"x-api-key": SHIPROCKET_TOKEN, "content-type": "application/json"}
    acked: list[int] = []
    try:
        for i in range(5):
            r = httpx.post(hook, content=_event(i), headers=headers, timeout=15)
            assert r.status_code == 200
            acked.append(i)
        own_cluster.stop("immediate")
        statuses = []
        for i in range(5, 10):
            r = httpx.post(hook, content=_event(i), headers=headers, timeout=15)
            statuses.append(r.status_code)
            if r.status_code == 200:
                acked.append(i)
        assert statuses == [503] * 5, statuses
        assert httpx.get(runner.base_url + "/readyz", timeout=15).status_code == 503
        own_cluster.start()
        deadline = time.monotonic() + 20
        while True:
            r = httpx.post(hook, content=_event(10), headers=headers, timeout=15)
            if r.status_code == 200:
                acked.append(10)
                break
            assert r.status_code == 503
            assert time.monotonic() < deadline, "intake did not recover after Postgres came back"
            time.sleep(0.2)
        assert httpx.get(runner.base_url + "/readyz", timeout=5).status_code == 200
    finally:
        runner.stop()
    with psycopg.connect(url, autocommit=True) as c:
        stored = {r[0] for r in c.execute("select payload->>'awb' from storeops.shipping_webhooks").fetchall()}
    # Everything acknowledged is stored; nothing refused was half-stored.
    assert stored == {f"AWB{i:05d}" for i in acked}
