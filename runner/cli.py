"""`storeops` command line. Every error a user can hit is one line on stderr and a non-zero exit;
no traceback reaches a user (set STOREOPS_DEBUG=1 to see one).

Commands live in `runner/commands/`: each module there defines `register(subparsers)`, which adds
its subcommands with `set_defaults(func=...)`. A command function takes the parsed args and returns
an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

import runner.commands


class UserError(Exception):
    """An error the user can act on; its message is printed as one line."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="storeops",
        description=(
            "Operations backbone for a multi-tenant storefront: custom domains, Razorpay payments, "
            "Shiprocket shipping, a retry queue, health checks and monitoring. With DATABASE_URL unset, "
            "commands use the embedded local cluster (storeops db start)."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(runner.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"runner.commands.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    logging.basicConfig(level=os.environ.get("STOREOPS_LOG_LEVEL", "INFO").upper(), stream=sys.stderr,
                        format="%(message)s")
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the one place a traceback is turned into a line
        if os.environ.get("STOREOPS_DEBUG"):
            raise
        print(f"storeops {args.command}: {describe_error(exc)}", file=sys.stderr)
        return 1


def describe_error(exc: BaseException) -> str:
    from runner.cluster import ClusterError
    from runner.migrate import MigrationError

    if isinstance(exc, UserError | ClusterError | MigrationError):
        return str(exc)
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        psycopg = None
    if psycopg is not None and isinstance(exc, psycopg.OperationalError):
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "connection failed"
        return f"cannot reach the database: {first} (check DATABASE_URL or run 'storeops db start')"
    if psycopg is not None and isinstance(exc, psycopg.Error):
        diag = getattr(exc, "diag", None)
        primary = diag.message_primary if diag and diag.message_primary else str(exc).splitlines()[0]
        return f"database error: {primary}"
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
