"""Where the provider modules plug in: worker handlers for retry-queue operation types.

A handler is `async def handler(ctx, row) -> None`; it raises `RetryLater` (with an optional
`retry_in` seconds, e.g. a provider's Retry-After) or any exception to have the operation retried
with backoff, and returns normally when the operation is done.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Handler = Callable[[Any, dict], Awaitable[None]]
OPERATIONS: dict[str, Handler] = {}


class RetryLater(Exception):
    def __init__(self, message: str, retry_in: float | None = None):
        super().__init__(message)
        self.retry_in = retry_in


def operation(operation_type: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        OPERATIONS[operation_type] = fn
        return fn

    return register
