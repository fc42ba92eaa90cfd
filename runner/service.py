"""`storeops serve` (HTTP receiver + worker + scheduler in one process) and `storeops work`.

SIGTERM/SIGINT: stop accepting connections, let in-flight requests finish, stop claiming, finish or
release in-flight claims, and exit, all within 10 seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

import httpx
import uvicorn

from runner import logs
from runner.config import Settings, resolve_database_url
from runner.context import Context
from runner.db import check_schema, open_pool
from runner.scheduler import Scheduler
from runner.worker import Worker, listen_url

log = logging.getLogger("storeops.service")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # our own handlers stop the worker and scheduler too
        yield


def endpoint_urls(host: str, port: int) -> list[str]:
    base = f"http://{host}:{port}"
    return [f"{base}{p}" for p in (
        "/functions/v1/razorpay-webhook", "/functions/v1/shipping-webhook (give Shiprocket this one)",
        "/functions/v1/shiprocket-webhook", "/functions/v1/create-refund", "/functions/v1/verify-domain-dns",
        "/healthz", "/readyz", "/metrics")]


async def _run(settings: Settings, *, http: bool, worker: bool, scheduler: bool, workers_concurrency: int = 10,
               announce: bool = True) -> None:
    from runner.app import create_app

    url = resolve_database_url(settings)
    await asyncio.to_thread(check_schema, url)
    pool = await open_pool(url, min_size=2, max_size=int(os.environ.get("STOREOPS_POOL_SIZE", 20)))
    ctx = Context(settings=settings, pool=pool, http=httpx.AsyncClient(timeout=10.0))
    env = os.environ
    the_worker = Worker(ctx, listen_url(url), concurrency=workers_concurrency,
                        lease_seconds=int(env.get("STOREOPS_LEASE_SECONDS", 300)),
                        poll_interval=float(env.get("STOREOPS_POLL_INTERVAL", 1.0))) if worker else None
    the_scheduler = Scheduler(ctx, the_worker) if scheduler else None
    server = None
    tasks: list[asyncio.Task] = []
    stop = asyncio.Event()

    def request_stop(signame: str) -> None:
        if stop.is_set():
            return
        log.info("shutting down", extra={"signal": signame})
        stop.set()
        if server is not None:
            server.should_exit = True
        if the_worker:
            the_worker.stop()
        if the_scheduler:
            the_scheduler.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)

    try:
        if http:
            config = uvicorn.Config(create_app(settings, url, ctx=ctx), host=settings.http_host, port=settings.http_port,
                                    log_config=None, access_log=False, timeout_graceful_shutdown=5,
                                    lifespan="on", loop="asyncio")
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve(), name="http"))
            if announce:
                async def announce_when_up():
                    while not server.started and not stop.is_set():
                        await asyncio.sleep(0.05)
                    if server.started:
                        print("storeops is serving:\n  " + "\n  ".join(
                            endpoint_urls(settings.http_host, settings.http_port)), flush=True)
                tasks.append(asyncio.create_task(announce_when_up()))
        if the_worker:
            tasks.append(asyncio.create_task(the_worker.run(), name="worker"))
        if the_scheduler:
            tasks.append(asyncio.create_task(the_scheduler.run(), name="scheduler"))
        log.info("storeops started", extra={"http": http, "worker": worker, "scheduler": scheduler,
                                            "worker_id": ctx.worker_id})
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if t.exception() is not None and not stop.is_set():
                raise t.exception()
        if not stop.is_set():
            await stop.wait()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=9)
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.http.aclose(), 1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 2)


def serve(settings: Settings | None = None, **kwargs) -> None:
    logs.setup()
    asyncio.run(_run(settings or Settings.from_env(), http=True, worker=True, scheduler=True, **kwargs))


def work(settings: Settings | None = None, **kwargs) -> None:
    logs.setup()
    asyncio.run(_run(settings or Settings.from_env(), http=False, worker=True, scheduler=False, **kwargs))
