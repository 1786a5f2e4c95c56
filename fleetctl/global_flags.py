"""fleetctl's global flags, defined once and accepted before *and* after the command name.

fleet's fleetctl declared them as cobra persistent flags, so ``fleetctl list-machines --tunnel H`` worked as
well as ``fleetctl --tunnel H list-machines``, and scripts rely on both. Here the root group takes each flag
with its default and its ``FLEETCTL_*`` variable; every command (``FleetCommand``) takes a copy without
default or variable, and a value given there on the command line overrides the root's. The text of values
is checked by the same click types either way (``fleetctl.params``).

Go-style booleans (``--debug=false``) are rewritten to click's ``--no-debug`` among a command's options only:
never after ``--``, nor among the remote command words of ``ssh``.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import click
from click.core import ParameterSource

from fleetctl.context import DEFAULT_ENDPOINT, DEFAULT_KEY_PREFIX, CommandFailed, GlobalOptions, app_of
from fleetctl.params import (
    REQUEST_TIMEOUT_BOUNDS,
    SSH_TIMEOUT_BOUNDS,
    TUNNEL_IDLE_BOUNDS,
    Endpoints,
    KeyPrefix,
    ReadableFile,
    Seconds,
)
from fleetd.model import VERSION

__all__ = [
    "GLOBAL_NAMES",
    "FleetCommand",
    "apply_flags",
    "go_bools",
    "root_params",
]

_FALSE = frozenset({"0", "f", "false", "no", "off", "n"})
_FILE = ReadableFile()
DRIVERS = ("etcd", "API")


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        click.echo(f"fleetctl version {VERSION}")
        ctx.exit(0)


@dataclass(frozen=True, slots=True)
class _Flag:
    """One global flag: its spellings, FLEETCTL_* variable, default, type and help."""

    decls: tuple[str, ...]
    help: str = ""
    envvar: str | None = None
    default: Any = ""
    type: click.ParamType[Any] | None = None
    is_flag: bool = False
    show_default: bool = False
    hidden: bool = False

    @property
    def name(self) -> str:
        return self.decls[0].split("/")[0].lstrip("-").replace("-", "_")

    def _help(self) -> str:
        """The help text with the variable and default named (not with click's show_envvar: that would
        name the variable in the error about a value given on the command line too)."""
        notes = [f"env var: {self.envvar}"] if self.envvar else []
        if self.show_default:
            notes.append(f"default: {_shown(self.default)}")
        return self.help + (f" [{'; '.join(notes)}]" if notes else "")

    def root_option(self) -> click.Option:
        return click.Option(
            list(self.decls),
            help=self._help(),
            envvar=self.envvar,
            default=self.default,
            type=self.type,
            is_flag=self.is_flag or None,
            hidden=self.hidden,
        )

    def command_option(self) -> click.Option:
        """The copy a command takes: no default and no variable (the root already read those)."""
        return click.Option(
            list(self.decls),
            help=self._help(),
            default=None,
            type=self.type,
            is_flag=self.is_flag or None,
            hidden=self.hidden,
        )


def _shown(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


_FLAGS = (
    _Flag(
        ("--endpoint",),
        "etcd endpoint(s), comma-separated.",
        "FLEETCTL_ENDPOINT",
        DEFAULT_ENDPOINT,
        Endpoints(),
        show_default=True,
    ),
    _Flag(
        ("--etcd-key-prefix",),
        "Keyspace of fleet data in etcd (development use only!).",
        "FLEETCTL_ETCD_KEY_PREFIX",
        DEFAULT_KEY_PREFIX,
        KeyPrefix(),
        show_default=True,
    ),
    _Flag(("--key-file",), "TLS client key file.", "FLEETCTL_KEY_FILE", "", _FILE),
    _Flag(("--cert-file",), "TLS client certificate file.", "FLEETCTL_CERT_FILE", "", _FILE),
    _Flag(("--ca-file",), "TLS CA file (PEM bundle).", "FLEETCTL_CA_FILE", "", _FILE),
    _Flag(("--username",), "etcd user name (etcd authentication).", "FLEETCTL_USERNAME"),
    _Flag(
        ("--password",),
        "etcd user's password; prefer the variable (a flag shows in the process list).",
        "FLEETCTL_PASSWORD",
    ),
    _Flag(("--etcd-keyfile",), envvar="FLEETCTL_ETCD_KEYFILE", type=_FILE, hidden=True),
    _Flag(("--etcd-certfile",), envvar="FLEETCTL_ETCD_CERTFILE", type=_FILE, hidden=True),
    _Flag(("--etcd-cafile",), envvar="FLEETCTL_ETCD_CAFILE", type=_FILE, hidden=True),
    _Flag(
        ("--request-timeout",),
        "Seconds allowed for each etcd request (100ms to 5m).",
        "FLEETCTL_REQUEST_TIMEOUT",
        3.0,
        Seconds(REQUEST_TIMEOUT_BOUNDS),
        show_default=True,
    ),
    _Flag(
        ("--debug/--no-debug",),
        "Print debug logs and error tracebacks.",
        "FLEETCTL_DEBUG",
        False,
        is_flag=True,
    ),
    _Flag(("--tunnel",), "SSH host[:port] to tunnel the etcd connection through.", "FLEETCTL_TUNNEL"),
    _Flag(
        ("--tunnel-reuse/--no-tunnel-reuse",),
        "Keep the tunnel's SSH connection open in a background session (a private socket under"
        " $XDG_RUNTIME_DIR/fleetctl or ~/.fleetctl/sessions) for the next commands.",
        "FLEETCTL_TUNNEL_REUSE",
        True,
        is_flag=True,
        show_default=True,
    ),
    _Flag(
        ("--tunnel-idle",),
        "Seconds an unused tunnel session stays open (1s to 1h).",
        "FLEETCTL_TUNNEL_IDLE",
        60.0,
        Seconds(TUNNEL_IDLE_BOUNDS),
        show_default=True,
    ),
    _Flag(
        ("--known-hosts-file",),
        "SSH known hosts file.",
        "FLEETCTL_KNOWN_HOSTS_FILE",
        "~/.fleetctl/known_hosts",
        show_default=True,
    ),
    _Flag(
        ("--strict-host-key-checking/--no-strict-host-key-checking",),
        "Verify SSH host keys.",
        "FLEETCTL_STRICT_HOST_KEY_CHECKING",
        True,
        is_flag=True,
        show_default=True,
    ),
    _Flag(
        ("--ssh-timeout",),
        "Seconds allowed for each SSH connection to start (100ms to 5m).",
        "FLEETCTL_SSH_TIMEOUT",
        10.0,
        Seconds(SSH_TIMEOUT_BOUNDS),
        show_default=True,
    ),
    _Flag(
        ("--identity-file", "-i"),
        "SSH private key to try after the ssh-agent's keys.",
        "FLEETCTL_IDENTITY_FILE",
    ),
    _Flag(
        ("--ssh-username",),
        "SSH user (default: the local user).",
        "FLEETCTL_SSH_USERNAME",
        None,
    ),
    _Flag(("--driver",), envvar="FLEETCTL_DRIVER", default="etcd", hidden=True),
    _Flag(
        ("--experimental-api/--no-experimental-api",),
        envvar="FLEETCTL_EXPERIMENTAL_API",
        default=True,
        is_flag=True,
        hidden=True,
    ),
)

GLOBAL_NAMES = frozenset({flag.name for flag in _FLAGS} | {"version"})


def _version_option() -> click.Option:
    return click.Option(
        ["--version", "-v"],
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=_print_version,
        help="Print the version and exit.",
    )


def root_params() -> list[click.Parameter]:
    """The root group's global flags, with their defaults and FLEETCTL_* variables."""
    return [*(flag.root_option() for flag in _FLAGS), _version_option()]


