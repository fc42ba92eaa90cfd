"""bench.host: the probes that say how fast the shared machine was at moments of a bench run."""

from __future__ import annotations

import pytest

from bench import host
from bench.report import render

PSI = """some avg10=1.25 avg60=0.50 avg300=0.10 total=123456
full avg10=0.75 avg60=0.25 avg300=0.05 total=65432
"""


def test_parse_pressure_reads_the_cumulative_totals():
    assert host.parse_pressure(PSI) == {"some": 123456, "full": 65432}
    assert host.parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=7\n") == {"some": 7}


def test_fsync_probe_times_each_write_and_leaves_no_file(tmp_path):
    times = host.fsync_ms(tmp_path, count=5)
    assert len(times) == 5
    assert all(t > 0 for t in times)
    assert list(tmp_path.iterdir()) == []


def test_fsync_probe_stops_at_its_budget(tmp_path):
    # With no time to spend, the first write is timed and the probe stops there.
    assert len(host.fsync_ms(tmp_path, count=50, budget=0.0)) == 1


def test_cpu_probe_is_the_best_of_its_rounds(monkeypatch):
    ticks = iter([0.0, 0.030, 1.0, 1.010, 2.0, 2.020])
    monkeypatch.setattr(host.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(host, "_loop", lambda: 0)
    assert host.cpu_ms(3) == pytest.approx(10.0)


def test_cpu_probe_measures_real_work():
    assert host.cpu_ms(1) > 0.5  # 200,000 iterations of Python take well over half a millisecond


def test_probe_has_every_field(tmp_path):
    p = host.probe(tmp_path, "before section 1")
    assert p["when"] == "before section 1"
    assert p["cpu_ms"] > 0 and p["fsync_p50_ms"] > 0 and p["fsync_max_ms"] >= p["fsync_p50_ms"]
    assert p["fsyncs"] == host.FSYNCS
    for key in ("io_some", "io_full", "cpu_some"):
        assert p[key] is None or 0 <= p[key] <= 100 * 1.5  # per-CPU accounting may exceed 100 a little


def test_pressure_is_the_share_of_the_window(monkeypatch):
    totals = iter([{"io": {"some": 0, "full": 0}, "cpu": {"some": 0}},
                   {"io": {"some": 250_000, "full": 100_000}, "cpu": {}}])
    ticks = iter([10.0, 11.0])
    monkeypatch.setattr(host, "_pressure_totals", lambda: next(totals))
    monkeypatch.setattr(host.time, "perf_counter", lambda: next(ticks))
    monkeypatch.setattr(host.time, "sleep", lambda s: None)
    assert host.pressure(1.0) == {"io_some": 25.0, "io_full": 10.0, "cpu_some": None}


def _p(when, cpu, fsyncs=host.FSYNCS):
    return {"when": when, "cpu_ms": cpu, "fsync_p50_ms": 0.12, "fsync_max_ms": 3.5, "fsyncs": fsyncs,
            "io_some": 2.0, "io_full": 1.0, "cpu_some": None}


def test_table_shows_each_probe_and_the_spread():
    lines = host.table([_p("before section 1", 20.0), _p("before section 6", 30.0, fsyncs=7)])
    text = "\n".join(lines)
    assert "| before section 1 | 20.0 | 0.12 | 3.50 | 2.0 | 1.0 |  |" in text
    assert "3.50 (7 done in 2 s)" in text
    assert "1.50× as long at its slowest (before section 6) as at its fastest (before section 1)" in text
    assert host.table([]) == []


def test_report_carries_the_probes():
    meta = {"started": "2026-11-27 00:00:00", "mode": "smoke run (tiny sizes)", "duration": "0 min 1 s",
            "command": "x", "probes": [_p("before section 1", 18.0)]}
    text = render([], {"nproc": "2"}, meta, {})
    assert "Host probes (bench/host.py)" in text
    assert "| before section 1 | 18.0 |" in text
