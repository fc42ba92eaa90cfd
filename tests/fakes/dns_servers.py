"""Real DNS servers on loopback for the domain-verification tests.

- `KnotServer` / fixture `knot`: Knot DNS (`/usr/sbin/knotd`) as an authoritative server on
  127.0.0.1:<free port>, configured from files it writes into a temp dir. Tests rewrite a zone with
  `knot.set_zone("shop.test", [...records...])`; the serial is bumped and `knotc zone-reload` runs
  blocking, so the next query sees the change.
- `servfail_dns` (dnslib): answers every query with SERVFAIL.
- `blackhole_dns`: a bound UDP socket that never answers, so clients time out.

The benchmark harness (bench/domain_sweep.py) uses KnotServer too, with a generated zone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

KNOTD = os.environ.get("STOREOPS_KNOTD", "/usr/sbin/knotd")
KNOTC = os.environ.get("STOREOPS_KNOTC", "/usr/sbin/knotc")


def free_udp_tcp_port() -> int:
    """A loopback port free for both UDP and TCP (Knot listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free loopback port for a DNS server")


def zone_text(origin: str, records: Iterable[str], serial: int, ttl: int = 60) -> str:
    """A zone file: SOA and NS (with glue) plus the given records (relative or absolute names)."""
    origin = origin.rstrip(".") + "."
    head = [
        f"$ORIGIN {origin}",
        f"$TTL {ttl}",
        f"@ IN SOA ns.{origin} hostmaster.{origin} {serial} 3600 600 86400 30",
        f"@ IN NS ns.{origin}",
        "ns IN A 127.0.0.1",
    ]
    return "\n".join([*head, *records]) + "\n"


class KnotServer:
    """knotd serving zones from `workdir` on 127.0.0.1:port, as the current user (no privilege drop)."""

    def __init__(self, workdir: Path, zones: dict[str, list[str]] | None = None, port: int | None = None,
                 udp_workers: int = 1) -> None:
        self.workdir = Path(workdir)
        self.port = port or free_udp_tcp_port()
        self.udp_workers = udp_workers
        self.zones: dict[str, list[str]] = {name.rstrip(".").lower(): list(recs) for name, recs in (zones or {}).items()}
        self._serials: dict[str, int] = {}
        self._proc: subprocess.Popen | None = None
        self.conf = self.workdir / "knot.conf"
        self.socket_path = self.workdir / "run" / "knot.sock"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _zone_file(self, name: str) -> Path:
        return self.workdir / "zones" / f"{name}.zone"

    def _write_zone(self, name: str) -> None:
        serial = self._serials.get(name, 0) + 1
        self._serials[name] = serial
        path = self._zone_file(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(zone_text(name, self.zones[name], serial))
        tmp.replace(path)

    def _write_config(self) -> None:
        for sub in ("run", "db", "zones"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        zones = "".join(f"  - domain: {name}\n" for name in self.zones)
        # No `user:` line, so knotd keeps the invoking user (root in CI) and never drops privileges.
        self.conf.write_text(
            "server:\n"
            f"  rundir: \"{self.workdir / 'run'}\"\n"
            f"  pidfile: \"{self.workdir / 'run' / 'knot.pid'}\"\n"
            f"  listen: 127.0.0.1@{self.port}\n"
            f"  udp-workers: {self.udp_workers}\n"
            "  tcp-workers: 1\n"
            "  background-workers: 1\n"
            "database:\n"
            f"  storage: \"{self.workdir / 'db'}\"\n"
            "control:\n"
            f"  listen: \"{self.socket_path}\"\n"
            "log:\n"
            f"  - target: \"{self.workdir / 'knot.log'}\"\n"
            "    any: info\n"
            "template:\n"
            "  - id: default\n"
            f"    storage: \"{self.workdir / 'zones'}\"\n"
            "    file: \"%s.zone\"\n"
            "    journal-content: none\n"
            "    zonefile-sync: -1\n"
            "    zonefile-load: whole\n"
            "    semantic-checks: off\n"
            "zone:\n" + (zones or "  []\n")
        )

    def start(self, timeout: float = 10.0) -> KnotServer:
        self._write_config()
        for name in self.zones:
            self._write_zone(name)
        log = open(self.workdir / "knotd.out", "ab")
        self._proc = subprocess.Popen([KNOTD, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        probe = next(iter(self.zones), None)
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"knotd exited with {self._proc.returncode}: {self.log_tail()}")
            if probe is None or self._answers(probe):
                return self
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"knotd did not answer on {self.address} within {timeout}s: {self.log_tail()}")
            time.sleep(0.02)

    def _answers(self, zone: str) -> bool:
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        try:
            reply = dns.query.udp(dns.message.make_query(zone, "SOA"), "127.0.0.1", port=self.port, timeout=0.2)
        except (OSError, dns.exception.Timeout):
            return False
        return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for name in ("knotd.out", "knot.log"):
            path = self.workdir / name
            if path.exists():
                out += path.read_text(errors="replace").splitlines()[-lines:]
        return " | ".join(out)

    def set_zone(self, name: str, records: Iterable[str]) -> None:
        """Replace a served zone's records (SOA/NS are added) and wait until knotd serves them."""
        name = name.rstrip(".").lower()
        if name not in self.zones:
            raise KeyError(f"{name} is not a zone of this server; pass it to KnotServer(zones=...)")
        self.zones[name] = list(records)
        self._write_zone(name)
        self.knotc("zone-reload", name)

    def knotc(self, *args: str) -> str:
        proc = subprocess.run([KNOTC, "-c", str(self.conf), "-b", "-t", "10", *args],
                              capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"knotc {' '.join(args)} failed: {proc.stdout} {proc.stderr} {self.log_tail()}")
        return proc.stdout

    def stop(self) -> None:
        if self._proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.terminate()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=5)
        self._proc = None

    def __enter__(self) -> KnotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def knot_server(zones: dict[str, list[str]], workdir: Path | None = None, **kwargs: object) -> Iterator[KnotServer]:
    """Start knotd for `zones` in `workdir` (a fresh temp dir, removed afterwards, when None)."""
    own = workdir is None
    path = Path(tempfile.mkdtemp(prefix="storeops-knot-")) if own else Path(workdir)
    try:
        with KnotServer(path, zones, **kwargs) as server:  # type: ignore[arg-type]
            yield server
    finally:
        if own:
            shutil.rmtree(path, ignore_errors=True)


# Zones the integration tests serve. The platform's own zone holds the CNAME target.
TEST_ZONES = ("shop.test", "apex.test", "chain.test", "platform.test")


@pytest.fixture
def knot(tmp_path: Path) -> Iterator[KnotServer]:
    """Knot serving empty TEST_ZONES; tests fill them with `knot.set_zone(...)`."""
    if not Path(KNOTD).exists():
        pytest.skip(f"{KNOTD} is not installed (apt-get install knot)")
    with KnotServer(tmp_path / "knot", {name: [] for name in TEST_ZONES}) as server:
        yield server


class _ServfailResolver:
    def resolve(self, request, handler):  # dnslib BaseResolver protocol
        from dnslib import RCODE

        reply = request.reply()
        reply.header.rcode = RCODE.SERVFAIL
        return reply


@pytest.fixture
def servfail_dns() -> Iterator[str]:
    """A dnslib server on loopback answering SERVFAIL to everything; yields "127.0.0.1:port"."""
    from dnslib.server import DNSLogger, DNSServer

    port = free_udp_tcp_port()
    server = DNSServer(_ServfailResolver(), port=port, address="127.0.0.1",
                       logger=DNSLogger(log="-request,-reply,-truncated,-error,-recv,-send,-data", prefix=False))
    server.start_thread()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()
        server.server.server_close()


@pytest.fixture
def blackhole_dns() -> Iterator[str]:
    """A UDP port that receives queries and never answers; yields "127.0.0.1:port"."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()
