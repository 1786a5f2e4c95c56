"""fleetctl's root command: global flags (also from ``FLEETCTL_*``), command prefixes, and the one place where
fleet errors become a line on stderr and an exit status."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import click

from fleetctl.commands import cat, units, verify, version
from fleetctl.commands import list as listing
from fleetctl.commands import remote as remote_commands
from fleetctl.context import (
    DEFAULT_ENDPOINT,
    DEFAULT_KEY_PREFIX,
    App,
    CommandFailed,
    GlobalOptions,
    app_of,
)
from fleetctl.output import say
from fleetctl.params import (
    REQUEST_TIMEOUT_BOUNDS,
    SSH_TIMEOUT_BOUNDS,
    Endpoints,
    KeyPrefix,
    ReadableFile,
    Seconds,
)
from fleetd.errors import FleetError
from fleetd.model import VERSION

__all__ = ["cli", "main"]

F = TypeVar("F", bound=Callable[..., Any])

ROOT_HELP = "fleetctl is a command-line interface to fleet, the cluster-wide CoreOS init system."

# Boolean global flags that Go-style users write as --flag=true / --flag=false.
_BOOL_FLAGS = ("debug", "strict-host-key-checking", "experimental-api")
_FALSE = frozenset({"0", "f", "false", "no", "off", "n"})
FILE = ReadableFile()


def _go_bools(args: Sequence[str]) -> list[str]:
    """Rewrite ``--flag=false`` into ``--no-flag`` (and ``--flag=true`` into ``--flag``) for boolean flags."""
    out = []
    for arg in args:
        name, eq, value = arg.partition("=")
        if eq and name.startswith("--") and name[2:] in _BOOL_FLAGS:
            out.append(f"--no-{name[2:]}" if value.lower() in _FALSE else name)
        else:
            out.append(arg)
    return out


class FleetGroup(click.Group):
    """Commands found by unambiguous prefix; FleetError printed as one line with exit status 1 (or 2)."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        matches = [name for name in self.list_commands(ctx) if name.startswith(cmd_name)]
        if len(matches) == 1:
            return super().get_command(ctx, matches[0])
        if len(matches) > 1:
            ctx.fail(f"ambiguous command {cmd_name!r}: could be {', '.join(sorted(matches))}")
        return None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        return (command.name if command is not None else name), command, rest

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, _go_bools(args))

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FleetError as exc:
            app = app_of(ctx)
            if app.options.debug:
                click.echo(traceback.format_exc().rstrip("\n"), err=True)
            if isinstance(exc, CommandFailed):
                say(str(exc), err=True)
                ctx.exit(exc.exit_code)
            say(f"Error: {exc}", err=True)
            ctx.exit(1)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"fleetctl version {VERSION}")
        ctx.exit(0)


