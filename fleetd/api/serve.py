"""Serve the API (and, with a TCP listener, the web dashboard) on sockets ``fleetd.api.listen`` bound."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web

from fleetd.api.app import make_app
from fleetd.api.dashboard import add_dashboard
from fleetd.api.dashboard_feed import DashboardFeed
from fleetd.api.dashboard_journal import local_journal
from fleetd.registry.registry import Registry

__all__ = ["serve"]


async def serve(
    registry: Registry, socks: list[socket.socket], *, token_limit: int, machine_id: str, dashboard: bool
) -> None:
    """Serve on ``socks`` until cancelled; the dashboard at ``/`` when ``dashboard``."""

    def root(app: web.Application) -> None:
        feed = DashboardFeed(registry)
        add_dashboard(app, feed, local_journal(feed, machine_id))

    app = make_app(registry, token_limit=token_limit, root=root if dashboard else None)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        for sock in socks:
            await web.SockSite(runner, sock).start()
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
