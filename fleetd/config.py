"""fleetd's configuration: a frozen Config from fleet.conf, ``FLEET_*`` environment variables and flags.

Precedence is flags > environment > file > defaults (spec §7.1-7.2). Everything here except ``load_config``
(which reads the file) is pure: text and mappings in, a ``Config`` or a ``ConfigError`` out. An unknown key
is an error naming the closest known key (a typo such as ``etcd_server`` would otherwise start fleetd against
localhost). Remarks that do not stop startup (deprecated keys, keys accepted but ignored) come back as
``Config.notices`` for the caller to log. ``help_text`` lists every key with its default for ``--help``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from fleetd.errors import ConfigError
from fleetd.model import MAX_UNITS_LIMIT
from fleetd.values import (
    Bounds,
    format_seconds,
    parse_duration,
    parse_endpoint,
    parse_host_port,
    parse_key_prefix,
    parse_seconds,
    readable_file,
    require_text,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "Config",
    "Invocation",
    "build_config",
    "help_text",
    "load_config",
    "parse_args",
    "parse_duration",
    "parse_env",
    "parse_file_text",
    "parse_metadata",
    "unit_cap",
]

DEFAULT_CONFIG_PATH = "/etc/fleet/fleet.conf"
DEFAULT_ETCD_SERVERS = ("http://127.0.0.1:2379", "http://127.0.0.1:4001")
ENV_PREFIX = "FLEET_"


def _no_metadata() -> Mapping[str, str]:
    return {}


@dataclass(frozen=True, slots=True)
class Config:
    """Every fleetd option, parsed and validated. Durations are float seconds."""

    verbosity: int = 0
    etcd_servers: tuple[str, ...] = DEFAULT_ETCD_SERVERS
    etcd_username: str = ""
    etcd_password: str = ""
    etcd_keyfile: str = ""
    etcd_certfile: str = ""
    etcd_cafile: str = ""
    etcd_key_prefix: str = "/_coreos.com/fleet/"
    etcd_request_timeout: float = 1.0
    engine_reconcile_interval: float = 2.0
    public_ip: str = ""
    metadata: Mapping[str, str] = field(default_factory=_no_metadata)
    agent_ttl: float = 30.0
    fence_units: str = "conflicts"  # one of FENCE_CHOICES
    units_directory: str = "/run/fleet/units/"
    systemd_user: bool = False
    token_limit: int = 100
    enable_grpc: bool = False
    disable_engine: bool = False
    disable_watches: bool = False
    api_socket: str = "/var/run/fleet.sock"  # '' serves no unix socket
    api_listen: str = ""  # HOST:PORT for the API over TCP; '' (default) serves no TCP
    disable_api: bool = False
    max_units: int = 0  # the most units the engine places here; 0: no cap (see unit_cap)
    notices: tuple[str, ...] = ()  # non-fatal remarks (deprecated/unknown keys) for the caller to log


@dataclass(frozen=True, slots=True)
class Invocation:
    """What the command line asked for: a config path, option overrides, or just the version."""

    config_path: str | None = None  # None: the default path, used only if present
    options: Mapping[str, str] = field(default_factory=dict)
    show_version: bool = False
    show_help: bool = False


# --- value parsers: text -> value, raising ValueError with the expected form -------------------------------

_BOOL_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_BOOL_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in _BOOL_TRUE:
        return True
    if lowered in _BOOL_FALSE:
        return False
    raise ValueError("expected true or false")


def _parse_count(text: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value < 0:
        raise ValueError("expected a whole number >= 0")
    return value


def _parse_positive_int(text: str) -> int:
    value = _parse_count(text)
    if value == 0:
        raise ValueError("expected a whole number > 0")
    return value


# Durations and their bounds (seconds). Refused outside them at startup, with the range in the message.
REQUEST_TIMEOUT_BOUNDS = Bounds(0.1, 300.0)  # etcd_request_timeout: 100ms .. 5m
RECONCILE_INTERVAL_BOUNDS = Bounds(0.1, 3600.0)  # engine_reconcile_interval: 100ms .. 1h
AGENT_TTL_BOUNDS = Bounds(1.0, 3600.0)  # agent_ttl: 1s (etcd leases are whole seconds) .. 1h


def _parse_request_timeout(text: str) -> float:
    return parse_seconds(text, REQUEST_TIMEOUT_BOUNDS)


def _parse_reconcile_interval(text: str) -> float:
    return parse_seconds(text, RECONCILE_INTERVAL_BOUNDS)


def _parse_ttl(text: str) -> float:
    """A Go duration as fleet's ``agent_ttl`` (``30s``; a bare number is refused)."""
    return parse_seconds(text, AGENT_TTL_BOUNDS, bare_number=False)


