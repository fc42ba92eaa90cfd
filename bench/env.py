"""What every benchmark section shares: the bench's own Postgres cluster, a database per section,
runner processes, wrk, CPU and memory accounting, machine facts.

The cluster is created in a temporary directory on a free port with the project's own cluster code
(runner.cluster), fsync and synchronous_commit on (real durability). Each section gets a fresh
database cloned from one migrated template, so what one section leaves behind (an unapplied backlog,
a million old rows) cannot slow the next.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from runner.cluster import Cluster, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
WRK = os.environ.get("STOREOPS_WRK", shutil.which("wrk") or "/usr/bin/wrk")

# Cluster settings beyond runner.cluster's own (listed in the report). Durability stays on: fsync,
# synchronous_commit and full_page_writes keep their defaults. A larger max_wal_size only spaces
# checkpoints out (as any production server is tuned); track_commit_timestamp lets section 2 read
# when the order row's update committed.
CLUSTER_SETTINGS = {
    "max_wal_size": "'4GB'",
    "checkpoint_timeout": "'15min'",
    "track_commit_timestamp": "on",
}

PLATFORM_SECRET = "whsec_bench_platform"
SHIPROCKET_TOKEN = "sr_bench_platform"


class BenchError(RuntimeError):
    pass


# -- processes and CPU ------------------------------------------------------------------------------

def _proc_stat(pid: int) -> tuple[int, int] | None:
    """(ppid, CPU ticks) of a process, None when it is gone. The ticks include the children it
    has reaped (cutime, cstime): a backend or worker that exits during a phase still counts, in
    its parent."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15])


def _all_procs() -> dict[int, tuple[int, int]]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _proc_stat(int(entry))
            if st:
                out[int(entry)] = st
    return out


def descendants(roots: set[int], procs: dict[int, tuple[int, int]]) -> set[int]:
    found = set(r for r in roots if r in procs)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _) in procs.items():
            if ppid in found and pid not in found:
                found.add(pid)
                changed = True
    return found


def stat_ticks(text: str) -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine from /proc/stat's text. Busy includes steal: the
    time the hypervisor ran other guests while this one had work to run (this machine is a VM)."""
    parts = [int(x) for x in text.splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = parts[:8]
    return user + nice + system + irq + softirq + steal, steal


def _busy_ticks() -> tuple[int, int]:
    """(busy, steal) jiffies of the whole machine."""
    return stat_ticks(Path("/proc/stat").read_text())


class CpuMeter:
    """CPU used between start() and stop(), split into named process groups (by root pid,
    descendants included), everything else on the machine ("other": the noise) and the CPU the
    hypervisor gave other guests while this one had work to run ("steal")."""

    def __init__(self, groups: dict[str, set[int]]):
        self.groups = groups
        self.hz = os.sysconf("SC_CLK_TCK")

    def _sample(self):
        procs = _all_procs()
        owned: dict[str, int] = {}
        seen: set[int] = set()
        for name, roots in self.groups.items():
            pids = descendants(set(roots), procs) - seen
            seen |= pids
            owned[name] = sum(procs[p][1] for p in pids)
        return time.monotonic(), _busy_ticks(), owned, {p: procs[p][1] for p in seen}

    def start(self) -> CpuMeter:
        self._a = self._sample()
        return self

    def stop(self) -> dict[str, float]:
        """Cores used on average per group, plus 'other', 'steal' and 'machine' (steal included)."""
        t0, (busy0, steal0), _, per0 = self._a
        t1, (busy1, steal1), _, _ = self._sample()
        procs = _all_procs()
        elapsed = max(t1 - t0, 1e-6)
        out: dict[str, float] = {}
        accounted = 0
        seen: set[int] = set()
        for name, roots in self.groups.items():
            pids = descendants(set(roots), procs) - seen
            seen |= pids
            ticks = sum(procs[p][1] - per0.get(p, 0) for p in pids if p in procs)
            accounted += ticks
            out[name] = round(ticks / self.hz / elapsed, 2)
        machine = (busy1 - busy0) / self.hz / elapsed
        steal = (steal1 - steal0) / self.hz / elapsed
        out["other"] = round(max(machine - steal - accounted / self.hz / elapsed, 0.0), 2)
        out["steal"] = round(steal, 2)
        out["machine"] = round(machine, 2)
        return out


def vm_hwm_mb(pid: int) -> float | None:
    """Peak resident set size (VmHWM) of a process, in MB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- runner processes -------------------------------------------------------------------------------

