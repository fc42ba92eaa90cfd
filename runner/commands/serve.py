"""`storeops serve` and `storeops work`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("serve", help="run the webhook receiver, worker and scheduler in one process")
    p.add_argument("--host", default=None, help="listen address (default STOREOPS_HTTP_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="listen port (default STOREOPS_HTTP_PORT or 8000)")
    p.add_argument("--processes", type=int, default=1,
                   help="serve processes sharing the port, each with its own worker (default 1)")
    p.add_argument("--no-worker", action="store_true",
                   help="receive only: run no worker here (apply with `storeops work` processes elsewhere)")
    p.set_defaults(func=cmd_serve)
    w = sub.add_parser("work", help="run only the worker (webhook apply, retries, alerts)")
    w.add_argument("--concurrency", type=int, default=10, help="operations run at once (default 10)")
    w.set_defaults(func=cmd_work)


def _settings(args):
    import dataclasses

    from runner.config import Settings

    s = Settings.from_env()
    changes = {}
    if getattr(args, "host", None):
        changes["http_host"] = args.host
    if getattr(args, "port", None):
        changes["http_port"] = args.port
    return dataclasses.replace(s, **changes)


def cmd_serve(args) -> int:
    from runner import service
    from runner.cli import UserError

    if args.processes < 1:
        raise UserError("--processes must be at least 1")
    service.serve(_settings(args), processes=args.processes, worker=not args.no_worker)
    return 0


def cmd_work(args) -> int:
    from runner import service

    service.work(_settings(args), workers_concurrency=args.concurrency)
    return 0
