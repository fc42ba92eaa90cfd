"""Baseline (a) of the ingest section: the runner's HTTP stack answering 200 without the database.

The same pieces as `storeops serve --processes N`: uvicorn's httptools protocol with the runner's
protocol-level webhook path (runner.fasthttp) and coalescing transport, uvloop, N processes on
pre-bound SO_REUSEPORT sockets forked by runner.service.run_processes; Starlette for anything
else. A webhook POST is answered with the runner's success JSON as soon as its body is in: no
signature check, no JSON parsing, no storage. That is the HTTP ceiling.

    python -m bench.hello --port 8001 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from types import SimpleNamespace

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runner import service


async def webhook(request: Request) -> Response:
    await request.body()
    body = orjson.dumps({"status": "ok", "event_id": request.headers.get("x-razorpay-event-id")})
    return Response(body, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def create_app() -> Starlette:
    return Starlette(routes=[
        Route("/functions/v1/razorpay-webhook/{tenant_id}", webhook, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def _match(path: str):
    return (None, None) if path.startswith("/functions/v1/razorpay-webhook") else None


def _accept_now(handler, state, scope, path_tenant, body):
    event_id = next((v.decode() for k, v in scope["headers"] if k == b"x-razorpay-event-id"), None)
    out = orjson.dumps({"status": "ok", "event_id": event_id})
    return SimpleNamespace(request_id="-"), (200, out, None)


def protocol(app):
    from runner.fasthttp import webhook_protocol

    app.state.ctx = SimpleNamespace(settings=SimpleNamespace(max_body_bytes=1_048_576))
    return webhook_protocol(service.http_protocol(), app, match=_match, accept_now=_accept_now)


async def _serve(sock) -> None:
    app = create_app()
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off",
                            http=protocol(app), timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    await server.serve(sockets=[sock])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    socks = service.bind_sockets(args.host, args.port, args.processes)
    if args.processes == 1:
        service._run_loop(_serve(socks[0]))
        return 0
    return service.run_processes(socks, lambda sock, index: service._run_loop(_serve(sock)))


if __name__ == "__main__":
    raise SystemExit(main())