def _parse_servers(text: str) -> tuple[str, ...]:
    """Comma list; ``[``, ``]``, ``"`` and spaces are stripped around items, so ``["a","b"]`` works."""
    items = tuple(item.strip().strip('[]" ') for item in text.split(","))
    servers = tuple(item for item in items if item)
    if not servers:
        raise ValueError("expected a comma-separated list of URLs")
    return tuple(parse_endpoint(server) for server in servers)


MAX_UNITS_METADATA = "fleet.max-units"  # metadata key: this machine's unit cap (like max_units)


def unit_cap(max_units: int, metadata: Mapping[str, str]) -> int:
    """The cap this machine publishes: the smaller of ``max_units`` and the ``fleet.max-units`` metadata
    value, ignoring 0 (no cap) in either; 0 when neither sets one. The metadata value is checked at startup
    (``_parse_machine_metadata``)."""
    caps = [cap for cap in (max_units, int(metadata.get(MAX_UNITS_METADATA, "0"))) if cap > 0]
    return min(caps, default=0)


def _parse_max_units(text: str) -> int:
    value = _parse_count(text)
    if value > MAX_UNITS_LIMIT:
        raise ValueError(f"expected a whole number from 0 to {MAX_UNITS_LIMIT}")
    return value


def _parse_machine_metadata(text: str) -> dict[str, str]:
    """``parse_metadata``, and a ``fleet.max-units`` value must be a cap (a whole number, 0: none)."""
    metadata = parse_metadata(text)
    if MAX_UNITS_METADATA in metadata:
        try:
            _parse_max_units(metadata[MAX_UNITS_METADATA])
        except ValueError as exc:
            raise ValueError(f"{MAX_UNITS_METADATA}: {exc}") from None
    return metadata


def parse_metadata(text: str) -> dict[str, str]:
    """``k=v,k2=v2``: whitespace trimmed around keys and values, last duplicate wins, malformed pairs ignored.

    As fleet: a pair splits at its first ``=`` (so a value may contain ``=``); a pair without ``=`` or with
    an empty key is malformed.
    """
    metadata: dict[str, str] = {}
    for pair in text.split(","):
        key, sep, value = pair.partition("=")
        key, value = key.strip(), value.strip()
        if sep and key:
            metadata[key] = value
    return metadata


FENCE_CHOICES = ("conflicts", "all", "none")


def _parse_fence(text: str) -> str:
    value = text.strip().lower()
    if value not in FENCE_CHOICES:
        raise ValueError("expected " + ", ".join(FENCE_CHOICES))
    return value


def _parse_ip(text: str) -> str:
    stripped = text.strip()
    if stripped:
        try:
            ipaddress.ip_address(stripped)
        except ValueError:
            raise ValueError("expected an IP address such as 10.0.0.5") from None
    return stripped


def _parse_directory(text: str) -> str:
    stripped = text.strip()
    if not stripped.startswith("/"):
        raise ValueError("expected an absolute path")
    return stripped


def _parse_socket(text: str) -> str:
    stripped = text.strip()
    if stripped and not stripped.startswith("/"):
        raise ValueError("expected an absolute path, or nothing for no socket")
    return stripped


def _parse_listen(text: str) -> str:
    stripped = text.strip()
    if stripped:
        parse_host_port(stripped)
    return stripped


