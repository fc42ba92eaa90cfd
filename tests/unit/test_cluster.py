"""The embedded cluster (runner/cluster.py) and `storeops db start|status|url|stop`.

These start a real PostgreSQL, so the whole module shares one cluster directory (one initdb): the
Python API tests and the CLI tests drive the same data directory, each test first putting the
cluster in the state it needs.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest

from runner.cluster import (
    Cluster,
    ClusterError,
    free_port,
    port_in_use,
    running_as_root,
    wal_compression_for,
    wal_compression_method,
)


@pytest.fixture(scope="module")
def pg():
    root = Path(tempfile.mkdtemp(prefix="storeops-cluster-test-", dir="/tmp"))
    os.chmod(root, 0o755)  # the postgres OS user (as root) must reach the cluster under it
    cluster = Cluster(root / "pg", port=free_port())
    try:
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def running(pg):
    pg.start()
    return pg


@pytest.fixture
def busy_port():
    """A port some other program is listening on."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def query(cluster: Cluster, sql: str, dbname: str | None = None):
    with psycopg.connect(cluster.url(dbname), connect_timeout=5) as c:
        return c.execute(sql).fetchone()[0]


def test_start_creates_the_cluster_and_its_database(pg):
    assert not pg.initialized
    assert pg.start() is True
    assert pg.initialized and pg.running()
    assert pg.pid() is not None
    # The default database exists and answers on the cluster's own port.
    assert query(pg, "select current_database()") == "storeops"
    assert query(pg, "show port") == str(pg.port)
    if running_as_root():
        # initdb and postgres refuse to run as root: the server runs as the postgres OS user.
        uid_line = next(line for line in Path(f"/proc/{pg.pid()}/status").read_text().splitlines()
                        if line.startswith("Uid:"))
        assert int(uid_line.split()[1]) != 0
        assert pg.datadir.stat().st_uid != 0


def test_pg_cron_is_preloaded(running):
    assert "pg_cron" in query(running, "show shared_preload_libraries")
    # and usable: the extension can be created in the cluster's database.
    with psycopg.connect(running.url(), autocommit=True) as c:
        c.execute("create extension if not exists pg_cron")
        assert c.execute("select count(*) from cron.job").fetchone()[0] >= 0


def test_the_socket_directory_is_the_clusters_own(running):
    sockets = query(running, "show unix_socket_directories")
    assert sockets == str(running.socket_dir)
    assert running.socket_dir == running.base_dir / "run"
    assert (running.socket_dir / f".s.PGSQL.{running.port}").exists()
    assert not Path(f"/var/run/postgresql/.s.PGSQL.{running.port}").exists()
    # A client can use the socket directly, without TCP.
    with psycopg.connect(host=str(running.socket_dir), port=running.port, user="postgres", dbname="storeops") as c:
        assert c.execute("select 1").fetchone()[0] == 1


def test_starting_twice_is_harmless(running):
    pid = running.pid()
    assert running.start() is False
    assert running.pid() == pid
    assert query(running, "select 1") == 1


def test_status_and_url(running):
    info = running.status()
    assert info["running"] is True
    assert info["pid"] == running.pid()
    assert info["port"] == running.port
    assert info["url"] == running.url() == f"postgresql://postgres@127.0.0.1:{running.port}/storeops"
    assert info["datadir"] == str(running.datadir)
    assert info["socket_dir"] == str(running.socket_dir)


def test_a_crash_leaves_a_stale_pid_file_that_start_recovers(running):
    old = running.pid()
    running.kill()  # SIGKILL the postmaster
    assert not running.running()
    assert (running.datadir / "postmaster.pid").exists(), "a crash leaves its pid file behind"
    assert running.start() is True
    assert running.pid() not in (None, old)
    assert query(running, "select 1") == 1


def test_a_pid_file_naming_a_dead_process_is_recovered(running):
    running.stop()
    dead = subprocess.Popen(["true"])
    dead.wait()
    pidfile = running.datadir / "postmaster.pid"
    pidfile.write_text(f"{dead.pid}\n{running.datadir}\n1700000000\n{running.port}\n")
    assert running.status()["running"] is False
    assert running.start() is True
    assert query(running, "select 1") == 1


