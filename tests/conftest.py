"""Shared fixtures: one real PostgreSQL cluster per test session, started by the same code as
`storeops db start` (runner.cluster), a template database migrated once by pytest-postgresql, and
three ways to use it:

- `conn`: a connection to a migrated database inside a transaction that is rolled back after the
  test (fast; most tests).
- `fresh_db`: a database cloned from the template for this test alone, committed to freely; gives
  its URL (concurrency tests, runner processes).
- `cluster`: the Cluster itself, for tests that stop or restart Postgres.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from runner.cluster import Cluster, free_port
from runner.migrate import migrate_database

TEST_DB = "storeops_test"
_state: dict[str, object] = {}


def _test_cluster() -> Cluster:
    cluster = _state.get("cluster")
    if cluster is None:
        base = Path(tempfile.mkdtemp(prefix="storeops-test-pg-", dir=os.environ.get("STOREOPS_TEST_TMP", "/tmp")))
        os.chmod(base, 0o755)
        cluster = Cluster(
            base / "pg",
            port=int(os.environ.get("STOREOPS_TEST_PG_PORT", 0)) or free_port(),
            dbname="storeops",
            settings={"fsync": "off", "full_page_writes": "off", "synchronous_commit": "on"},
        )
        _state["cluster"] = cluster
    return cluster


def pytest_sessionstart(session):
    _test_cluster().start()


def pytest_sessionfinish(session, exitstatus):
    cluster = _state.get("cluster")
    if cluster is not None:
        cluster.destroy()


_cluster = _test_cluster()
postgresql_noproc = factories.postgresql_noproc(
    host=_cluster.host, port=_cluster.port, user="postgres", dbname=TEST_DB, load=[migrate_database]
)


def _configure(url: str) -> None:
    # CREATE DATABASE ... TEMPLATE copies no per-database settings: apply the search_path again.
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("select storeops_private.configure_database()")


@pytest.fixture(scope="session")
def cluster(postgresql_noproc) -> Cluster:
    return _cluster


@pytest.fixture(scope="session")
def template(postgresql_noproc):
    """The migrated template database's name."""
    return postgresql_noproc.template_dbname


@contextlib.contextmanager
def _database(prefix: str, template: str | None):
    """A database for the length of the block: cloned from `template` (search_path applied again),
    or empty when `template` is None. Yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    janitor = DatabaseJanitor(user="postgres", host=_cluster.host, port=_cluster.port, dbname=name,
                              template_dbname=template)
    with janitor:
        url = _cluster.url(name)
        if template:
            _configure(url)
        yield url


@pytest.fixture(scope="session")
def shared_db_url(postgresql_noproc) -> str:
    """One database cloned from the template for all rolled-back tests."""
    with _database("storeops_shared", postgresql_noproc.template_dbname) as url:
        yield url


@pytest.fixture
def conn(shared_db_url):
    """A connection in a transaction that is rolled back at the end of the test."""
    with psycopg.connect(shared_db_url) as c:
        try:
            yield c
        finally:
            c.rollback()


@pytest.fixture
def fresh_db(postgresql_noproc) -> str:
    """URL of a database cloned from the migrated template for this test only."""
    with _database("storeops_t", postgresql_noproc.template_dbname) as url:
        yield url


@pytest.fixture
def empty_db(postgresql_noproc) -> str:
    """URL of an empty (unmigrated) database for migration tests."""
    with _database("storeops_e", None) as url:
        yield url


@pytest.fixture(scope="module")
def module_db(postgresql_noproc) -> str:
    """URL of a database cloned from the migrated template, shared by one test module (for tests
    that drive a long-lived runner process)."""
    with _database("storeops_m", postgresql_noproc.template_dbname) as url:
        yield url