@dataclass
class Service:
    """A subprocess serving HTTP on `port` (storeops serve, or the bench's baseline app)."""

    argv: list[str]
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Service:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{' '.join(self.argv[-3:])} exited with {self.proc.returncode}: "
                                 f"{self.log_tail()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=0.5).status_code == 200:
                    # every process of a multi-process server must be up, not just the first
                    if self.processes_up():
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise BenchError(f"{self.argv} did not become ready: {self.log_tail()}")

    def processes_up(self) -> bool:
        return True

    def pids(self) -> list[int]:
        """The service's own processes: the parent and its children (not postgres, which is not ours)."""
        if not self.proc:
            return []
        procs = _all_procs()
        return sorted(descendants({self.proc.pid}, procs))

    def peak_rss_mb(self) -> dict[int, float]:
        return {pid: mb for pid in self.pids() if (mb := vm_hwm_mb(pid)) is not None}

    def log_tail(self, n: int = 1500) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self, timeout: float = 20) -> int | None:
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


class RunnerService(Service):
    def processes_up(self) -> bool:
        want = int(self.env.get("_BENCH_PROCESSES", "1"))
        if want <= 1:
            return True
        # the children write "Application startup complete" once their app is up
        return self.log_tail(200_000).count("Application startup complete") >= want


# -- wrk --------------------------------------------------------------------------------------------

@dataclass
class WrkResult:
    requests: int
    non_2xx: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    errors: dict[str, int] = field(default_factory=dict)
    # bench.paced only: each gap of more than 20 ms between two answers, (start, end) in
    # time.perf_counter() seconds
    pauses: list[tuple[float, float]] = field(default_factory=list)
    # bench.paced only: the p99 of the requests not waiting during any of those pauses
    p99_outside_pauses_ms: float | None = None
    # bench.paced only: how many of those requests took over 100 ms (bench.paced.HELD) all the same
    held_outside_pauses: int = 0

    @property
    def ok(self) -> int:
        return self.requests - self.non_2xx

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "2xx": self.ok, "non_2xx": self.non_2xx, "seconds": round(self.seconds, 2),
                "2xx_per_s": round(self.ok_per_second, 1), "p50_ms": round(self.p50_ms, 2),
                "p99_ms": round(self.p99_ms, 2), "max_ms": round(self.max_ms, 2), "errors": self.errors,
                **({"p99_outside_pauses_ms": round(self.p99_outside_pauses_ms, 2),
                    "held_outside_pauses": self.held_outside_pauses}
                   if self.p99_outside_pauses_ms is not None else {})}


CHRT = shutil.which("chrt")


def sched_batch(argv: list[str]) -> list[str]:
    """`argv` run under the SCHED_BATCH scheduling policy (util-linux's chrt; no privilege needed),
    or as it is where there is no chrt. See run_wrk for why the throughput load generators do."""
    return [CHRT, "--batch", "0", *argv] if CHRT else list(argv)


def _run_until(argv: list[str], seconds: float, stop_when, name: str, *, batch: bool = False) -> tuple[str, float]:
    """Run a load generator; with `stop_when` (a callable polled every 50 ms) stop it early with
    SIGINT (it then stops and prints its summary) once that returns True. With `batch`, it runs
    under the SCHED_BATCH policy."""
    started = time.monotonic()
    proc = subprocess.Popen(sched_batch(argv) if batch else argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=ROOT)
    if stop_when is not None:
        while proc.poll() is None:
            if stop_when():
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.05)
    try:
        out, _ = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise BenchError(f"{name} did not finish within {seconds + 60:g} s: {out[-1500:]}") from None
    if proc.returncode != 0:
        raise BenchError(f"{name} failed ({proc.returncode}): {out[-1500:]}")
    return out, time.monotonic() - started


