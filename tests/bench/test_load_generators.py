"""How the bench runs its load generators (bench.env)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import bench.env
from bench.env import _run_until, sched_batch

_POLICY = [sys.executable, "-c", "import os; print('policy', os.sched_getscheduler(0))"]


def test_sched_batch_runs_a_command_under_that_policy_and_run_until_uses_it_only_when_asked():
    assert f"policy {os.SCHED_BATCH}" in subprocess.run(sched_batch(_POLICY), capture_output=True, text=True).stdout
    out, _ = _run_until(_POLICY, 5, None, "probe", batch=True)
    assert f"policy {os.SCHED_BATCH}" in out
    out, _ = _run_until(_POLICY, 5, None, "probe")
    assert f"policy {os.SCHED_OTHER}" in out


def test_wrk_is_run_under_sched_batch(monkeypatch, tmp_path):
    seen: dict = {}

    def fake_run_until(argv, seconds, stop_when, name, *, batch=False):
        seen.update(argv=argv, batch=batch)
        raise RuntimeError("stop here")

    monkeypatch.setattr(bench.env, "_run_until", fake_run_until)
    with pytest.raises(RuntimeError, match="stop here"):
        bench.env.run_wrk("http://127.0.0.1:1", "/x", "p", tmp_path / "bodies.tsv", seconds=1)
    assert seen["batch"] is True and seen["argv"][0] == bench.env.WRK


def test_the_machines_busy_time_counts_the_hypervisors_steal_and_reports_it_apart():
    """/proc/stat's first line: user nice system idle iowait irq softirq steal guest guest_nice. On
    this VM steal (the hypervisor running other guests while this one had work) shows when the host
    is busy; the bench reports it in its own column, not as other programs' CPU."""
    from bench.env import stat_ticks

    line = "cpu  4413128 3200 1269631 4561513 137857 0 250697 9120 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"
    busy, steal = stat_ticks(line)
    assert steal == 9120
    assert busy == 4413128 + 3200 + 1269631 + 250697 + 9120  # idle and iowait are not busy
