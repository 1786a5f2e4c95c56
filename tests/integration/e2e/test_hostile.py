"""Hostile input on a real cluster: garbage written straight into etcd and odd unit files handed to fleetctl
must not stop any fleetd, must not stop scheduling, and must not make any command print a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from devcluster.nspawn import Machine
from tests.integration.e2e.harness import FleetCluster
from tests.integration.e2e.waits import wait_for_active

PREFIX = "/_coreos.com/fleet/"
BAD_HASH = "b" * 40
GLOBAL_HASH = "c" * 40

# key (under PREFIX) -> raw value bytes
GARBAGE: dict[str, bytes] = {
    "units/a/b.service": json.dumps({"hash": BAD_HASH, "global": False}).encode(),
    "targets/a/b.service": b"launched",
    "globals/bad name.service": json.dumps({"hash": GLOBAL_HASH, "state": "launched"}).encode(),
    "globals/deep.service": b"[" * 20000 + b"]" * 20000,
    "units/deep.service": b'{"hash":' * 5000 + b"1" + b"}" * 5000,
    "targets/deep.service": b"launched",
    "units/huge.service": b'{"hash": ' + b"9" * 5000 + b', "global": true}',
    "targets/huge.service": b"launched",
    "machines/not-a-machine": b"\xff\xfe\x00garbage",
    "machines/0123456789abcdef0123456789abcdef": b'{"id": "0123456789abcdef", "metadata": [1]}',
    f"bodies/{BAD_HASH}": b"[Service]\nExecStart=/bin/echo caf\xe9\n",
    # a Global unit whose body is not UTF-8: every agent would run it
    "units/latin1.service": json.dumps({"hash": GLOBAL_HASH, "global": True}).encode(),
    "targets/latin1.service": b"launched",
    f"bodies/{GLOBAL_HASH}": b"[Unit]\nDescription=caf\xe9\n[Service]\nExecStart=/bin/sleep 1000\n"
    b"[X-Fleet]\nGlobal=true\n",
    "globals/latin1.service": json.dumps({"hash": GLOBAL_HASH, "state": "launched"}).encode(),
    "states/x.service/\xff": b"\x00\x01",
    "states/hello.service/nobody": b"{" * 10000,
}


def etcdctl(fleet: FleetCluster, *args: str, value: bytes | None = None) -> None:
    subprocess.run(
        ["etcdctl", "--endpoints", fleet.etcd.endpoint, *args], input=value, check=True, capture_output=True,
    )


def fleetd_pid(machine: Machine) -> str:
    return machine.run(["systemctl", "show", "-p", "MainPID", "--value", "fleetd.service"]).stdout.strip()


def test_garbage_in_etcd_and_odd_unit_files_stop_no_fleetd_and_no_command(
    fleet: FleetCluster, tmp_path: Path
) -> None:
    pids = {machine.name: fleetd_pid(machine) for machine in fleet.machines}
    assert all(pid.isdigit() and pid != "0" for pid in pids.values()), pids

    latin1 = tmp_path / "latin1.service"
    latin1.write_bytes(b"[Unit]\nDescription=caf\xe9\n[Service]\nExecStart=/bin/true\n")
    backslash = tmp_path / "backslash.service"
    backslash.write_text("[Service]\nExecStart=/bin/sleep 1000 \\")
    escapes = tmp_path / "escapes.service"
    escapes.write_text("[Unit]\nDescription=\x1b[2J\x1b]0;owned\x07\n[Service]\nExecStart=/bin/sleep 1000\n")

    with _garbage_written(fleet):
        for bad in (latin1, backslash):
            code, out, err = fleet.fleetctl("submit", str(bad))
            assert code == 1 and "Traceback" not in err, (code, out, err)
            assert bad.name in err
        code, out, err = fleet.fleetctl("start", "--no-block", str(escapes))
        assert code == 0, err
        # scheduling goes on next to the garbage
        fleet.ok("start", "hello.service")
        active = wait_for_active(fleet, 2)
        assert set(active) == {"hello.service", "escapes.service"}
        for command in (
            ("list-units",), ("list-machines",), ("list-unit-files",), ("cat", "escapes.service"),
            ("status", "hello.service"),
        ):
            code, out, err = fleet.fleetctl(*command)
            assert code == 0, (command, out, err)
            assert "Traceback" not in err and "\x1b" not in out, (command, out, err)
        for machine in fleet.machines:
            assert fleet.fleetd_active(machine), machine.name
            assert fleetd_pid(machine) == pids[machine.name], f"fleetd restarted on {machine.name}"
            assert fleet.systemd_active(machine, "latin1.service") != "active"
        # its record is sound, so it is listed (and can be destroyed); its body is not, so it runs nowhere
        assert "latin1.service" in fleet.ok("list-unit-files")


class _garbage_written:
    """Write GARBAGE (and two bad schedule entries) on entry; remove it all on exit."""

    def __init__(self, fleet: FleetCluster) -> None:
        self.fleet = fleet
        machine = fleet.machines[0].machine_id
        self.keys = {**GARBAGE, f"schedule/{machine}/s.service": b"[1, 2"}
        self.keys[f"schedule/{machine}/.service"] = b"{}"

    def __enter__(self) -> None:
        for key, value in self.keys.items():
            etcdctl(self.fleet, "put", PREFIX + key, value=value)

    def __exit__(self, *exc: object) -> None:
        for key in self.keys:
            etcdctl(self.fleet, "del", PREFIX + key)
