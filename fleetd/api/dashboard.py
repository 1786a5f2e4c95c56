"""The web dashboard's routes, on fleetd's API listener or on ``fleetctl dashboard``'s own local server.

- ``GET /``: the page; ``GET /dashboard/static/{app.js,app.css}``: its assets (package data, no CDN);
- ``GET /dashboard/events``: server-sent events from the one ``DashboardFeed``: a ``snapshot`` first (every
  machine and unit, the engine leader), then a ``diff`` per registry change (only what changed);
- ``GET /dashboard/units/{name}``: the unit page's data: the unit's row, its state on each machine, its unit
  file;
- ``GET /dashboard/units/{name}/journal?lines=N``: its recent journal lines from the ``JournalSource`` the
  server was given (fleetctl: over SSH as ``fleetctl journal``; fleetd: this machine's units only).

Everything is read-only: nothing here writes to the registry. Responses are gzip-compressed when the browser
accepts it; the event stream is compressed as one gzip stream flushed after every event (``EventEncoder``),
so each event reaches the browser as soon as it is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Middleware

from fleetd.api.dashboard_feed import DashboardFeed
from fleetd.errors import RegistryUnavailable
from fleetd.model import UnitName

__all__ = ["Journal", "JournalSource", "add_dashboard", "make_dashboard_app", "unavailable_journal"]

KEEP_ALIVE = 15.0  # seconds between comments on an idle event stream (finds closed connections)
JOURNAL_LINES = 50
MAX_JOURNAL_LINES = 1000

_ASSETS = {
    "index.html": "text/html",
    "app.js": "text/javascript",
    "app.css": "text/css",
}


@dataclass(frozen=True, slots=True)
class Journal:
    """A unit's recent journal lines, or why there are none (``message``)."""

    lines: tuple[str, ...] = ()
    message: str = ""


JournalSource = Callable[[str, int], Awaitable[Journal]]  # (unit name, lines) -> journal


async def unavailable_journal(name: str, lines: int) -> Journal:
    return Journal(message="journals are not available here: use `fleetctl dashboard` or `fleetctl journal`")


FEED_KEY = web.AppKey("dashboard_feed", DashboardFeed)
JOURNAL_KEY: web.AppKey[JournalSource] = web.AppKey("dashboard_journal")


def _asset(name: str) -> bytes:
    return resources.files("fleetd.api").joinpath("static", name).read_bytes()


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header accepts gzip (``gzip`` or ``*``, without ``q=0``)."""
    for item in accept_encoding.lower().split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding not in ("gzip", "*"):
            continue
        q = next((param[2:] for param in params if param.startswith("q=")), "1")
        try:
            return float(q) > 0
        except ValueError:
            return False
    return False


class EventEncoder:
    """The bytes of an event stream: identity, or one gzip stream sync-flushed after every event (each
    event is complete for the browser as soon as it is written). ``sent`` counts the bytes produced."""

    def __init__(self, gzip: bool) -> None:
        self.gzip = gzip
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS) if gzip else None
        self.sent = 0

    def encode(self, text: str) -> bytes:
        data = text.encode()
        if self._compressor is not None:
            data = self._compressor.compress(data) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
        self.sent += len(data)
        return data


def _static(name: str) -> web.Response:
    response = web.Response(body=_asset(name), content_type=_ASSETS[name], charset="utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.enable_compression()  # gzip or deflate when the browser accepts it
    return response


async def page(request: web.Request) -> web.Response:
    response = _static("index.html")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none';"
        " base-uri 'none'; frame-ancestors 'none'"
    )
    return response


async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name not in _ASSETS or name == "index.html":
        raise web.HTTPNotFound()
    return _static(name)


async def events(request: web.Request) -> web.StreamResponse:
    feed = request.app[FEED_KEY]
    encoder = EventEncoder(accepts_gzip(request.headers.get("Accept-Encoding", "")))
    headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no",
               "Vary": "Accept-Encoding"}
    if encoder.gzip:
        headers["Content-Encoding"] = "gzip"
    response = web.StreamResponse(headers=headers)
    await response.prepare(request)
    await response.write(encoder.encode("retry: 2000\n\n"))
    with contextlib.suppress(ConnectionResetError):
        while True:  # wait for the registry (the page says "connecting" meanwhile)
            try:
                async with feed.hold(KEEP_ALIVE):
                    await _stream(feed, response, encoder)
                    break
            except RegistryUnavailable:
                await response.write(encoder.encode(": waiting for the registry\n\n"))
    return response


async def _stream(feed: DashboardFeed, response: web.StreamResponse, encoder: EventEncoder) -> None:
    subscriber = feed.subscribe()
    try:
        while True:
            try:
                frame = await asyncio.wait_for(subscriber.next(), KEEP_ALIVE)
            except TimeoutError:
                frame = ": keep-alive\n\n"
            if frame is None:
                return
            await response.write(encoder.encode(frame))
    finally:
        feed.unsubscribe(subscriber)


async def unit_page(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    feed = request.app[FEED_KEY]
    async with feed.hold():
        unit = feed.view.unit_json(UnitName(name))
        if unit is None:
            return web.json_response({"error": {"code": 404, "message": f"unit {name} does not exist"}},
                                     status=404)
        unit_hash = feed.view.unit_hash(name)
        states = feed.view.unit_states_json(name)
    body = await feed.registry.get_body(unit_hash) if unit_hash else None
    response = web.json_response({"unit": unit, "states": states, "body": body})
    response.enable_compression()
    return response


async def journal(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    try:
        lines = int(request.query.get("lines", JOURNAL_LINES))
    except ValueError:
        lines = JOURNAL_LINES
    lines = max(1, min(lines, MAX_JOURNAL_LINES))
    found = await request.app[JOURNAL_KEY](name, lines)
    return web.json_response({"lines": list(found.lines), "message": found.message})


def add_dashboard(app: web.Application, feed: DashboardFeed, journal_source: JournalSource) -> None:
    """Register the dashboard's routes (``/`` included) on ``app``; its streams end when ``app`` shuts
    down."""
    app[FEED_KEY] = feed
    app[JOURNAL_KEY] = journal_source
    app.router.add_get("/", page)
    app.router.add_get("/dashboard/static/{name}", asset)
    app.router.add_get("/dashboard/events", events)
    app.router.add_get("/dashboard/units/{name}", unit_page)
    app.router.add_get("/dashboard/units/{name}/journal", journal)

    async def shutdown(app: web.Application) -> None:
        await feed.close()

    app.on_shutdown.append(shutdown)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _host_check(allowed: Collection[str]) -> Middleware:
    """Refuse requests whose Host is not this server's own address (a page elsewhere reaching the local
    dashboard through a DNS name it rebinds to 127.0.0.1)."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host.lower() not in allowed:
            return web.Response(status=421, text="this dashboard answers only to its own address\n")
        try:
            return await handler(request)
        except RegistryUnavailable as exc:
            return web.json_response({"error": {"code": 503, "message": str(exc)}}, status=503)

    return check


def make_dashboard_app(
    feed: DashboardFeed, journal_source: JournalSource, *, hosts: Collection[str]
) -> web.Application:
    """The dashboard alone (no v1 API), answering only to ``hosts`` (``host:port`` as browsers send it)."""
    app = web.Application(middlewares=[_host_check({host.lower() for host in hosts})])
    add_dashboard(app, feed, journal_source)
    return app
