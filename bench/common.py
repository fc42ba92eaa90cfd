"""Section results and small helpers shared by the bench sections."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import psycopg

from runner.simulate import payment_entity, payment_event, rzp_id, seed_demo, sign


@dataclass
class Row:
    """One figure: its value, the baseline measured in the same run beside it, and the target."""

    metric: str
    value: float | None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    target: str = ""
    met: bool | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline


@dataclass
class Section:
    number: int
    title: str
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    error: str | None = None
    skipped: str | None = None
    seconds: float = 0.0
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row


@dataclass
class Sizes:
    """How big each section runs: the full bench, or the smoke version (tiny, same code paths)."""

    ingest_seconds: float
    warmup_seconds: float
    pgbench_seconds: float
    e2e_rate: float
    e2e_seconds: float
    apply_events: int
    queue_jobs: int
    procrastinate_jobs: int
    sweep_domains: int
    cleanup_rows: int
    cleanup_baseline_seconds: float  # the shortest run without the cleanup (the one after it matches it)
    # the steady round's run before the cleanup: about as long as the cleanup takes (the run after
    # it lasts exactly as long as the cleanup's run did)
    cleanup_steady_seconds: float
    cleanup_max_seconds: float
    cleanup_rate: float
    orders: int

    @classmethod
    def full(cls) -> Sizes:
        return cls(ingest_seconds=15, warmup_seconds=2, pgbench_seconds=10, e2e_rate=1000, e2e_seconds=20,
                   apply_events=100_000, queue_jobs=20_000, procrastinate_jobs=5_000, sweep_domains=100_000,
                   cleanup_rows=1_000_000, cleanup_baseline_seconds=20, cleanup_steady_seconds=50,
                   cleanup_max_seconds=120, cleanup_rate=2000,
                   orders=2000)

    @classmethod
    def smoke(cls) -> Sizes:
        return cls(ingest_seconds=2, warmup_seconds=1, pgbench_seconds=2, e2e_rate=200, e2e_seconds=2,
                   apply_events=1500, queue_jobs=400, procrastinate_jobs=300, sweep_domains=300,
                   cleanup_rows=20_000, cleanup_baseline_seconds=2, cleanup_steady_seconds=2,
                   cleanup_max_seconds=30, cleanup_rate=300, orders=100)


@dataclass
class Tenant:
    tenant_id: str
    orders: list[tuple[str, str, int, str]]  # (order uuid, razorpay order id, amount paise, awb)
    razorpay_secret: str
    shiprocket_token: str


def seed_tenant(url: str, n_orders: int, seed: int = 7) -> Tenant:
    """A demo tenant with its own webhook secrets, orders and shipments (runner.simulate.seed_demo)."""
    rzp_secret, sr_token = "whsec_" + secrets.token_hex(16), "sr_" + secrets.token_hex(16)
    with psycopg.connect(url, autocommit=True) as conn:
        tenant_id, orders = seed_demo(conn, n_orders, razorpay_secret=rzp_secret, shiprocket_token=sr_token,
                                      seed=seed, tenant_name=f"Bench Store {secrets.token_hex(3)}")
    return Tenant(tenant_id, orders, rzp_secret, sr_token)


def write_signed_bodies(tenant: Tenant, path: Path, limit: int = 1000) -> int:
    """Realistic signed Razorpay payloads for the tenant's orders (payment.authorized and
    payment.captured snapshots, as runner.simulate builds them), one "signature<TAB>body" a line."""
    n = 0
    with path.open("w") as fh:
        for _uuid, rzp_order, amount, _awb in tenant.orders[: max(1, limit // 2)]:
            pay_id = rzp_id("pay")
            for event, status in (("payment.authorized", "authorized"), ("payment.captured", "captured")):
                body = orjson.dumps(payment_event(event, payment_entity(pay_id, rzp_order, amount, status)))
                fh.write(sign(body, tenant.razorpay_secret) + "\t" + body.decode() + "\n")
                n += 1
    return n


def count_rows(url: str, sql: str, params=()) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchone()[0]


class Stopwatch:
    def __enter__(self):
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"
