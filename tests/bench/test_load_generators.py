"""How the bench runs its load generators (bench.env._run_until)."""

from __future__ import annotations

import os
import sys

from bench.env import _run_until

_POLICY = [sys.executable, "-c", "import os; print('policy', os.sched_getscheduler(0))"]


def test_wrk_style_generators_run_under_sched_batch_and_others_do_not():
    out, _ = _run_until(_POLICY, 5, None, "probe", batch=True)
    assert f"policy {os.SCHED_BATCH}" in out
    out, _ = _run_until(_POLICY, 5, None, "probe")
    assert f"policy {os.SCHED_OTHER}" in out
