"""The benchmark harness must not rot: run `python -m bench --smoke` (every section at tiny sizes,
its own cluster and runner processes) and check the report has every section, with numbers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTIONS = {
    1: "Ingest",
    2: "End-to-end latency",
    3: "Apply throughput",
    4: "Retry queue",
    5: "Domain sweep",
    6: "Cleanup",
    7: "Memory",
}
NUMBER = re.compile(r"\d[\d,]*(\.\d+)?")


def _missing_tools() -> list[str]:
    missing = []
    if not (os.environ.get("STOREOPS_WRK") or shutil.which("wrk") or Path("/usr/bin/wrk").exists()):
        missing.append("wrk (scripts/install-system-packages bench)")
    try:
        import procrastinate  # noqa: F401
    except ImportError:
        missing.append("procrastinate (pip install -e '.[bench]')")
    return missing


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_bench_smoke_reports_every_section_with_numbers(tmp_path):
    missing = _missing_tools()
    if missing:
        pytest.skip("the bench needs " + ", ".join(missing))
    out = tmp_path / "RESULTS.md"
    proc = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=170)
    assert out.exists(), proc.stderr[-3000:]
    text = out.read_text()
    assert proc.returncode == 0, proc.stderr[-3000:] + "\n" + text[-2000:]
    assert "**ERROR**" not in text, text

    body = {}
    for number, name in SECTIONS.items():
        match = re.search(rf"^## {number}\. (.*)$", text, re.M)
        assert match, f"section {number} ({name}) missing from the report"
        assert name.lower() in match.group(1).lower()
        rest = text[match.end():]
        end = re.search(r"^## ", rest, re.M)
        body[number] = rest[: end.start()] if end else rest

    for number, section in body.items():
        if number == 5 and section.lstrip().startswith("Skipped:"):
            continue  # bench/domain_sweep.py belongs to the domains work; the report says why
        rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| figure")
                and not ln.startswith("|---")]
        results = [ln.split("|")[2] for ln in rows if ln.count("|") >= 7]
        assert results, f"section {number} has no figures:\n{section[:1500]}"
        assert any(NUMBER.search(r) for r in results), f"section {number} has no numbers:\n{section[:1500]}"

    # the figures carry their baselines, targets and the machine they ran on
    assert "## Summary" in text and "## Machine and setup" in text
    for fact in ("nproc", "memory", "cpu", "postgres", "python"):
        assert f"**{fact}**" in text
    assert "Rerun:" in text
    # a host probe before every section and one at the end, each with its loop time
    probes = re.findall(r"^\| (before section \d|at the end) \| (\d+\.\d) \|", text, re.M)
    assert [when for when, _ in probes] == [f"before section {n}" for n in range(1, 7)] + ["at the end"], probes
    assert all(float(ms) > 0 for _, ms in probes)
    assert "(a) same HTTP stack, no DB" in text and "pgbench" in text and "procrastinate" in text
