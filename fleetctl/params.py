"""Click parameter types for fleetctl's flag values: one per kind of value, each refusing bad input as a usage
error (exit 2, ``Error: Invalid value for '--flag': <what was expected>``) before any command runs.

The text parsing is fleetd's (``fleetd.values``), so fleetd's config and fleetctl's flags accept the same
durations, endpoints and key prefixes. Values from ``FLEETCTL_*`` pass through the same types.
"""

from __future__ import annotations

import click

from fleetd.values import Bounds, parse_endpoint, parse_key_prefix, parse_seconds, readable_file

__all__ = [
    "REQUEST_TIMEOUT_BOUNDS",
    "SSH_TIMEOUT_BOUNDS",
    "TUNNEL_IDLE_BOUNDS",
    "Endpoints",
    "KeyPrefix",
    "ReadableFile",
    "Seconds",
]

REQUEST_TIMEOUT_BOUNDS = Bounds(0.1, 300.0)  # --request-timeout: 100ms .. 5m
SSH_TIMEOUT_BOUNDS = Bounds(0.1, 300.0)  # --ssh-timeout: 100ms .. 5m
TUNNEL_IDLE_BOUNDS = Bounds(1.0, 3600.0)  # --tunnel-idle: 1s .. 1h


class Seconds(click.ParamType[float]):
    """A duration within bounds: seconds (``2.5``) or a Go duration (``500ms``); nan, inf and negatives
    are refused."""

    name = "seconds"

    def __init__(self, bounds: Bounds) -> None:
        self.bounds = bounds

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        text = str(value)
        try:
            return parse_seconds(text, self.bounds)
        except ValueError as exc:
            self.fail(f"{text!r}: {exc}", param, ctx)


class Endpoints(click.ParamType[tuple[str, ...]]):
    """A comma-separated list of etcd endpoint URLs -> a tuple (empty items dropped)."""

    name = "urls"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[str, ...]:
        if isinstance(value, tuple):
            return value
        try:
            return tuple(parse_endpoint(part) for part in str(value).split(",") if part.strip())
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


class KeyPrefix(click.ParamType[str]):
    """An etcd key prefix (``/`` first, printable, no spaces); a trailing ``/`` is added."""

    name = "prefix"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        try:
            return parse_key_prefix(str(value))
        except ValueError as exc:
            self.fail(f"{value!r}: {exc}", param, ctx)


class ReadableFile(click.ParamType[str]):
    """A file that must exist and be readable now (TLS keys and certificates), ``~`` expanded; ``""`` means
    not set."""

    name = "file"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> str:
        if not value:
            return ""
        try:
            return readable_file(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