def run_wrk(url: str, path: str, prefix: str, bodies: Path, *, seconds: float, connections: int = 64,
            threads: int = 2, stop_when=None, timeout_s: int = 5) -> WrkResult:
    """wrk with bench/ingest.lua: cycles through pre-signed bodies, a unique x-razorpay-event-id
    per request (`prefix`_thread_n); every connection sends its next request as soon as it has its
    answer (a closed loop: the ceiling).

    wrk runs under SCHED_BATCH: it still gets its fair share of the CPU, but its threads, woken by
    every answer, no longer preempt the server or Postgres in the middle of their work. A real
    webhook sender is on another machine and takes no CPU here at all; on this 2-core machine wrk
    must share the cores, and this is the least intrusive way. Every wrk phase (the baselines
    included) runs the same way, and so does pgbench (bench.ingest.run_pgbench). Measured,
    interleaved: intake 11,331/s against 10,350/s, and wrk's CPU per request 13 µs against 17."""
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{max(1, int(round(seconds)))}s", f"--timeout={timeout_s}s",
            "--latency", "-s", str(BENCH / "ingest.lua"), url, "--", path, prefix, str(bodies)]
    out, elapsed = _run_until(argv, seconds, stop_when, "wrk", batch=True)
    match = re.search(r"^WRKJSON (.*)$", out, re.M)
    if not match:
        raise BenchError(f"wrk printed no summary: {out[-1500:]}")
    data = json.loads(match.group(1))
    seconds_run = data["duration_us"] / 1e6 or elapsed
    errors = {k: v for k, v in data["errors"].items() if v}
    return WrkResult(requests=data["requests"], non_2xx=data["errors"]["status"], seconds=seconds_run,
                     p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000, max_ms=data["max_us"] / 1000,
                     errors=errors)


def run_paced(port: int, path: str, prefix: str, bodies: Path, *, rate: float, seconds: float,
              connections: int = 64, stop_when=None) -> WrkResult:
    """bench.paced: the same signed bodies released at a steady `rate` (an open loop); latency is
    measured from each request's due time."""
    argv = [sys.executable, "-m", "bench.paced", "--port", str(port), "--path", path, "--bodies", str(bodies),
            "--prefix", prefix, "--rate", f"{rate:g}", "--seconds", f"{seconds:g}", "--connections", str(connections)]
    if os.environ.get("STOREOPS_BENCH_TIMELINES"):  # a diagnostic: each request's due time and latency
        argv += ["--timeline", str(Path(os.environ["STOREOPS_BENCH_TIMELINES"]) / f"{prefix}.tsv")]
    out, _ = _run_until(argv, seconds, stop_when, "bench.paced")
    match = re.search(r"^PACEDJSON (.*)$", out, re.M)
    if not match:
        raise BenchError(f"bench.paced printed no summary: {out[-1500:]}")
    data = json.loads(match.group(1))
    errors = {k: v for k, v in data["errors"].items() if v}
    return WrkResult(requests=data["requests"], non_2xx=data["non_2xx"], seconds=data["seconds"],
                     p50_ms=data["p50_ms"], p99_ms=data["p99_ms"], max_ms=data["max_ms"], errors=errors,
                     pauses=[tuple(p) for p in data.get("pauses", [])],
                     p99_outside_pauses_ms=data.get("p99_outside_pauses_ms"),
                     held_outside_pauses=data.get("held_outside_pauses", 0))


# -- the bench environment --------------------------------------------------------------------------

