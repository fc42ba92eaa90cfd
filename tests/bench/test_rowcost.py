"""`python -m bench.rowcost` (Postgres CPU per stored webhook, per schema variant) must keep working
and must see a difference that is there: a variant with six extra expression indexes, each hashing
the whole body, costs the server more per row than the schema as migrated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.rowcost import main

ROOT = Path(__file__).resolve().parents[2]
_EXTRA_INDEXES = "; ".join(f"create index on storeops.payment_webhooks (md5(payload::text || '{n}'))" for n in range(6))


def test_malformed_options_are_refused():
    for argv in (["--variants", "AA"], ["--variants", "A1"], ["--batch", "0"], ["--setup", "B"],
                 ["--setup", "C=select 1"], ["--random-ids", "C"]):
        with pytest.raises(SystemExit):
            main(argv)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_rowcost_reports_each_round_and_sees_a_costlier_schema():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.rowcost", "--variants", "AB", "--rounds", "2", "--batches", "150",
         "--clients", "1", "--setup", f"B={_EXTRA_INDEXES}"],
        cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rounds = re.findall(r"^([AB]) ([\d.]+) µs/row  [\d,]+ rows/s$", proc.stdout, re.M)
    assert [v for v, _ in rounds] == ["A", "B", "B", "A"], proc.stdout  # ABBA
    means = dict(re.findall(r"^([AB]) mean ([\d.]+) µs/row, median [\d.]+, over 2 rounds of 150 x 1 batches of 18$",
                            proc.stdout, re.M))
    assert set(means) == {"A", "B"}, proc.stdout
    assert 5 < float(means["A"]) < 1000, proc.stdout  # Postgres's CPU per row, not the client's or a clock's
    assert float(means["A"]) < float(means["B"]), proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_failing_client_is_reported_not_waited_for():
    proc = subprocess.run(
        [sys.executable, "-m", "bench.rowcost", "--variants", "AB", "--rounds", "1", "--batches", "5", "--clients", "2",
         "--setup", "B=alter table storeops.payment_webhooks add constraint no_rows check (false)"],
        cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode != 0
    assert "a client failed" in proc.stderr and "no_rows" in proc.stderr, proc.stderr[-2000:]