def _with_port(tunnel: str) -> str:
    if not tunnel or (tunnel.startswith("[") and tunnel.endswith("]")) or ":" not in tunnel:
        return f"{tunnel}:22" if tunnel else ""
    return tunnel


def apply_flags(flags: Mapping[str, Any], base: GlobalOptions) -> GlobalOptions:
    """``base`` with the given flags (by parameter name) applied; a flag absent from ``flags`` keeps its
    value. Raises CommandFailed for an unknown ``--driver``."""
    driver = flags.get("driver")
    if driver is not None and driver not in DRIVERS:
        raise CommandFailed(f'Unable to initialize client: unrecognized driver "{driver}"')
    changes: dict[str, Any] = {}
    if "endpoint" in flags:
        changes["endpoints"] = flags["endpoint"] or (DEFAULT_ENDPOINT,)
    for field_name, names in (
        ("key_file", ("key_file", "etcd_keyfile")),
        ("cert_file", ("cert_file", "etcd_certfile")),
        ("ca_file", ("ca_file", "etcd_cafile")),
    ):
        given = [flags[name] for name in names if flags.get(name)]
        if given:
            changes[field_name] = given[0]
    for name in (
        "etcd_key_prefix",
        "request_timeout",
        "debug",
        "known_hosts_file",
        "strict_host_key_checking",
        "ssh_timeout",
        "tunnel_reuse",
        "tunnel_idle",
        "identity_file",
        "username",
        "password",
    ):
        if name in flags and flags[name] is not None:
            changes[name] = flags[name]
    if "tunnel" in flags and flags["tunnel"] is not None:
        changes["tunnel"] = _with_port(flags["tunnel"])
    if flags.get("ssh_username"):
        changes["ssh_username"] = flags["ssh_username"]
    options = replace(base, **changes)
    if options.debug and not base.debug:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    return options


