"""Text -> value parsers shared by fleetd's config and fleetctl's flags (pure, except ``readable_file``).

One parser per kind of value, each raising ``ValueError`` with the expected form (the caller adds which key
or flag it was): durations (Go ``30s``/``1m30s`` or float seconds) checked against ``Bounds``, etcd endpoint
URLs, etcd key prefixes, text that must be valid UTF-8, and files (TLS keys and certificates) that must be
readable now rather than fail deep inside the first etcd request. Bounds exist so an absurd value (``nan``,
``inf``, ``-1``, ``1ns``, 10^22 hours) is refused at startup instead of spinning a loop or overflowing a
timer later.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = [
    "Bounds",
    "format_seconds",
    "parse_duration",
    "parse_endpoint",
    "parse_host_port",
    "parse_key_prefix",
    "parse_seconds",
    "readable_file",
    "require_text",
]

_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC greek mu
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"(\d+\.?\d*|\.\d+)([^\d.]+)")
_DURATION_FORM = "expected a duration such as 30s, 1m30s or 500ms"
# C0 controls, DEL, C1 controls and whitespace: never part of a URL or a key prefix.
_UNPRINTABLE = re.compile(r"[\x00-\x20\x7f-\x9f\s]")


def format_seconds(seconds: float) -> str:
    """``3600`` -> ``1h``, ``90`` -> ``90s``, ``0.1`` -> ``100ms``: bounds as a user writes them."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


@dataclass(frozen=True, slots=True)
class Bounds:
    """The inclusive range a duration (seconds) must lie in."""

    low: float
    high: float

    def check(self, seconds: float) -> float:
        """``seconds`` if finite and within the range; else ValueError naming the range."""
        if not math.isfinite(seconds) or not self.low <= seconds <= self.high:
            raise ValueError(
                f"expected a duration between {format_seconds(self.low)} and {format_seconds(self.high)}"
            )
        return seconds


def parse_duration(text: str) -> float:
    """Parse a Go duration (``30s``, ``1m30s``, ``500ms``, ``1.5h``, ``0``) into seconds.

    As Go's time.ParseDuration: a sequence of decimal numbers each with a unit (ns us µs ms s m h), an
    optional sign; a bare number other than 0 lacks a unit and is refused. Raises ValueError. The result is
    not range-checked (it may be huge or negative): see ``parse_seconds``.
    """
    stripped = text.strip()
    body = stripped.lstrip("+-")
    sign = -1.0 if stripped.startswith("-") else 1.0
    if len(stripped) - len(body) > 1 or not body:
        raise ValueError(_DURATION_FORM)
    if body == "0":
        return 0.0
    total = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None or match.group(2) not in _DURATION_UNITS:
            raise ValueError(_DURATION_FORM)
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    return sign * total


def parse_seconds(text: str, bounds: Bounds, *, bare_number: bool = True) -> float:
    """A duration within ``bounds``: float seconds (``1.5``, when ``bare_number``) or a Go duration."""
    stripped = text.strip()
    try:
        if not bare_number:
            raise ValueError(_DURATION_FORM)
        value = float(stripped)
    except ValueError:
        try:
            value = parse_duration(stripped)
        except ValueError:
            form = "expected seconds such as 1.5 or a duration such as 500ms"
            raise ValueError(form if bare_number else _DURATION_FORM) from None
    return bounds.check(value)


def require_text(text: str) -> str:
    """``text`` unchanged when it is valid Unicode (no lone surrogates, which stand for undecodable bytes
    in environment variables and argv); else ValueError."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid UTF-8") from None
    return text


def readable_file(path: str) -> str:
    """``path`` (``~`` expanded) when it is a file this process can open for reading; else ValueError."""
    expanded = os.path.expanduser(require_text(path))
    try:
        with open(expanded, "rb"):
            pass
    except IsADirectoryError:
        raise ValueError(f"{path!r} is a directory, not a file") from None
    except OSError as exc:
        raise ValueError(f"cannot read {path!r}: {exc.strerror or exc}") from None
    return expanded


def parse_endpoint(text: str) -> str:
    """An etcd endpoint ``http(s)://host[:port][/]`` (scheme optional: http) or ``unix:/path``; ValueError
    when malformed."""
    stripped = require_text(text.strip())
    if not stripped or _UNPRINTABLE.search(stripped):
        raise ValueError("expected URLs such as http://127.0.0.1:2379 (no spaces or control characters)")
    if stripped.startswith("unix:"):
        if len(stripped) == len("unix:"):
            raise ValueError("expected a socket path after unix:")
        return stripped
    try:
        parts = urlsplit(stripped if "://" in stripped else f"http://{stripped}")
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed URL ({exc}); expected URLs such as http://127.0.0.1:2379") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}; expected http:// or https://")
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("expected URLs such as http://127.0.0.1:2379 (a host, an optional port, no path)")
    if port == 0:
        raise ValueError("expected a port from 1 to 65535")
    return stripped


def parse_key_prefix(text: str) -> str:
    """An etcd key prefix: ``/`` then printable characters without spaces; a trailing ``/`` is added."""
    stripped = require_text(text.strip())
    if not stripped.startswith("/"):
        raise ValueError("expected a key prefix starting with /")
    if _UNPRINTABLE.search(stripped):
        raise ValueError("expected a key prefix without spaces or control characters")
    return stripped if stripped.endswith("/") else stripped + "/"


def parse_host_port(text: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port`` for IPv6) -> (host, port); ValueError otherwise. A host is required."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)
