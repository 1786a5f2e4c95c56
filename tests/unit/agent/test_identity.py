"""Machine identity: /etc/machine-id, the default-route table, configured values over detected ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.agent.identity import default_gateway, detect_public_ip, machine_state, read_machine_id
from fleetd.errors import ConfigError
from fleetd.model import VERSION, MachineID

HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"


def route(
    iface: str, destination: str, gateway: str, flags: str, *, metric: int = 0, mask: str = "00000000"
) -> str:
    return f"{iface}\t{destination}\t{gateway}\t{flags}\t0\t0\t{metric}\t{mask}\t0\t0\t0\n"


def test_machine_id_is_the_trimmed_file(tmp_path: Path) -> None:
    path = tmp_path / "machine-id"
    path.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    assert read_machine_id(str(path)) == "3d1219c7c4c5404aaa1f6d2a48adfda4"


def test_missing_or_empty_machine_id_is_fatal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^unable to determine local machine ID: cannot read"):
        read_machine_id(str(tmp_path / "absent"))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match=r"is empty$"):
        read_machine_id(str(tmp_path / "empty"))


def test_default_route_with_the_lowest_metric_wins() -> None:
    table = (
        HEADER
        + route(
            "eth0", "000200C0", "00000000", "0001", metric=0, mask="00FFFFFF"
        )  # 192.0.2.0/24, not default
        + route("wlan0", "00000000", "0101A8C0", "0003", metric=600, mask="00000000")  # via 192.168.1.1
        + route("eth0", "00000000", "010200C0", "0003", metric=100, mask="00000000")  # via 192.0.2.1
        + route("eth1", "00000000", "01010A0A", "0002", metric=0, mask="00000000")  # down (no RTF_UP)
    )
    assert default_gateway(table) == ("eth0", "192.0.2.1")


def test_no_default_route() -> None:
    assert (
        default_gateway(HEADER + route("eth0", "000200C0", "00000000", "0001", metric=0, mask="00FFFFFF"))
        is None
    )
    assert default_gateway("") is None


def test_point_to_point_default_route_has_no_gateway() -> None:
    assert default_gateway(
        HEADER + route("ppp0", "00000000", "00000000", "0001", metric=0, mask="00000000")
    ) == (
        "ppp0",
        "0.0.0.0",
    )


def test_detection_through_the_loopback_gives_no_public_ip() -> None:
    # A default route via 127.0.0.1 makes the kernel pick a loopback source: not a global unicast address.
    table = HEADER + route("lo", "00000000", "0100007F", "0003", metric=0, mask="00000000")
    assert detect_public_ip(lambda: table) == ""


def test_configured_values_win_over_detection() -> None:
    def detect() -> str:
        raise AssertionError("no detection when public_ip is configured")

    state = machine_state(MachineID("m1"), "10.0.0.5", {"role": "web"}, detect)
    assert (state.public_ip, dict(state.metadata), state.version) == ("10.0.0.5", {"role": "web"}, VERSION)
    assert machine_state(MachineID("m1"), "", {}, lambda: "192.0.2.7").public_ip == "192.0.2.7"
