"""What every fleetctl command shares: the global options, the injected connector (``ctx.obj``), the
command-level failures the CLI prints verbatim, and the one runner that opens a client and runs a command."""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import click

from fleetd.errors import FleetError, RegistryError, RegistryUnavailable

if TYPE_CHECKING:
    from fleetctl.client import FleetClient
    from fleetctl.ssh.config import SSHSettings

__all__ = [
    "DEFAULT_ENDPOINT",
    "DEFAULT_KEY_PREFIX",
    "App",
    "CommandFailed",
    "Connector",
    "GlobalOptions",
    "UsageFailed",
    "app_of",
    "registry_problem",
    "run",
    "unreachable_message",
]

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_KEY_PREFIX = "/_coreos.com/fleet/"
DEFAULT_ATTEMPT_SECONDS = 2.0  # one --block-attempts attempt, as in the original

T = TypeVar("T")


def _local_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER
        return "root" if os.geteuid() == 0 else "core"


class CommandFailed(FleetError):
    """A command failure whose message is the reference's exact text, printed verbatim on stderr."""

    exit_code = 1


class UsageFailed(CommandFailed):
    """A command called wrongly (no units given, wrong number of arguments): exit status 2."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class GlobalOptions:
    """fleetctl's global flags after env (``FLEETCTL_*``) and command line were applied."""

    endpoints: tuple[str, ...] = (DEFAULT_ENDPOINT,)
    etcd_key_prefix: str = DEFAULT_KEY_PREFIX
    key_file: str = ""
    cert_file: str = ""
    ca_file: str = ""
    username: str = ""  # etcd auth (the etcd user's name and password)
    password: str = field(default="", repr=False)
    request_timeout: float = 3.0
    debug: bool = False
    # SSH settings: --tunnel carries every etcd request over one SSH connection; status/journal/ssh use all.
    tunnel: str = ""
    tunnel_reuse: bool = True  # keep the tunnel's SSH connection in a session for later commands
    tunnel_idle: float = 60.0  # seconds an unused tunnel session stays open
    known_hosts_file: str = "~/.fleetctl/known_hosts"
    strict_host_key_checking: bool = True
    ssh_timeout: float = 10.0
    ssh_username: str = field(default_factory=_local_user)
    identity_file: str = ""

    def ssh_settings(self, forward_agent: bool) -> SSHSettings:
        """How to reach and trust SSH hosts, from the SSH flags."""
        from fleetctl.ssh.config import SSHSettings  # noqa: PLC0415 (only commands that use SSH need it)

        return SSHSettings(
            user=self.ssh_username,
            timeout=self.ssh_timeout,
            known_hosts_file=self.known_hosts_file,
            strict=self.strict_host_key_checking,
            identity_file=self.identity_file or None,
            forward_agent=forward_agent,
        )

    @property
    def endpoint_text(self) -> str:
        return ",".join(self.endpoints)

    def warnings(self) -> list[str]:
        """Settings that cannot do what they say: TLS files with plain-http endpoints, a password without
        a user name."""
        out = []
        tls = [
            flag
            for flag, value in (
                ("--ca-file", self.ca_file),
                ("--cert-file", self.cert_file),
                ("--key-file", self.key_file),
            )
            if value
        ]
        plain = [endpoint for endpoint in self.endpoints if endpoint.startswith("http://")]
        if tls and plain:
            out.append(
                f"WARNING: {', '.join(tls)} not used for {', '.join(plain)}: TLS needs an https:// endpoint"
            )
        if self.password and not self.username:
            out.append("WARNING: an etcd password without --username/FLEETCTL_USERNAME is not used")
        return out


Connector = Callable[[GlobalOptions], AbstractAsyncContextManager["FleetClient"]]


def _default_connector(options: GlobalOptions) -> AbstractAsyncContextManager[FleetClient]:
    from fleetctl.connect import connect_etcd  # noqa: PLC0415 (keeps gRPC out of `fleetctl version`)

    return connect_etcd(options)


@dataclass(slots=True)
class App:
    """The object click carries as ``ctx.obj``: how to reach the cluster, and terminal facts.

    Tests pass their own ``connect`` (a client on MemoryKV plus a fake cluster), ``tty`` and a short
    ``attempt_seconds``; production uses the defaults.
    """

    connect: Connector = _default_connector
    options: GlobalOptions = field(default_factory=GlobalOptions)
    tty: bool | None = None  # None: ask whether stdout is a terminal
    attempt_seconds: float = DEFAULT_ATTEMPT_SECONDS

    @property
    def is_tty(self) -> bool:
        if self.tty is not None:
            return self.tty
        return sys.stdout.isatty()


def app_of(ctx: click.Context) -> App:
    app = ctx.find_object(App)
    if app is None:
        app = ctx.ensure_object(App)
    return app


def unreachable_message(options: GlobalOptions, exc: Exception) -> str:
    """One line naming the endpoints and what to check (without the ``Error:`` prefix)."""
    endpoints = options.endpoint_text
    problem = str(exc) if endpoints in str(exc) else f"cannot reach etcd at {endpoints}: {exc}"
    return (
        f"{problem}; check that etcd is running and listening there, and --endpoint/FLEETCTL_ENDPOINT"
        " and the TLS files"
    )


def registry_problem(options: GlobalOptions, exc: RegistryError) -> str:
    """The text of a registry failure for a command's own error line."""
    return unreachable_message(options, exc) if isinstance(exc, RegistryUnavailable) else str(exc)


def run(ctx: click.Context, action: Callable[[FleetClient], Awaitable[T]]) -> T:
    """Open a client with the global options, run ``action`` on it and close it; maps an unreachable etcd
    to one line naming the endpoints."""
    app = app_of(ctx)
    for warning in app.options.warnings():
        click.echo(warning, err=True)

    import asyncio  # noqa: PLC0415 (its import costs `fleetctl version` and `help` 15 ms)

    async def body() -> T:
        async with app.connect(app.options) as client:
            return await action(client)

    try:
        return asyncio.run(body())
    except RegistryUnavailable as exc:
        raise CommandFailed(f"Error: {unreachable_message(app.options, exc)}") from exc
