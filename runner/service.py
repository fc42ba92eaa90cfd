"""`storeops serve` (HTTP receiver + worker + scheduler in one process) and `storeops work`.

SIGTERM/SIGINT: stop accepting connections, let in-flight requests finish, stop claiming, finish or
release in-flight claims, and exit, all within 10 seconds.

`serve --processes N` (N > 1): the parent binds N listening sockets on the port (SO_REUSEPORT, so
the kernel spreads connections evenly) before forking N children; each child is a whole `serve`
(HTTP, worker, scheduler) on its own socket. The parent forwards SIGTERM/SIGINT to the children and
exits when they have; if one child dies, the others are stopped too. `serve` runs on uvloop when it
is installed (`work` keeps asyncio's own loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
import sys

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


class _CoalescingTransport:
    """Hands a transport's writes of one event-loop iteration to the socket as one write.

    uvicorn writes a response's head and its body separately: two send() system calls and two
    loopback segments per webhook, which cost more than the rest of the HTTP work. Joined, they
    are one. Order is kept, and close() sends what is pending first.
    """

    __slots__ = ("_transport", "_loop", "_pending", "_scheduled")

    def __init__(self, transport, loop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False

    def write(self, data) -> None:
        if data:
            self._pending.append(data)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._flush)

    def write_now(self, data) -> None:
        """Write at once (after anything pending): for a response that is already one piece."""
        if self._pending:
            self._flush()
        if not self._transport.is_closing():
            self._transport.write(data)

    def writelines(self, chunks) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        self._scheduled = False
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def set_protocol(self, protocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name):
        return getattr(self._transport, name)


def http_protocol(app=None):
    """uvicorn's httptools protocol writing through _CoalescingTransport ("auto" without httptools).
    Given the runner's app, plain webhook POSTs are handled at the protocol level (runner.fasthttp)."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "auto"

    class CoalescingHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(_CoalescingTransport(transport, self.loop))

    if app is None:
        return CoalescingHttpToolsProtocol
    from runner.fasthttp import webhook_protocol

    return webhook_protocol(CoalescingHttpToolsProtocol, app)


def endpoint_urls(host: str, port: int) -> list[str]:
    base = f"http://{host}:{port}"
    return [f"{base}{p}" for p in (
        "/functions/v1/razorpay-webhook", "/functions/v1/shipping-webhook (give Shiprocket this one)",
        "/functions/v1/shiprocket-webhook", "/functions/v1/create-refund", "/functions/v1/verify-domain-dns",
        "/healthz", "/readyz", "/metrics")]


async def _run(settings: Settings, *, http: bool, worker: bool, scheduler: bool, workers_concurrency: int = 10,
               announce: bool = True, sock: socket.socket | None = None, schema_checked: bool = False) -> None:
    from runner.app import create_app

    url = resolve_database_url(settings)
    if not schema_checked:
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
            # A job in progress (a slow gateway, a long sweep) is interrupted: its tick stays
            # recorded as started, and the next tick runs it again.
            for task in tasks:
                if task.get_name() == "scheduler":
                    task.cancel()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, request_stop, sig.name)

    try:
        if http:
            app = create_app(settings, url, ctx=ctx)
            config = uvicorn.Config(app, host=settings.http_host, port=settings.http_port,
                                    log_config=None, access_log=False, timeout_graceful_shutdown=5,
                                    lifespan="on", loop="asyncio", http=http_protocol(app))
            server = _Server(config)
            tasks.append(asyncio.create_task(server.serve(sockets=[sock] if sock else None), name="http"))
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
        # Run until a signal asks us to stop, or a part fails (then stop the rest and say why).
        stopper = asyncio.create_task(stop.wait())
        watching = set(tasks)
        while not stop.is_set():
            done, _ = await asyncio.wait([*watching, stopper], return_when=asyncio.FIRST_COMPLETED)
            for t in done - {stopper}:
                watching.discard(t)
                if not t.cancelled() and t.exception() is not None and not stop.is_set():
                    request_stop("error")
                    await asyncio.wait([x for x in tasks if x is not t], timeout=7)
                    raise t.exception()
        stopper.cancel()
        # One shutdown budget: what has not finished in 7 s is cancelled (the worker gives its
        # claims back first), leaving time to close the pool within the 10 s promised.
        _done, pending = await asyncio.wait(tasks, timeout=7)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1)
    finally:
        for t in tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(ctx.http.aclose(), 1)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 2)


