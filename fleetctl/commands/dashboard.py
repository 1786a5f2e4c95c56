"""``fleetctl dashboard``: the web dashboard served on this machine's loopback, on fleetctl's etcd connection.

The server reaches etcd as every fleetctl command does (directly, or through ``--tunnel``), runs one
registry watch for every browser it serves, and opens nothing on the cluster. A unit page's journal is read
as ``fleetctl journal`` reads it: journalctl on the unit's machine over SSH (through the tunnel when set).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import tempfile
import webbrowser
from collections.abc import Mapping

import click
from aiohttp import web

from fleetctl.client import FleetClient, UnitLocation
from fleetctl.context import CommandFailed, GlobalOptions, UsageFailed, app_of, run
from fleetctl.global_flags import FleetCommand
from fleetctl.output import say
from fleetd.api.dashboard import Journal, JournalSource, make_dashboard_app
from fleetd.api.dashboard_feed import DashboardFeed
from fleetd.errors import FleetError

__all__ = ["COMMANDS", "allowed_hosts", "parse_address", "ssh_journal"]

DEFAULT_ADDRESS = "127.0.0.1:0"


def parse_address(text: str) -> tuple[str, int]:
    """A loopback ``HOST:PORT`` (port 0: any free port); UsageFailed naming the problem otherwise."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageFailed(f"invalid --address {text!r}: expected 127.0.0.1:PORT (PORT 0: any free port)")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise UsageFailed(
            f"invalid --address {text!r}: the dashboard has no authentication, so it listens on a loopback"
            " address only (127.0.0.1:PORT); reach it from elsewhere through an SSH tunnel"
        )
    return host, int(port)


def allowed_hosts(host: str, port: int) -> set[str]:
    """The Host headers a browser sends for this server (anything else is refused)."""
    shown = f"[{host}]" if ":" in host else host
    hosts = {f"{shown}:{port}"}
    if host in ("127.0.0.1", "localhost", "::1"):
        hosts |= {f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"}
    return hosts


def ssh_journal(client: FleetClient, options: GlobalOptions, ssh_port: int) -> JournalSource:
    """Journals read as ``fleetctl journal UNIT --lines N`` reads them (SSH to the unit's machine)."""

    async def source(name: str, lines: int) -> Journal:
        locations = await client.unit_locations([name])
        return await asyncio.to_thread(_read_journal, name, lines, locations, options, ssh_port)

    return source


def _read_journal(
    name: str, lines: int, locations: Mapping[str, UnitLocation | None], options: GlobalOptions, port: int
) -> Journal:
    from fleetctl.ssh import remote  # noqa: PLC0415 (paramiko only once a journal is asked for)

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        runner = remote.SSHRunner(
            options.ssh_settings(forward_agent=False), options.tunnel, local_id=remote.local_machine_id(),
            stdout=out, stderr=err, ask=lambda question: None, warn=lambda text: None,
        )
        try:
            code = remote.journal(
                name, locations.get, runner, port, lines=lines, output="short", follow=False, sudo=False
            )
        except FleetError as exc:  # the reference's refusals, SSH and host-key failures
            return Journal(message=str(exc))
        finally:
            runner.close()
        out.seek(0)
        err.seek(0)
        text = out.read().decode(errors="replace").splitlines()
        if code:
            problem = err.read().decode(errors="replace").strip()
            return Journal(tuple(text), f"journalctl exited with status {code}: {problem}")
        return Journal(tuple(text))


@click.command("dashboard", cls=FleetCommand)
@click.option(
    "--address", default=DEFAULT_ADDRESS, show_default=True,
    help="Loopback HOST:PORT to serve on (PORT 0: any free port).",
)
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@click.option(
    "--ssh-port", type=click.IntRange(1, 65535), default=22, show_default=True,
    help="SSH port of the machines (unit journals).",
)
@click.pass_context
def dashboard(ctx: click.Context, address: str, no_browser: bool, ssh_port: int) -> None:
    """Serve a live web dashboard of the cluster on this machine until Ctrl-C.

    Machines, units and their states appear and change live (no reload); a unit's page shows its unit
    file, its state on each machine and its recent journal (read over SSH, as `fleetctl journal` does).
    The server listens on 127.0.0.1 only and reaches etcd as every fleetctl command does (--tunnel too):
    nothing is opened on the cluster.

    \b
    Examples:
      fleetctl dashboard
      fleetctl dashboard --address 127.0.0.1:8480 --no-browser
      fleetctl dashboard --tunnel 10.0.0.1
    """
    host, port = parse_address(address)
    options = app_of(ctx).options

    listener = _listen(host, port, address)
    bound = listener.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"

    async def action(client: FleetClient) -> None:
        feed = DashboardFeed(client.registry)
        journal = ssh_journal(client, options, ssh_port)
        app = make_dashboard_app(feed, journal, hosts=allowed_hosts(host, bound))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, listener).start()
            say(f"Dashboard at {url} (Ctrl-C to stop)")
            if not no_browser:
                await asyncio.to_thread(webbrowser.open, url)
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()

    try:
        run(ctx, action)
    except KeyboardInterrupt:
        say("Dashboard stopped")
    finally:
        listener.close()


def _listen(host: str, port: int, address: str) -> socket.socket:
    """A listening socket on ``host:port`` (bound before etcd is reached, so the URL is known)."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        listener = socket.socket(info[0], socket.SOCK_STREAM)
    except OSError as exc:
        raise CommandFailed(f"Error: cannot listen on {address}: {exc.strerror or exc}") from exc
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(info[4])
        listener.listen(128)
    except OSError as exc:
        listener.close()
        raise CommandFailed(
            f"Error: cannot listen on {address}: {exc.strerror or exc}; choose another port with"
            " --address 127.0.0.1:PORT"
        ) from exc
    listener.setblocking(False)
    return listener

COMMANDS = (dashboard,)