def _text(text: str) -> str:
    return text


_PARSERS: dict[str, Callable[[str], object]] = {
    "verbosity": _parse_count,
    "etcd_servers": _parse_servers,
    "etcd_username": _text,
    "etcd_password": _text,
    "etcd_keyfile": str.strip,
    "etcd_certfile": str.strip,
    "etcd_cafile": str.strip,
    "etcd_key_prefix": parse_key_prefix,
    "etcd_request_timeout": _parse_request_timeout,
    "engine_reconcile_interval": _parse_reconcile_interval,
    "public_ip": _parse_ip,
    "metadata": _parse_machine_metadata,
    "agent_ttl": _parse_ttl,
    "fence_units": _parse_fence,
    "units_directory": _parse_directory,
    "systemd_user": _parse_bool,
    "token_limit": _parse_positive_int,
    "enable_grpc": _parse_bool,
    "disable_engine": _parse_bool,
    "disable_watches": _parse_bool,
    "api_socket": _parse_socket,
    "api_listen": _parse_listen,
    "disable_api": _parse_bool,
    "max_units": _parse_max_units,
}
KEYS = frozenset(_PARSERS)
DEPRECATED_KEYS = frozenset({"verify_units", "authorized_keys_file"})
# Accepted for fleet.conf files written for the original, with no effect here: said at start when set.
IGNORED_KEYS = {
    "enable_grpc": "the original's gRPC agent-to-engine channel; all state goes through etcd",
    "disable_watches": "the original's switch to polling; fleetd always watches etcd",
}

_DESCRIPTIONS = {
    "verbosity": "log level: 0 info, 1 or more debug",
    "etcd_servers": "etcd endpoints, comma-separated (http://, https://, unix:)",
    "etcd_username": "etcd user name (authentication)",
    "etcd_password": "etcd user's password (keep fleet.conf mode 600)",
    "etcd_keyfile": "TLS client key file",
    "etcd_certfile": "TLS client certificate file",
    "etcd_cafile": "TLS CA file (PEM bundle)",
    "etcd_key_prefix": "keyspace of fleet data in etcd",
    "etcd_request_timeout": "seconds allowed for each etcd request (100ms to 5m)",
    "engine_reconcile_interval": "seconds between engine passes (100ms to 1h)",
    "public_ip": "this machine's address as fleetctl shows it and ssh uses",
    "metadata": (
        "this machine's metadata: k=v,k2=v2 (MachineMetadata= matches it); fleet.max-units=N caps the"
        " units placed here like max_units"
    ),
    "max_units": (
        "the most units the engine places on this machine (Global units count, but are never refused);"
        " 0: no cap. With fleet.max-units in metadata, the smaller cap applies"
    ),
    "agent_ttl": "how long this machine stays listed without a heartbeat: a duration, e.g. 30s (1s to 1h)",
    "fence_units": (
        "which units this machine stops once it knows its lease is lost while etcd is unreachable"
        " (a partition: the engine re-places them elsewhere): conflicts (units with Conflicts=), all, none"
    ),
    "units_directory": "where unit files are written for systemd",
    "systemd_user": "use the user's systemd instance instead of the system's",
    "token_limit": "items per page of the HTTP API (nextPageToken)",
    "api_socket": "unix socket of the HTTP API (mode 0660); empty for none",
    "api_listen": "HOST:PORT of the HTTP API over TCP (no auth, no TLS: keep it local); empty for none",
    "disable_api": "serve no HTTP API (nor /metrics)",
    "enable_grpc": "ignored: " + IGNORED_KEYS["enable_grpc"],
    "disable_engine": "run no engine on this machine (agent only)",
    "disable_watches": "ignored: " + IGNORED_KEYS["disable_watches"],
}