class BenchEnv:
    """The bench's cluster, template database and bookkeeping for one run."""

    def __init__(self, *, processes: int, keep: bool = False, smoke: bool = False):
        self.processes = processes
        self.keep = keep
        self.smoke = smoke
        base_parent = Path(os.environ.get("STOREOPS_BENCH_TMP", "/tmp"))
        self.tmp = Path(tempfile.mkdtemp(prefix="storeops-bench-", dir=base_parent))
        os.chmod(self.tmp, 0o755)  # the postgres OS user (when we are root) must reach its data dir
        self.cluster = Cluster(self.tmp / "pg", port=free_port(), dbname="storeops", settings=dict(CLUSTER_SETTINGS))
        self.template = "bench_template"
        self.services: list[Service] = []

    # lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        from runner.migrate import apply

        self.cluster.start()
        self.cluster.psql(f'create database "{self.template}"')
        apply(self.cluster.url(self.template))

    def close(self) -> None:
        for svc in self.services:
            with contextlib.suppress(Exception):
                svc.stop(timeout=10)
        with contextlib.suppress(Exception):
            if self.keep:
                self.cluster.stop()
            else:
                self.cluster.destroy()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # databases ------------------------------------------------------------------------------------
    def new_database(self, name: str) -> str:
        """A fresh database cloned from the migrated template; returns its URL."""
        db = f"bench_{name}_{uuid.uuid4().hex[:6]}"
        self.cluster.psql(f'create database "{db}" template "{self.template}"')
        url = self.cluster.url(db)
        with psycopg.connect(url, autocommit=True) as conn:  # CREATE DATABASE ... TEMPLATE copies no settings
            conn.execute("select storeops_private.configure_database()")
        return url

    def drop_database(self, url: str) -> None:
        db = url.rsplit("/", 1)[1]
        with contextlib.suppress(Exception):
            self.cluster.psql(f'drop database if exists "{db}" with (force)')

    def postmaster_pid(self) -> int | None:
        return self.cluster.pid()

    # services -------------------------------------------------------------------------------------
    def runner_env(self, url: str, port: int, *, extra: dict | None = None) -> dict:
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "STOREOPS_HTTP_HOST": "127.0.0.1",
            "STOREOPS_HTTP_PORT": str(port),
            "STOREOPS_RATE_LIMIT_SOURCE": "0",
            "STOREOPS_RATE_LIMIT_TENANT": "0",
            "RAZORPAY_WEBHOOK_SECRET": PLATFORM_SECRET,
            "SHIPROCKET_WEBHOOK_SECRET": SHIPROCKET_TOKEN,
            # the scheduler's health checks must not reach the internet from a benchmark
            "RAZORPAY_API_BASE": "http://127.0.0.1:9",
            "SHIPROCKET_API_BASE": "http://127.0.0.1:9",
            "STOREOPS_DNS_NAMESERVERS": "127.0.0.1:9",
            "STOREOPS_DNS_TIMEOUT": "0.5",
            "PYTHONUNBUFFERED": "1",
            "_BENCH_PROCESSES": str(self.processes),
        }
        env.pop("STOREOPS_LISTEN_URL", None)
        env.pop("STOREOPS_POLL_INTERVAL", None)
        env.update(extra or {})
        return env

    def start_runner(self, url: str, name: str, *, worker_idle: bool = False, processes: int | None = None,
                     extra_env: dict | None = None) -> RunnerService:
        port = free_port()
        procs = processes or self.processes
        env = self.runner_env(url, port, extra=extra_env)
        env["_BENCH_PROCESSES"] = str(procs)
        # Intake only: `serve --no-worker`, so nothing is applied during the measurement (the
        # events stay stored, unprocessed).
        argv = [sys.executable, "-m", "runner", "serve", "--processes", str(procs)] + (["--no-worker"] if worker_idle else [])
        svc = RunnerService(argv, env,
                            self.tmp / f"{name}.log", port)
        self.services.append(svc)
        return svc.start()

    def start_baseline_http(self, name: str, processes: int | None = None) -> Service:
        port = free_port()
        procs = processes or self.processes
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        svc = Service([sys.executable, "-m", "bench.hello", "--port", str(port), "--processes", str(procs)], env,
                      self.tmp / f"{name}.log", port)
        self.services.append(svc)
        return svc.start()

    def stop_service(self, svc: Service) -> None:
        svc.stop()
        with contextlib.suppress(ValueError):
            self.services.remove(svc)


# -- machine facts ----------------------------------------------------------------------------------

def machine_facts(cluster: Cluster) -> dict[str, str]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    pg = "?"
    with contextlib.suppress(Exception):
        pg = cluster.psql("select version()").strip()
    versions = {}
    for mod in ("uvicorn", "starlette", "psycopg", "uvloop", "httptools", "orjson", "procrastinate"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod)
    wrk_version = "?"
    with contextlib.suppress(Exception):
        out = subprocess.run([WRK, "-v"], capture_output=True, text=True, timeout=5)
        wrk_version = (out.stdout or out.stderr).strip().splitlines()[0]
    return {
        "nproc": str(os.cpu_count()),
        "memory": mem,
        "cpu": cpu,
        "kernel": platform.release(),
        "postgres": pg,
        "python": sys.version.split()[0],
        "packages": ", ".join(f"{k} {v}" for k, v in versions.items()),
        "wrk": wrk_version,
        "load_average_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
    }