def test_stop(running):
    assert running.stop() is True
    assert not running.running()
    assert running.status()["running"] is False
    assert not port_in_use(running.port)
    assert running.stop() is False  # stopping a stopped cluster is harmless too
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(running.url(), connect_timeout=2)


def test_a_port_already_in_use_is_reported(pg, busy_port):
    pg.stop()
    blocked = Cluster(pg.base_dir, port=busy_port)
    with pytest.raises(ClusterError, match=rf"port {busy_port} .*already in use"):
        blocked.start()
    assert not blocked.running()


# -- storeops db ... -------------------------------------------------------------------------------

def storeops(pg: Cluster, *args: str, port: int | None = None) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("storeops")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "runner"]
    env = {**os.environ, "STOREOPS_PGDATA": str(pg.base_dir), "STOREOPS_PG_PORT": str(port or pg.port)}
    env.pop("DATABASE_URL", None)
    env.pop("STOREOPS_DEBUG", None)
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=120)


def test_cli_db_start_status_url_stop(pg):
    pg.stop()
    first = storeops(pg, "db", "start")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("started")
    assert pg.running()
    pid = pg.pid()

    again = storeops(pg, "db", "start")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("already running")
    assert pg.pid() == pid

    url = storeops(pg, "db", "url")
    assert url.returncode == 0
    assert url.stdout.strip() == f"postgresql://postgres@127.0.0.1:{pg.port}/storeops"
    assert query(pg, "select 1") == 1

    status = storeops(pg, "db", "status")
    assert status.returncode == 0
    assert f"running (pid {pid})" in status.stdout
    assert str(pg.socket_dir) in status.stdout

    stop = storeops(pg, "db", "stop")
    assert (stop.returncode, stop.stdout.strip()) == (0, "stopped")
    assert not pg.running()
    stopped = storeops(pg, "db", "status")
    assert stopped.returncode != 0  # scripts can test "is it up?"
    assert stopped.stdout.startswith("stopped")


def test_cli_db_start_on_a_busy_port_says_so_in_one_line(pg, busy_port):
    pg.stop()
    result = storeops(pg, "db", "start", port=busy_port)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"port {busy_port}" in lines[0] and "in use" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_a_start_failure_says_why(pg):
    pg.stop()
    broken = Cluster(pg.base_dir, port=pg.port, settings={"max_connections": "'many'"})
    with pytest.raises(ClusterError, match=r"did not start: .*configuration file .*contains errors; see .*postgres\.log"):
        broken.start()
    assert not broken.running()
    assert pg.start() is True  # a good configuration is written again on start


@pytest.mark.skipif(not running_as_root(), reason="only root hands the cluster to the postgres OS user")
def test_cli_db_start_where_the_postgres_user_cannot_reach_says_so(tmp_path):
    private = Path(tempfile.mkdtemp(prefix="storeops-private-", dir="/tmp"))  # mode 700, owned by root
    try:
        target = Cluster.__new__(Cluster)
        target.base_dir = private / "pg"
        target.port = free_port()
        result = storeops(target, "db", "start")
        line = result.stderr.strip()
        assert result.returncode != 0 and "\n" not in line and "Traceback" not in line
        assert "cannot reach" in line and "STOREOPS_PGDATA" in line
        assert not (private / "pg").exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_wal_is_compressed(running):
    """Full-page images are compressed (lz4 where the server has it): it halves the WAL of the
    90-day cleanup's deletes, which ingest commits would otherwise queue behind."""
    expected = wal_compression_method(running.bindir)
    shown = query(running, "show wal_compression")
    assert shown == expected if expected == "lz4" else shown in ("pglz", "on")


@pytest.mark.parametrize(("output", "expected"), [
    ("PostgreSQL 15.18 (Debian 15.18-0+deb12u1)\n '--with-lz4' '--with-zstd'", "lz4"),
    ("PostgreSQL 16beta1\n '--with-lz4'", "lz4"),
    ("PostgreSQL 17.2\n '--with-openssl'", "on"),      # built without lz4: pglz
    ("PostgreSQL 14.9\n '--with-lz4'", "on"),          # 14 only knows on/off
    ("", "on"),                                         # pg_config said nothing useful
])
def test_wal_compression_is_lz4_only_where_the_server_has_it(output, expected):
    assert wal_compression_for(output) == expected
