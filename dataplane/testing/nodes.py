"""Running a Node inside a test's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from dataplane.daemon.node import Node


@contextlib.asynccontextmanager
async def started(node: Node, timeout: float = 10.0) -> AsyncIterator[asyncio.Task[None]]:
    """Run `node` until the block ends; enter once it is ready (subnet.env written). A start
    that fails raises its error here; the node is stopped, and its errors raised, on exit."""
    task = asyncio.create_task(node.run(), name="node")
    ready = asyncio.create_task(node.ready.wait())
    try:
        done, _ = await asyncio.wait([task, ready], timeout=timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()                                # the start's error, if any
            raise RuntimeError("the node stopped before it was ready")
        if ready not in done:
            raise TimeoutError(f"node not ready in {timeout} s")
        yield task
    finally:
        ready.cancel()
        node.stop()
        if not task.done():
            await asyncio.wait_for(asyncio.shield(task), timeout)
        task.result()
