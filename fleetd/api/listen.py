"""Serve the API: on a unix socket (mode 0660; fleetd runs as root) and, when configured, one TCP address.

With a TCP address the listener also serves the web dashboard at ``/`` (its journals: this machine's units).
"""

from __future__ import annotations

import asyncio
import logging
import os

from aiohttp import web

from fleetd.api.app import make_app
from fleetd.api.dashboard import add_dashboard
from fleetd.api.dashboard_feed import DashboardFeed
from fleetd.api.dashboard_journal import local_journal
from fleetd.registry.registry import Registry
from fleetd.values import parse_host_port

__all__ = ["ApiServer"]

logger = logging.getLogger(__name__)

SOCKET_MODE = 0o660


class ApiServer:
    """Runs the API until cancelled, on ``socket_path`` and ``listen`` (HOST:PORT); '' for neither."""

    def __init__(
        self, registry: Registry, *, socket_path: str, listen: str, token_limit: int, machine_id: str = ""
    ) -> None:
        def dashboard(app: web.Application) -> None:
            feed = DashboardFeed(registry)
            add_dashboard(app, feed, local_journal(feed, machine_id))

        self._app = make_app(registry, token_limit=token_limit, root=dashboard if listen else None)
        self._socket_path = socket_path
        self._listen = listen

    async def run(self) -> None:
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            if self._socket_path:
                await web.UnixSite(runner, self._socket_path).start()
                os.chmod(self._socket_path, SOCKET_MODE)
                logger.info("API listening on %s", self._socket_path)
            if self._listen:
                host, port = parse_host_port(self._listen)
                await web.TCPSite(runner, host, port).start()
                logger.info("API listening on %s", self._listen)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
