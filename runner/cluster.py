"""The embedded PostgreSQL cluster: one piece of code shared by `storeops db`, the tests and the
benchmark harness.

initdb and postgres refuse to run as root. When the effective uid is 0 every server-side command
runs as the `postgres` OS user (`runuser -u postgres -- ...`) against a data directory that user
owns; for a normal user everything runs as that user. The cluster listens on 127.0.0.1 on its own
port with its own socket directory, so it never collides with a system Postgres on 5432.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 54329
SUPERUSER = "postgres"
SERVICE_USER = "postgres"
# Unix socket paths are limited to 107 bytes; leave room for "/.s.PGSQL.NNNNN".
_MAX_SOCKET_DIR = 90


class ClusterError(RuntimeError):
    """Something a user can act on went wrong with the embedded cluster; the message says what."""


def running_as_root() -> bool:
    return os.geteuid() == 0


def find_bindir() -> Path:
    """The newest installed PostgreSQL server binaries, or STOREOPS_PG_BINDIR."""
    override = os.environ.get("STOREOPS_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        (p for p in Path("/usr/lib/postgresql").glob("*/bin") if (p / "initdb").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if candidates:
        return candidates[-1]
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise ClusterError(
        "PostgreSQL server binaries not found: install postgresql-15 (make run does this) "
        "or set STOREOPS_PG_BINDIR"
    )


def pg_cron_available(bindir: Path) -> bool:
    libdir = bindir.parent / "lib"
    return (libdir / "pg_cron.so").exists()


def wal_compression_for(pg_config_output: str) -> str:
    """The wal_compression setting for a server described by `pg_config --version --configure`:
    lz4 for PostgreSQL 15 or later built with it (Debian's is), else 'on' (pglz, any version)."""
    match = re.match(r"PostgreSQL (\d+)", pg_config_output)
    major = int(match.group(1)) if match else 0
    return "lz4" if major >= 15 and "--with-lz4" in pg_config_output else "on"


def wal_compression_method(bindir: Path) -> str:
    """Compressing full-page images halves the WAL of bulk deletes such as the 90-day cleanup,
    which ingest commits would otherwise queue behind. pglz when pg_config cannot be asked."""
    try:
        out = subprocess.run([str(bindir / "pg_config"), "--version", "--configure"], capture_output=True,
                             text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "on"
    return wal_compression_for(out)


def _service_user_can_reach(path: Path) -> bool:
    """Whether the postgres OS user can create and use `path` (every parent must be searchable)."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    result = subprocess.run(
        ["runuser", "-u", SERVICE_USER, "--", "test", "-x", str(probe)],
        capture_output=True,
    )
    return result.returncode == 0


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    """A local cluster in `base_dir`: data in `base_dir/data`, sockets in `base_dir/run`."""

    base_dir: Path
    port: int = DEFAULT_PORT
    dbname: str = "storeops"
    settings: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).absolute()
        self.bindir = find_bindir()

    # -- paths -----------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.base_dir / "data"

    @property
    def socket_dir(self) -> Path:
        run = self.base_dir / "run"
        if len(str(run)) <= _MAX_SOCKET_DIR:
            return run
        digest = hashlib.sha1(str(self.base_dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"storeops-pg-{digest}"

    @property
    def logfile(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, dbname: str | None = None) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname or self.dbname}"

    # -- running commands ------------------------------------------------------------------
    def _cmd(self, argv: list[str]) -> list[str]:
        if running_as_root():
            return ["runuser", "-u", SERVICE_USER, "--", *argv]
        return argv

    def _run(self, argv: list[str], check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run(self._cmd(argv), capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            raise ClusterError(f"{Path(argv[0]).name} failed: {detail[-1] if detail else result.returncode}")
        return result

    def _prepare_dir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if running_as_root():
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(path, 0o700)

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").exists()

    def init(self) -> bool:
        """Create the cluster if it does not exist. Returns True when it was created now."""
        if self.initialized:
            return False
        if running_as_root() and not _service_user_can_reach(self.base_dir.parent):
            raise ClusterError(
                f"the {SERVICE_USER} OS user cannot reach {self.base_dir.parent}; "
                "set STOREOPS_PGDATA to a directory it can use"
            )
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if running_as_root():
            entry = pwd.getpwnam(SERVICE_USER)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self._prepare_dir(self.datadir)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D", str(self.datadir),
                "-U", SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )
        self._write_config()
        return True

    def _write_config(self) -> None:
        conf = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            "max_connections": "300",
            "shared_buffers": "256MB",
            "wal_compression": wal_compression_method(self.bindir),
            "logging_collector": "off",
            "log_min_messages": "warning",
            "timezone": "'UTC'",
        }
        if pg_cron_available(self.bindir):
            conf["shared_preload_libraries"] = "'pg_cron'"
            conf["cron.database_name"] = f"'{self.dbname}'"
            conf["cron.use_background_workers"] = "on"
            conf["max_worker_processes"] = "16"
        conf.update(self.settings)
        text = "# written by storeops (runner/cluster.py)\n" + "".join(f"{k} = {v}\n" for k, v in conf.items())
        target = self.datadir / "storeops.conf"
        target.write_text(text)
        main = self.datadir / "postgresql.conf"
        if "include_if_exists = 'storeops.conf'" not in main.read_text():
            with main.open("a") as fh:
                fh.write("\ninclude_if_exists = 'storeops.conf'\n")
        if running_as_root():
            entry = pwd.getpwnam(SERVICE_USER)
            for path in (target, main):
                os.chown(path, entry.pw_uid, entry.pw_gid)

    def pid(self) -> int | None:
        """The postmaster's pid if it is alive; a stale pid file (left by a crash) yields None."""
        pidfile = self.datadir / "postmaster.pid"
        try:
            pid = int(pidfile.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError, PermissionError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        # A recycled pid belonging to something else is not our postmaster.
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"postgres" not in cmdline:
                return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def _leftover_pids(self) -> list[int]:
        """Processes working in the data directory (postgres processes chdir there)."""
        datadir = self.datadir.resolve()
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if Path(os.readlink(entry / "cwd")) == datadir:
                        pids.append(int(entry.name))
        return pids

    def _wait_for_leftovers(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while (left := self._leftover_pids()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if left:
            raise ClusterError(
                f"processes of a crashed postgres still use {self.datadir} (pids "
                f"{', '.join(map(str, left))}); stop them and run 'storeops db start' again"
            )

    def start(self, timeout: float = 60) -> bool:
        """Start the cluster (creating it first if needed). Returns False if it was already running."""
        self.init()
        if self.running():
            return False
        stale = self.datadir / "postmaster.pid"
        if stale.exists():
            # A crash left its pid file. The dead postmaster's children exit a moment after they
            # notice; a new postmaster must not start beside them (postgres then refuses, or the
            # port is still held), so wait for them. Postgres recovers from the crash by itself.
            self._wait_for_leftovers()
            stale.unlink()
            # Its socket lock files name the dead pid too; when nobody reaps the dead postmaster
            # (a container whose pid 1 is not an init) that zombie still "exists" to postgres's check.
            if self.socket_dir.is_dir():
                for lock in self.socket_dir.glob(".s.PGSQL.*.lock"):
                    lock.unlink(missing_ok=True)
        if port_in_use(self.port, self.host):
            raise ClusterError(
                f"port {self.port} on {self.host} is already in use by another process; "
                "stop it or set STOREOPS_PG_PORT to a free port"
            )
        self._write_config()
        self._prepare_dir(self.socket_dir)
        log_offset = self.logfile.stat().st_size if self.logfile.exists() else 0
        result = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "-D", str(self.datadir),
                "-l", str(self.logfile),
                "-w", "-t", str(int(timeout)),
                "start",
            ],
            check=False,
            timeout=timeout + 10,
        )
        if result.returncode != 0:
            raise ClusterError(f"postgres did not start: {self._start_failure(log_offset) or result.stderr.strip()}")
        self.ensure_database(self.dbname)
        return True

    def _start_failure(self, log_offset: int) -> str:
        """Why this start failed: the first FATAL line (and its HINT) it logged, else its last line."""
        lines: list[str] = []
        with contextlib.suppress(OSError), self.logfile.open(errors="replace") as fh:
            fh.seek(log_offset)
            lines = [line.strip() for line in fh.read().splitlines() if line.strip()]
        for i, line in enumerate(lines):
            if "FATAL:" in line:
                reason = line.split("FATAL:", 1)[1].strip()
                if i + 1 < len(lines) and "HINT:" in lines[i + 1]:
                    reason += " (" + lines[i + 1].split("HINT:", 1)[1].strip() + ")"
                return f"{reason}; see {self.logfile}"
        return lines[-1] if lines else ""

    def stop(self, mode: str = "fast") -> bool:
        """Stop the cluster. Returns False if it was not running."""
        if not self.initialized or not self.running():
            return False
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop"])
        return True

    def kill(self) -> None:
        """SIGKILL the postmaster, as a crash would (tests use this)."""
        pid = self.pid()
        if pid:
            subprocess.run(self._cmd(["kill", "-9", str(pid)]), check=False)
            deadline = time.monotonic() + 10
            while self.running() and time.monotonic() < deadline:
                time.sleep(0.05)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)
        if self.socket_dir != self.base_dir / "run":
            shutil.rmtree(self.socket_dir, ignore_errors=True)

    def status(self) -> dict[str, object]:
        return {
            "running": self.running(),
            "pid": self.pid(),
            "port": self.port,
            "datadir": str(self.datadir),
            "socket_dir": str(self.socket_dir),
            "url": self.url(),
            "pg_cron": pg_cron_available(self.bindir),
        }

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", self.url(dbname), "-c", sql],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise ClusterError(f"psql failed: {result.stderr.strip()}")
        return result.stdout

    def ensure_database(self, dbname: str) -> None:
        exists = self.psql(f"select 1 from pg_database where datname = '{dbname}'")
        if not exists.strip():
            self.psql(f'create database "{dbname}"')


def project_root() -> Path:
    """The checkout this package lives in (where setup.cfg is), else the working directory."""
    here = Path(__file__).resolve().parent.parent
    if (here / "setup.cfg").exists():
        return here
    return Path.cwd()


def default_base_dir() -> Path:
    """`.pgdata` in the project, unless STOREOPS_PGDATA says otherwise or (as root) the postgres
    OS user cannot reach the project, in which case a per-project directory under /var/tmp."""
    override = os.environ.get("STOREOPS_PGDATA")
    if override:
        return Path(override)
    local = project_root() / ".pgdata"
    if running_as_root() and not local.exists() and not _service_user_can_reach(local.parent):
        digest = hashlib.sha1(str(local).encode()).hexdigest()[:12]
        return Path("/var/tmp/storeops") / digest
    return local


def default_cluster() -> Cluster:
    port = int(os.environ.get("STOREOPS_PG_PORT", DEFAULT_PORT))
    return Cluster(default_base_dir(), port=port)