def _global_options(f: F) -> F:
    """The global flags of the root command, each also read from ``FLEETCTL_<FLAG>`` when non-empty."""
    decorators = [
        click.option(
            "--endpoint",
            envvar="FLEETCTL_ENDPOINT",
            type=Endpoints(),
            default=DEFAULT_ENDPOINT,
            show_default=True,
            help="etcd endpoint(s), comma-separated.",
        ),
        click.option(
            "--etcd-key-prefix",
            envvar="FLEETCTL_ETCD_KEY_PREFIX",
            type=KeyPrefix(),
            default=DEFAULT_KEY_PREFIX,
            show_default=True,
            help="Keyspace of fleet data in etcd (development use only!).",
        ),
        click.option(
            "--key-file", envvar="FLEETCTL_KEY_FILE", type=FILE, default="", help="TLS client key file."
        ),
        click.option(
            "--cert-file",
            envvar="FLEETCTL_CERT_FILE",
            type=FILE,
            default="",
            help="TLS client certificate file.",
        ),
        click.option(
            "--ca-file", envvar="FLEETCTL_CA_FILE", type=FILE, default="", help="TLS CA file (PEM bundle)."
        ),
        click.option("--etcd-keyfile", envvar="FLEETCTL_ETCD_KEYFILE", type=FILE, default="", hidden=True),
        click.option("--etcd-certfile", envvar="FLEETCTL_ETCD_CERTFILE", type=FILE, default="", hidden=True),
        click.option("--etcd-cafile", envvar="FLEETCTL_ETCD_CAFILE", type=FILE, default="", hidden=True),
        click.option(
            "--request-timeout",
            envvar="FLEETCTL_REQUEST_TIMEOUT",
            type=Seconds(REQUEST_TIMEOUT_BOUNDS),
            default=3.0,
            show_default=True,
            help="Seconds allowed for each etcd request (100ms to 5m).",
        ),
        click.option(
            "--debug/--no-debug",
            envvar="FLEETCTL_DEBUG",
            default=False,
            help="Print debug logs and error tracebacks.",
        ),
        click.option(
            "--tunnel",
            envvar="FLEETCTL_TUNNEL",
            default="",
            help="SSH host[:port] to tunnel the etcd connection through.",
        ),
        click.option(
            "--known-hosts-file",
            envvar="FLEETCTL_KNOWN_HOSTS_FILE",
            default="~/.fleetctl/known_hosts",
            show_default=True,
            help="SSH known hosts file.",
        ),
        click.option(
            "--strict-host-key-checking/--no-strict-host-key-checking",
            envvar="FLEETCTL_STRICT_HOST_KEY_CHECKING",
            default=True,
            show_default=True,
            help="Verify SSH host keys.",
        ),
        click.option(
            "--ssh-timeout",
            envvar="FLEETCTL_SSH_TIMEOUT",
            type=Seconds(SSH_TIMEOUT_BOUNDS),
            default=10.0,
            show_default=True,
            help="Seconds allowed for each SSH connection to start (100ms to 5m).",
        ),
        click.option(
            "--identity-file",
            "-i",
            envvar="FLEETCTL_IDENTITY_FILE",
            default="",
            help="SSH private key to try after the ssh-agent's keys.",
        ),
        click.option(
            "--ssh-username",
            envvar="FLEETCTL_SSH_USERNAME",
            default=None,
            help="SSH user (default: the local user).",
        ),
        click.option("--driver", envvar="FLEETCTL_DRIVER", default="etcd", hidden=True),
        click.option(
            "--experimental-api/--no-experimental-api",
            envvar="FLEETCTL_EXPERIMENTAL_API",
            default=True,
            hidden=True,
        ),
        click.option(
            "--version",
            "-v",
            is_flag=True,
            expose_value=False,
            is_eager=True,
            callback=_print_version,
            help="Print the version and exit.",
        ),
    ]
    for decorator in reversed(decorators):
        f = decorator(f)
    return f


@click.group(
    cls=FleetGroup,
    invoke_without_command=True,
    help=ROOT_HELP,
    epilog=f"VERSION: {VERSION}",
    context_settings={"help_option_names": ["-h", "--help"]},
)
@_global_options
@click.pass_context
def cli(ctx: click.Context, /, **flags: Any) -> None:
    app = ctx.ensure_object(App)
    endpoints: tuple[str, ...] = flags["endpoint"]
    if flags["driver"] not in ("etcd", "API"):
        raise CommandFailed(f'Unable to initialize client: unrecognized driver "{flags["driver"]}"')
    defaults = GlobalOptions()
    app.options = replace(
        app.options,
        endpoints=endpoints or (DEFAULT_ENDPOINT,),
        etcd_key_prefix=flags["etcd_key_prefix"],
        key_file=flags["key_file"] or flags["etcd_keyfile"],
        cert_file=flags["cert_file"] or flags["etcd_certfile"],
        ca_file=flags["ca_file"] or flags["etcd_cafile"],
        request_timeout=flags["request_timeout"],
        debug=flags["debug"],
        tunnel=_with_port(flags["tunnel"]),
        known_hosts_file=flags["known_hosts_file"],
        strict_host_key_checking=flags["strict_host_key_checking"],
        ssh_timeout=flags["ssh_timeout"],
        ssh_username=flags["ssh_username"] or defaults.ssh_username,
        identity_file=flags["identity_file"],
    )
    if app.options.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())


def _with_port(tunnel: str) -> str:
    if not tunnel or (tunnel.startswith("[") and tunnel.endswith("]")) or ":" not in tunnel:
        return f"{tunnel}:22" if tunnel else ""
    return tunnel


@cli.command("help", context_settings={"ignore_unknown_options": True})
@click.argument("command", nargs=-1)
@click.pass_context
def help_command(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Help about any command."""
    root = ctx.parent
    assert root is not None and isinstance(root.command, FleetGroup)
    if not command:
        click.echo(root.get_help())
        return
    sub = root.command.get_command(root, command[0])
    if sub is None:
        raise click.UsageError(f"unknown help topic {command[0]!r}", ctx)
    with click.Context(sub, info_name=sub.name, parent=root) as sub_ctx:
        click.echo(sub.get_help(sub_ctx))


for _module in (listing, units, cat, verify, version, remote_commands):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """The ``fleetctl`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="fleetctl", obj=App())