def _closest(key: str) -> str:
    """``; did you mean X?`` for the known key closest to ``key``, or '' when none is close."""
    import difflib  # noqa: PLC0415 - only for a configuration error

    close = difflib.get_close_matches(key, sorted(KEYS), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _default_text(key: str) -> str:
    value = getattr(Config(), key)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(value)
    if isinstance(value, Mapping):
        return ",".join(f"{k}={v}" for k, v in value.items()) or '""'
    if isinstance(value, float):
        return format_seconds(value)
    return '""' if value == "" else str(value)


def help_text(program: str = "fleetd") -> str:
    """``fleetd --help``: usage, where the configuration comes from, and every key with its default."""
    width = max(len(key) for key in KEYS)
    lines = [
        f"Usage: {program} [--config PATH] [--KEY VALUE ...] [--version] [--help]",
        "",
        "fleetd runs fleet's agent (and engine) on this machine. Each configuration key is read, in order",
        f"of precedence, from the flag --KEY VALUE (or --KEY=VALUE), the variable {ENV_PREFIX}KEY (upper",
        f"case) and `KEY = VALUE` lines of the config file (--config; default {DEFAULT_CONFIG_PATH}, if",
        "present). An unknown key is an error.",
        "",
        "Keys (default, then meaning):",
    ]
    for key in sorted(KEYS):
        lines.append(f"  {key:<{width}}  {_default_text(key)}")
        lines.append(f"  {'':<{width}}    {_DESCRIPTIONS[key]}")
    lines += [
        "",
        "Other flags:",
        "  --config PATH   the config file",
        "  --version       print the version and exit",
        "  --help          print this help and exit",
    ]
    return "\n".join(lines)


# --- sources: file text, environment, argv -> raw key/value text --------------------------------------------


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def parse_file_text(text: str, path: str = DEFAULT_CONFIG_PATH) -> tuple[dict[str, str], tuple[str, ...]]:
    """Parse fleet.conf: ``key = value`` lines at top level, values optionally quoted, ``#``/``;`` comments.

    Returns the raw values and notices (keys under a ``[section]`` are not fleetd's and are ignored).
    A line that is not ``key = value`` raises ConfigError naming the file and line.
    """
    values: dict[str, str] = {}
    notices: list[str] = []
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{path} line {number}: expected key = value, got {line!r}")
        if section:
            notices.append(f"{path} line {number}: key {key} in section [{section}] ignored")
            continue
        values[key.lower()] = _unquote(value.strip())
    return values, tuple(notices)


def parse_env(environ: Mapping[str, str]) -> dict[str, str]:
    """``FLEET_<UPPERCASE KEY>`` for every known and deprecated key."""
    values: dict[str, str] = {}
    for key in sorted(KEYS | DEPRECATED_KEYS):
        name = ENV_PREFIX + key.upper()
        if name in environ:
            values[key] = environ[name]
    return values


def parse_args(argv: Sequence[str]) -> Invocation:
    """Flags after argv[0], Go style: ``-x``/``--x``, ``--x=v`` or ``--x v``; ``-`` and ``_`` alike in names.

    ``--config PATH``, ``--version``, the word ``version``, and ``--<key>`` for any config key. Raises
    ConfigError for an unknown flag or a missing value, and ``UsageError`` for a positional argument.
    """
    config_path: str | None = None
    options: dict[str, str] = {}
    show_version = False
    args = list(argv[1:])
    while args:
        arg = args.pop(0)
        if arg == "--":
            if args:
                raise UsageError(_no_arguments(argv))
            break
        if not arg.startswith("-") or arg == "-":
            if arg == "version" and not args:
                show_version = True
                continue
            if arg == "help" and not args:
                return Invocation(show_help=True)
            raise UsageError(_no_arguments(argv))
        name, sep, value = arg.lstrip("-").partition("=")
        name = name.replace("-", "_")
        if name in ("help", "h"):
            return Invocation(show_help=True)
        if name == "version":
            show_version = sep == "" or _parse_bool(value)
            continue
        if name not in KEYS | DEPRECATED_KEYS | {"config"}:
            raise ConfigError(f"unknown flag {arg}{_closest(name)}")
        if not sep:
            if name in _BOOL_FLAGS:
                value = "true"
            elif args:
                value = args.pop(0)
            else:
                raise ConfigError(f"flag {arg} needs a value")
        if name == "config":
            config_path = value
        else:
            options[name] = value
    return Invocation(config_path=config_path, options=options, show_version=show_version)


_BOOL_FLAGS = frozenset({"systemd_user", "enable_grpc", "disable_engine", "disable_watches", "disable_api"})


class UsageError(ConfigError):
    """A positional argument: fleetd takes none (the user probably meant fleetctl)."""


def _no_arguments(argv: Sequence[str]) -> str:
    program = argv[0] if argv else "fleetd"
    return f"{program} takes no arguments. Did you mean to invoke fleetctl instead?"


# --- assembly ---------------------------------------------------------------------------------------------


def build_config(
    file_values: Mapping[str, str],
    env_values: Mapping[str, str],
    cli_values: Mapping[str, str],
    *,
    file_notices: Sequence[str] = (),
) -> Config:
    """Merge the three sources (flags > env > file) over the defaults and validate every value once.

    A bad value or an unknown key raises ConfigError with one line naming the key, where it came from
    and (for an unknown key) the closest known one.
    """
    notices = list(file_notices)
    merged: dict[str, tuple[str, str]] = {}
    for source, values in (("config file", file_values), ("environment", env_values), ("flag", cli_values)):
        for key, value in values.items():
            merged[key] = (value, source)
    parsed: dict[str, object] = {}
    for key in sorted(merged):
        value, source = merged[key]
        if key in DEPRECATED_KEYS:
            notices.append(f"config key {key} is deprecated and no longer supported; ignored")
            continue
        parser = _PARSERS.get(key)
        if parser is None:
            raise ConfigError(f"unknown config key {key} (from {source}){_closest(key)}")
        if key in IGNORED_KEYS:
            notices.append(f"config key {key} ({source}) is ignored: {IGNORED_KEYS[key]}")
        try:
            parsed[key] = parser(require_text(value))
        except ValueError as exc:
            where = f"{ENV_PREFIX}{key.upper()}" if source == "environment" else source
            raise ConfigError(f"invalid value {value!r} for {key} (from {where}): {exc}") from None
    return Config(**parsed, notices=tuple(notices))  # type: ignore[arg-type]


def _not_utf8(path: str, exc: UnicodeDecodeError) -> str:
    line = exc.object[: exc.start].count(b"\n") + 1
    return (
        f"config file {path} line {line}: byte 0x{exc.object[exc.start]:02x} is not valid UTF-8;"
        " save the file as UTF-8"
    )


def _exposed_password(path: str, mode: int, values: Mapping[str, str]) -> tuple[str, ...]:
    """A notice when the file holds etcd_password yet group or others may read it."""
    if not values.get("etcd_password") or not mode & 0o077:
        return ()
    return (
        f"config file {path} holds etcd_password but is readable by group/other (mode {mode & 0o777:04o});"
        f" run: chmod 600 {path}",
    )


def load_config(invocation: Invocation, environ: Mapping[str, str]) -> Config:
    """Read the config file (the default one only if present) and build the Config.

    A file holding ``etcd_password`` that group or others can read adds a notice (logged as a warning). The
    TLS files must be readable now (the etcd client would only find out at its first request).
    """
    path = invocation.config_path or DEFAULT_CONFIG_PATH
    file_values: dict[str, str] = {}
    file_notices: tuple[str, ...] = ()
    try:
        with open(path, "rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            text = handle.read().decode("utf-8")
    except FileNotFoundError:
        if invocation.config_path is not None:
            raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(_not_utf8(path, exc)) from None
    else:
        file_values, file_notices = parse_file_text(text, path)
        file_notices += _exposed_password(path, mode, file_values)
    config = build_config(file_values, parse_env(environ), invocation.options, file_notices=file_notices)
    for key in ("etcd_cafile", "etcd_certfile", "etcd_keyfile"):
        if value := getattr(config, key):
            try:
                readable_file(value)
            except ValueError as exc:
                raise ConfigError(f"invalid value for {key}: {exc}") from None
    return config
