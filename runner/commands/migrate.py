"""`storeops migrate`: apply (or roll back) the schema migrations."""

from __future__ import annotations

from runner import migrate
from runner.config import resolve_database_url


def register(sub) -> None:
    p = sub.add_parser("migrate", help="apply pending schema migrations (a no-op when up to date)")
    p.add_argument("--rollback", action="store_true",
                   help="roll back instead of applying: the newest migration only, unless --count or --all")
    p.add_argument("--count", type=int, default=None, help="with --rollback: how many, newest first (default: 1)")
    p.add_argument("--all", action="store_true",
                   help="with --rollback: every migration (drops every storeops table and its data)")
    p.add_argument("--status", action="store_true", help="list applied and pending migrations, change nothing")
    p.set_defaults(func=cmd_migrate)


def cmd_migrate(args) -> int:
    from runner.cli import UserError  # not at import time: runner.cli imports this module

    url = resolve_database_url()
    if not url.startswith(("postgresql://", "postgres://")):
        raise UserError(f"DATABASE_URL must be a postgresql://user@host:port/dbname URL, got {url!r}")
    if args.count is not None or args.all:
        if not args.rollback:
            raise UserError("--count and --all go with --rollback")
        if args.all and args.count is not None:
            raise UserError("give --count N or --all, not both")
        if args.count is not None and args.count < 1:
            raise UserError(f"--count must be 1 or more, got {args.count}")
    if args.status and args.rollback:
        raise UserError("give --status or --rollback, not both")
    if args.status:
        st = migrate.state(url)
        for mid in st.applied:
            print(f"applied  {mid}")
        for mid in st.pending:
            print(f"pending  {mid}")
        return 0
    if args.rollback:
        # One by default: a bare --rollback that dropped every table (and every payment record)
        # would be one flag away from losing the data this system exists to keep.
        done = migrate.rollback(url, None if args.all else (args.count or 1))
        print(f"rolled back {len(done)} migration(s)" + (": " + ", ".join(done) if done else ""))
        return 0
    done = migrate.apply(url)
    print(f"applied {len(done)} migration(s)" + (": " + ", ".join(done) if done else "; schema is up to date"))
    return 0
