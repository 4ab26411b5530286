"""Running an in-process node on 127.0.0.1 for tests (not a test module).

:class:`LoopbackNode` owns the start/stop/URL logic that every harness shares; a harness
says how to open its node (:meth:`node_arguments`) and what to do once its port is known
(:meth:`on_started`). A stopped node restarts on the same port and database.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from caseway.node.app import Node, NodeServer, open_node
from caseway.node.config import Listen

LOOPBACK = "127.0.0.1"


class LoopbackNode:
    port: int
    background_delivery: bool
    node: Node | None
    _server: NodeServer | None
    _stack: AsyncExitStack | None

    def node_arguments(self) -> dict[str, Any]:
        """Keyword arguments for :func:`caseway.node.app.open_node`."""
        raise NotImplementedError

    def on_started(self) -> None:
        """Called once the federation port is known (e.g. to publish the endpoint)."""

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def envelopes_url(self) -> str:
        return self.url + "/caseway/v1/envelopes"

    @property
    def local_url(self) -> str:
        assert self._server is not None and self._server.local_api_address is not None
        host, port = self._server.local_api_address
        return f"http://{host}:{port}"

    @property
    def running(self) -> Node:
        assert self.node is not None, "node is not running"
        return self.node

    async def start(self) -> Node:
        stack = AsyncExitStack()
        node = await stack.enter_async_context(open_node(**self.node_arguments()))
        server = NodeServer(node, background_delivery=self.background_delivery)
        try:
            await server.start(federation=Listen(LOOPBACK, self.port),
                               local_api=Listen(LOOPBACK, 0))
        except BaseException:
            await stack.aclose()
            raise
        assert server.federation_address is not None
        self.port = server.federation_address[1]
        self.node, self._server, self._stack = node, server, stack
        self.on_started()
        return node

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
        if self._stack is not None:
            await self._stack.aclose()
        self.node, self._server, self._stack = None, None, None
