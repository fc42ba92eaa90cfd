"""The webhook hot path at the HTTP-protocol level, under uvicorn's httptools protocol.

At thousands of webhooks a second per process, uvicorn's per-request machinery (the ASGI scope,
a RequestResponseCycle, receive/send messages, a response header check per header) costs about
as much CPU as the webhook's own work. This protocol takes one plain kind of request away from it:

    POST <a webhook path> with a Content-Length within the body limit, on a connection with no
    other request in progress, without Expect: 100-continue, X-Forwarded-* or Forwarded headers

For such a request the body is collected as the parser hands it over and, once complete, one task
runs the same handler the ASGI route runs (runner.webhooks), and the response is written to the
socket in one piece. Everything else (other paths and methods, chunked or oversized bodies,
pipelined requests behind another one, proxied requests) is left to uvicorn unchanged, and the
ASGI route gives the same answers (tests check both ways).

Pipelining keeps its order: while a webhook is in progress on the connection, `self.cycle` is a
_WebhookCycle that is not complete, so uvicorn queues any request that arrives behind it, and
finishing the webhook starts that queue (uvicorn's on_response_complete). Graceful shutdown waits
for the webhook (its task is in the server's task set) and closes the connection after it.
"""

from __future__ import annotations

from runner import webhooks

_PROXY_HEADERS = (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"forwarded")


class _NoEvent:
    """uvicorn's connection_lost() sets the cycle's message_event; a webhook cycle has nothing to wake."""

    __slots__ = ()

    def set(self) -> None:
        pass


_NO_EVENT = _NoEvent()


class _WebhookCycle:
    """Stands in for uvicorn's RequestResponseCycle while a webhook is handled here; has the
    attributes uvicorn's protocol reads and writes on a cycle (response_complete, keep_alive,
    disconnected, message_event)."""

    __slots__ = ("handler", "path_tenant", "scope", "chunks", "keep_alive", "response_complete",
                 "disconnected", "message_event")

    def __init__(self, handler, path_tenant: str | None, scope: dict, keep_alive: bool):
        self.handler = handler
        self.path_tenant = path_tenant
        self.scope = scope
        self.chunks: list[bytes] = []
        self.keep_alive = keep_alive
        self.response_complete = False
        self.disconnected = False
        self.message_event = _NO_EVENT


def webhook_protocol(base, app, *, match=webhooks.match, accept_now=webhooks.accept_now,
                     process=webhooks.process):
    """A subclass of uvicorn's httptools protocol class `base` that handles the plain webhook
    POSTs of `app` (runner.app.App, whose state the handlers use) itself. `match`, `accept_now`
    and `process` are runner.webhooks' (the benchmark's no-database baseline passes its own)."""

    class WebhookHttpProtocol(base):
        def on_headers_complete(self) -> None:
            if not self._take_webhook():
                super().on_headers_complete()

        def _take_webhook(self) -> bool:
            parser = self.parser
            if parser.get_method() != b"POST" or self.expect_100_continue:
                return False
            existing = self.cycle
            if existing is not None and not existing.response_complete:
                return False  # behind another request: uvicorn queues it, keeping responses in order
            url = self.url
            if b"?" in url or b"%" in url:
                return False
            path = url.decode("latin-1")
            hit = match(path)
            if hit is None:
                return False
            length = None
            for name, value in self.headers:
                if name == b"content-length":
                    length = value
                elif name in _PROXY_HEADERS:
                    return False  # uvicorn's proxy-headers handling decides the client address
            if length is None:
                return False
            try:
                if int(length) > app.state.ctx.settings.max_body_bytes:
                    return False  # the ASGI route answers 413
            except (ValueError, AttributeError):
                return False
            if parser.should_upgrade() or (self.limit_concurrency is not None and (
                    len(self.connections) >= self.limit_concurrency or len(self.tasks) >= self.limit_concurrency)):
                return False
            scope = self.scope
            scope["method"] = "POST"
            http_version = parser.get_http_version()
            if http_version != "1.1":
                scope["http_version"] = http_version
            scope["path"] = path
            scope["raw_path"] = url
            scope["query_string"] = b""
            self.cycle = _WebhookCycle(hit[0], hit[1], scope,
                                       http_version != "1.0" and parser.should_keep_alive())
            return True

        def on_body(self, body: bytes) -> None:
            cycle = self.cycle
            if type(cycle) is _WebhookCycle:
                if not cycle.response_complete:
                    cycle.chunks.append(body)
                return
            super().on_body(body)

        def on_message_complete(self) -> None:
            cycle = self.cycle
            if type(cycle) is not _WebhookCycle:
                super().on_message_complete()
                return
            if cycle.response_complete:
                return
            body = cycle.chunks[0] if len(cycle.chunks) == 1 else b"".join(cycle.chunks)
            cycle.chunks = []
            taken = accept_now(cycle.handler, app.state, cycle.scope, cycle.path_tenant, body)
            if taken is None:  # it needs the database before it can be stored: a task waits for it
                task = self.loop.create_task(self._run_webhook(cycle, body))
                task.add_done_callback(self.tasks.discard)
                self.tasks.add(task)
                return
            req, outcome = taken
            if len(outcome) == 3:  # refused on the spot: answered once the parser is done with this data
                # (not from inside it: a request pipelined behind this one must be queued first, or
                # on_response_complete would arm the keep-alive timer while that request is read)
                self.loop.call_soon(self._answer, cycle, outcome, req.request_id)
                return
            accepted, future = outcome  # answered when its batch commits
            future.add_done_callback(
                lambda done: self._answer(cycle, webhooks.stored_answer(req, accepted, done), req.request_id))

        async def _run_webhook(self, cycle: _WebhookCycle, body: bytes) -> None:
            try:
                answer = await process(cycle.handler, app.state, cycle.scope, None, cycle.path_tenant, body)
            except BaseException:
                cycle.response_complete = True
                raise
            if answer is None:
                cycle.response_complete = True
                return
            self._answer(cycle, answer[:3], answer[3])

        def _answer(self, cycle: _WebhookCycle, answer, request_id: str) -> None:
            """Write the response in one piece, then let the connection go on (or close it)."""
            cycle.response_complete = True
            transport = self.transport
            if cycle.disconnected or transport.is_closing():
                return
            status, out, headers = answer
            head = [webhooks.STATUS_LINES[status]]
            for name, value in self.server_state.default_headers:
                head += (name, b": ", value, b"\r\n")
            head += (b"content-type: application/json\r\ncontent-length: ", b"%d" % len(out),
                     b"\r\nx-request-id: ", request_id.encode("latin-1"), b"\r\n")
            if headers:
                for name, value in headers.items():
                    head += (name.lower().encode("latin-1"), b": ", str(value).encode("latin-1"), b"\r\n")
            if not cycle.keep_alive:
                head.append(b"connection: close\r\n")
            head += (b"\r\n", out)
            write = getattr(transport, "write_now", transport.write)  # runner.service's coalescing transport
            write(b"".join(head))
            if not cycle.keep_alive:
                transport.close()
            self.on_response_complete()

    WebhookHttpProtocol.__name__ = WebhookHttpProtocol.__qualname__ = f"Webhook{base.__name__}"
    return WebhookHttpProtocol

