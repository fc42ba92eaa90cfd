"""`storeops` as a user runs it: a subprocess, its exit code, what it prints. Errors are one line on
stderr with a non-zero exit, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runner import migrate
from runner.cli import build_parser

SCRIPT = Path(sys.executable).with_name("storeops")


def run(*args: str, database_url: str | None = None, module: bool = False) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "runner"] if module or not SCRIPT.exists() else [str(SCRIPT)]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "STOREOPS_DEBUG")}
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return subprocess.run([*argv, *args], capture_output=True, text=True, env=env, timeout=120)


def commands() -> list[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(sub.choices)


def assert_one_clear_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_help_lists_every_command():
    result = run("--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: storeops")
    names = commands()
    assert {"db", "migrate"} <= set(names)
    for name in names:
        assert name in result.stdout, f"{name} missing from --help"


def test_python_dash_m_runner_is_the_same_cli():
    module = run("--help", module=True)
    assert module.returncode == 0, module.stderr
    assert module.stdout == run("--help").stdout


def test_db_help_lists_its_actions():
    result = run("db", "--help")
    assert result.returncode == 0
    for action in ("start", "stop", "status", "url"):
        assert action in result.stdout


def test_no_command_prints_help_and_fails():
    result = run()
    assert result.returncode != 0
    assert "usage: storeops" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "url, expect",
    [
        ("postgresql://x@127.0.0.1:1/nope", "127.0.0.1"),
        ("postgresql://x@no-such-host.invalid/nope", "no-such-host.invalid"),
    ],
)
def test_migrate_against_an_unreachable_database_is_one_clear_line(url, expect):
    line = assert_one_clear_line(run("migrate", database_url=url))
    assert line.startswith("storeops migrate: ")
    assert "connect" in line  # says what failed ...
    assert expect in line     # ... and where it tried


def test_migrate_with_a_malformed_database_url_says_what_is_expected():
    line = assert_one_clear_line(run("migrate", database_url="not-a-url"))
    assert line == (
        "storeops migrate: DATABASE_URL must be a postgresql://user@host:port/dbname URL, got 'not-a-url'"
    )


def test_migrate_twice_the_second_run_is_up_to_date(empty_db):
    first = run("migrate", database_url=empty_db)
    assert first.returncode == 0, first.stderr
    expected = migrate.state(empty_db).applied
    assert expected and expected[0].startswith("0001_")
    assert first.stdout.startswith(f"applied {len(expected)} migration(s)")
    assert "Traceback" not in first.stderr

    second = run("migrate", database_url=empty_db)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "applied 0 migration(s); schema is up to date"

    status = run("migrate", "--status", database_url=empty_db)
    assert status.returncode == 0
    assert "pending" not in status.stdout
    assert status.stdout.count("applied ") == len(expected)


def test_migrate_rollback_takes_back_the_newest_migration_unless_told_more(empty_db):
    assert run("migrate", database_url=empty_db).returncode == 0
    applied = migrate.state(empty_db).applied

    one = run("migrate", "--rollback", database_url=empty_db)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == f"rolled back 1 migration(s): {applied[-1]}"
    assert migrate.state(empty_db).pending == [applied[-1]]

    two = run("migrate", "--rollback", "--count", "2", database_url=empty_db)
    assert two.returncode == 0, two.stderr
    assert two.stdout.strip() == f"rolled back 2 migration(s): {applied[-2]}, {applied[-3]}"

    for argv, says in ((["--count", "1"], "--count and --all go with --rollback"),
                       (["--rollback", "--count", "0"], "--count must be 1 or more, got 0"),
                       (["--rollback", "--all", "--count", "3"], "give --count N or --all, not both"),
                       (["--status", "--count", "2"], "--count and --all go with --rollback"),
                       (["--status", "--rollback"], "give --status or --rollback, not both")):
        refused = run("migrate", *argv, database_url=empty_db)
        assert refused.returncode != 0
        assert says in assert_one_clear_line(refused)
    assert len(migrate.state(empty_db).applied) == len(applied) - 3  # nothing was rolled back by those

    everything = run("migrate", "--rollback", "--all", database_url=empty_db)
    assert everything.stdout.startswith(f"rolled back {len(applied) - 3} migration(s)")
    assert migrate.state(empty_db).applied == []
    assert run("migrate", database_url=empty_db).returncode == 0
    assert migrate.state(empty_db).applied == applied
