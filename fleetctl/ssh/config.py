"""SSH settings and address parsing for fleetctl: what the commands need without importing paramiko."""

from __future__ import annotations

from dataclasses import dataclass

from fleetd.errors import TunnelError

__all__ = ["DEFAULT_KNOWN_HOSTS_FILE", "DEFAULT_SSH_PORT", "SSHSettings", "split_host_port"]

DEFAULT_SSH_PORT = 22
DEFAULT_KNOWN_HOSTS_FILE = "~/.fleetctl/known_hosts"


@dataclass(frozen=True, slots=True)
class SSHSettings:
    """How to reach and trust SSH hosts (from --ssh-username, --ssh-timeout, --identity-file, ...)."""

    user: str
    timeout: float = 10.0
    known_hosts_file: str = DEFAULT_KNOWN_HOSTS_FILE
    strict: bool = True
    identity_file: str | None = None
    use_agent: bool = True
    use_default_keys: bool = True
    forward_agent: bool = False
    keepalive: int = 15  # seconds between keep-alive packets on an idle connection


def split_host_port(text: str, default_port: int = DEFAULT_SSH_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]`` or ``[v6]:port`` -> (host, port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise TunnelError(f"invalid port in {text!r}")
    return host, int(port_text)