def _run_loop(coro) -> None:
    """Run the service on uvloop when it is installed (faster sockets and timers), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def serve(settings: Settings | None = None, *, processes: int = 1, worker: bool = True, **kwargs) -> None:
    """HTTP, worker and scheduler in each of `processes` processes (`worker=False`: receive only,
    for a deployment that applies with separate `storeops work` processes)."""
    logs.setup()
    settings = settings or Settings.from_env()
    if processes > 1:
        _serve_processes(settings, processes, worker=worker, **kwargs)
        return
    _run_loop(_run(settings, http=True, worker=worker, scheduler=True, **kwargs))


def work(settings: Settings | None = None, **kwargs) -> None:
    logs.setup()
    asyncio.run(_run(settings or Settings.from_env(), http=False, worker=True, scheduler=False, **kwargs))


def bind_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """`count` listening sockets on one address, SO_REUSEPORT: the kernel balances connections
    across them (a shared socket lets one process take most of a burst of new connections)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, port))
            if port == 0:  # the first socket picked a free port; the others share it
                port = sock.getsockname()[1]
            sock.listen(2048)
            sock.set_inheritable(True)
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def run_processes(socks: list[socket.socket], child) -> int:
    """Fork one child per socket running `child(sock, index)`; forward SIGTERM/SIGINT to them and
    wait. If a child exits on its own, stop the others. Returns the first non-zero exit code (0 if
    they all stopped cleanly)."""
    pids: dict[int, int] = {}
    for index, sock in enumerate(socks):
        pid = os.fork()
        if pid == 0:  # the child: its own socket only, default signal handling until it sets its own
            code = 1
            try:
                for other in socks:
                    if other is not sock:
                        other.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                child(sock, index)
                code = 0
            except KeyboardInterrupt:
                code = 130
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException as exc:  # noqa: BLE001 (one line, as the CLI does)
                from runner.cli import describe_error

                print(f"storeops serve: {describe_error(exc)}", file=sys.stderr, flush=True)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        pids[pid] = index
    for sock in socks:
        sock.close()

    stopping = False

    def forward(signum, _frame):
        nonlocal stopping
        stopping = True
        for pid in list(pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    result = 0
    try:
        while pids:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            if pid not in pids:
                continue
            del pids[pid]
            code = os.waitstatus_to_exitcode(status)
            if code != 0 and not (stopping and code in (-signal.SIGTERM, -signal.SIGINT)):
                result = result or (code if code > 0 else 1)
            if not stopping:  # a child ended by itself: the service is incomplete, stop the rest
                log.error("a serve process exited; stopping the others", extra={"pid": pid, "code": code})
                forward(signal.SIGTERM, None)
                result = result or 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return result


def _serve_processes(settings: Settings, processes: int, *, worker: bool = True, **kwargs) -> None:
    url = resolve_database_url(settings)
    check_schema(url)  # once, in the parent: one clear message instead of one per child
    socks = bind_sockets(settings.http_host, settings.http_port, processes)

    def child(sock: socket.socket, index: int) -> None:
        logs.setup()
        own = dataclasses.replace(settings, http_port=sock.getsockname()[1])
        _run_loop(_run(own, http=True, worker=worker, scheduler=True, sock=sock, schema_checked=True,
                       announce=index == 0, **kwargs))

    code = run_processes(socks, child)
    if code:
        raise SystemExit(code)