def _takes_value(params: Iterable[click.Parameter]) -> frozenset[str]:
    return frozenset(
        spelling
        for param in params
        if isinstance(param, click.Option) and not param.is_flag and not param.count
        for spelling in param.opts
    )


def go_bools(
    args: Sequence[str], params: Iterable[click.Parameter] = (), *, interspersed: bool = True
) -> list[str]:
    """Rewrite ``--flag=false`` into ``--no-flag`` (and ``--flag=true`` into ``--flag``) for the boolean
    global flags, among the options only: up to ``--``, and (``interspersed`` false) up to the first
    positional argument."""
    booleans = {flag.name.replace("_", "-") for flag in _FLAGS if flag.is_flag}
    valued = _takes_value(params)
    out: list[str] = []
    words = iter(args)
    for arg in words:
        if arg == "--" or (not interspersed and not arg.startswith("-")):
            out.append(arg)
            break
        name, eq, value = arg.partition("=")
        if eq and name.startswith("--") and name[2:] in booleans:
            out.append(f"--no-{name[2:]}" if value.lower() in _FALSE else name)
            continue
        out.append(arg)
        if arg in valued:
            following = next(words, None)
            if following is not None:
                out.append(following)
    out.extend(words)
    return out


class FleetCommand(click.Command):
    """A fleetctl command: takes the global flags as well (``fleetctl list-units --endpoint URL``), lists
    them in its help under "Global options", and applies the ones given after its name over the root's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        own = {
            name for param in self.params for name in (param.opts if isinstance(param, click.Option) else ())
        }
        for flag in _FLAGS:
            option = flag.command_option()
            if not own.intersection(option.opts):
                self.params.append(option)
        self.params.append(_version_option())

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        interspersed = ctx.allow_interspersed_args
        return super().parse_args(ctx, go_bools(args, self.params, interspersed=interspersed))

    def invoke(self, ctx: click.Context) -> Any:
        given = {}
        for name in GLOBAL_NAMES:
            if name not in ctx.params:
                continue
            value = ctx.params.pop(name)
            if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                given[name] = value
        if given:
            app = app_of(ctx)
            app.options = apply_flags(given, app.options)
        return super().invoke(ctx)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        own: list[tuple[str, str]] = []
        shared: list[tuple[str, str]] = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx) if isinstance(param, click.Option) else None
            if record is not None:
                (shared if param.name in GLOBAL_NAMES else own).append(record)
        if own:
            with formatter.section("Options"):
                formatter.write_dl(own)
        if shared:
            with formatter.section("Global options (also accepted before the command)"):
                formatter.write_dl(shared)
