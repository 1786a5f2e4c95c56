"""Who this machine is: its machine ID (``/etc/machine-id``) and its public IPv4 address.

The public IP is the configured one, else the IPv4 address the kernel would use on the default route's
interface: the default route is read from ``/proc/net/route`` and a UDP socket ``connect``-ed to its gateway
(no packet is sent) reports the source address. ``ip -4 route get`` is the fallback when ``/proc`` is absent.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import socket
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

from fleetd.errors import ConfigError
from fleetd.model import VERSION, MachineID, MachineState

__all__ = ["default_gateway", "detect_public_ip", "machine_state", "read_machine_id"]

logger = logging.getLogger(__name__)

MACHINE_ID_PATH = "/etc/machine-id"
PROC_ROUTE_PATH = "/proc/net/route"
_RTF_UP = 0x1
_RTF_GATEWAY = 0x2


def read_machine_id(path: str = MACHINE_ID_PATH) -> MachineID:
    """The trimmed contents of /etc/machine-id; ConfigError when it is unreadable or empty."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        problem = f"cannot read {path}: {exc.strerror}"
        raise ConfigError(f"unable to determine local machine ID: {problem}") from None
    if not text:
        raise ConfigError(f"unable to determine local machine ID: {path} is empty")
    return MachineID(text)


def default_gateway(route_table: str) -> tuple[str, str] | None:
    """(interface, gateway IPv4) of the default route in /proc/net/route text, or None.

    Among default routes (destination 0.0.0.0/0, up) the one with the lowest metric wins. A default route
    without a gateway (point-to-point) gives gateway ``0.0.0.0``.
    """
    best: tuple[int, str, str] | None = None
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            destination, gateway, flags = int(fields[1], 16), int(fields[2], 16), int(fields[3], 16)
            metric, mask = int(fields[6]), int(fields[7], 16)
        except ValueError:
            continue
        if destination != 0 or mask != 0 or not flags & _RTF_UP:
            continue
        address = socket.inet_ntoa(struct.pack("<I", gateway)) if flags & _RTF_GATEWAY else "0.0.0.0"
        if best is None or metric < best[0]:
            best = (metric, fields[0], address)
    return None if best is None else (best[1], best[2])


def _is_global_unicast(address: str) -> bool:
    """Go's IP.IsGlobalUnicast: not unspecified, loopback, link-local, multicast or broadcast."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        return False
    broadcast = ip == ipaddress.IPv4Address("255.255.255.255")
    return not (ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip.is_multicast or broadcast)


def _source_address(gateway: str, interface: str) -> str | None:
    """The source IPv4 the kernel picks to reach ``gateway`` via ``interface`` (UDP connect: no traffic)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        # Binding to the device needs CAP_NET_RAW; without it the routing decision is usually the same.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
        target = gateway if gateway != "0.0.0.0" else "192.0.2.1"  # TEST-NET-1: any off-link address
        try:
            sock.connect((target, 9))
        except OSError:
            return None
        address: str = sock.getsockname()[0]
    return address


def _ip_route_source() -> str | None:
    import shutil  # noqa: PLC0415 - only when the public IP is not configured

    ip = shutil.which("ip")
    if ip is None:
        return None
    try:
        out = subprocess.run(
            [ip, "-4", "-o", "route", "get", "192.0.2.1"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    words = out.split()
    return words[words.index("src") + 1] if "src" in words[:-1] else None


def detect_public_ip(
    read_route_table: Callable[[], str] = lambda: Path(PROC_ROUTE_PATH).read_text(encoding="ascii"),
) -> str:
    """The default-route interface's IPv4 address, or '' when there is none (no default route, no IPv4)."""
    try:
        route = default_gateway(read_route_table())
    except OSError:
        route = None
    address = _source_address(route[1], route[0]) if route else _ip_route_source()
    if address is None or not _is_global_unicast(address):
        return ""
    return address


def machine_state(
    machine_id: MachineID,
    public_ip: str,
    metadata: dict[str, str],
    detect: Callable[[], str] = detect_public_ip,
    max_units: int = 0,
) -> MachineState:
    """This machine's record: configured values win over detected ones (spec §6.1)."""
    address = public_ip or detect()
    if not address:
        logger.warning("no public IP configured and none detected on the default route; publishing none")
    return MachineState(
        id=machine_id, public_ip=address, metadata=dict(metadata), version=VERSION, max_units=max_units
    )
