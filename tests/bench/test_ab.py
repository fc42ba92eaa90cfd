"""`python -m bench.ab` (interleaved A/B runs of the intake figure) must keep working: run it at
tiny sizes with a setup SQL and a process count per variant, and check every run is reported."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.ab import _by_variant

ROOT = Path(__file__).resolve().parents[2]


def test_variant_options_are_parsed_per_letter_and_malformed_ones_refused():
    assert _by_variant(["A=1", "B=2"], "processes", int) == {"A": 1, "B": 2}
    assert _by_variant(["B=drop index x; select 1"], "setup") == {"B": "drop index x; select 1"}
    with pytest.raises(SystemExit, match="VARIANT=VALUE"):
        _by_variant(["2"], "processes", int)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_ab_runs_each_variant_in_order_and_prints_the_means():
    if not shutil.which("wrk") and not Path("/usr/bin/wrk").exists():
        pytest.skip("the bench needs wrk (scripts/install-system-packages bench)")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.ab", "--smoke", "--order", "ABA", "--seconds", "1", "--processes", "B=1",
         "--setup", "B=create index on storeops.payment_webhooks (webhook_type, created_at)"],
        cwd=ROOT, capture_output=True, text=True, timeout=140)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = re.findall(r"^([AB]) ([\d,]+)/s  p99 [\d.]+ ms  non-2xx 0", proc.stdout, re.M)
    assert [v for v, _ in runs] == ["A", "B", "A"], proc.stdout
    assert all(int(rate.replace(",", "")) > 0 for _, rate in runs)
    assert re.search(r"^A mean [\d,]+/s over 2 runs", proc.stdout, re.M), proc.stdout
    assert re.search(r"^B mean [\d,]+/s over 1 runs", proc.stdout, re.M), proc.stdout
