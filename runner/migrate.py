"""Schema migrations with yoyo-migrations over psycopg 3.

The migrations live in `migrations/` at the top of the checkout (or STOREOPS_MIGRATIONS). yoyo's
`postgresql://` scheme means psycopg2, so URLs are rewritten to `postgresql+psycopg://`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from runner.cluster import project_root


class MigrationError(RuntimeError):
    pass


def migrations_dir() -> Path:
    override = os.environ.get("STOREOPS_MIGRATIONS")
    path = Path(override) if override else project_root() / "migrations"
    if not path.is_dir():
        raise MigrationError(f"migrations directory not found: {path}")
    return path


def yoyo_url(url: str) -> str:
    """psycopg 3 driver, and yoyo's bookkeeping tables pinned to schema public: migrating sets the
    database's search_path to put `storeops` first, which would otherwise move them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            url = "postgresql+psycopg://" + url[len(prefix):]
            break
    if "schema=" not in url:
        url += ("&" if "?" in url else "?") + "schema=public"
    return url


@dataclass
class MigrationState:
    applied: list[str]
    pending: list[str]

    @property
    def current(self) -> bool:
        return not self.pending


def _backend_and_migrations(url: str):
    from yoyo import get_backend, read_migrations

    try:
        backend = get_backend(yoyo_url(url))
    except Exception as exc:  # psycopg.OperationalError and friends, raised at connect time
        raise MigrationError(f"cannot connect to the database: {_one_line(exc)}") from exc
    return backend, read_migrations(str(migrations_dir()))


@contextlib.contextmanager
def _quiet():
    """yoyo prints each step and the result of every SELECT in a migration; keep stdout clean."""
    logger = logging.getLogger("yoyo")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


def apply(url: str) -> list[str]:
    """Apply every pending migration; returns the ids applied (empty when up to date)."""
    backend, migrations = _backend_and_migrations(url)
    try:
        with backend.lock(), _quiet():
            todo = backend.to_apply(migrations)
            backend.apply_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


def rollback(url: str, count: int | None = None) -> list[str]:
    """Roll back the newest `count` migrations (all when None); returns the ids rolled back."""
    backend, migrations = _backend_and_migrations(url)
    try:
        with backend.lock(), _quiet():
            todo = backend.to_rollback(migrations)
            if count is not None:
                todo = todo[:count]
            backend.rollback_migrations(todo)
        return [m.id for m in todo]
    finally:
        backend.connection.close()


def state(url: str) -> MigrationState:
    backend, migrations = _backend_and_migrations(url)
    try:
        pending = [m.id for m in backend.to_apply(migrations)]
        applied = [m.id for m in migrations if m.id not in pending]
        return MigrationState(applied=applied, pending=pending)
    finally:
        backend.connection.close()


def migrate_database(host: str, port: int, user: str, dbname: str, password: str | None = None, **_: object) -> None:
    """A pytest-postgresql `load` callable: migrate the template database once per session."""
    auth = f"{user}:{password}" if password else user
    apply(f"postgresql://{auth}@{host}:{port}/{dbname}")
