"""fleetd on real systemd: two nspawn machines, each running fleetd (deploy/systemd/fleetd.service) against a
real etcd on the host's loopback (the machines share the host network).

A unit scheduled to one machine becomes active (running) in that machine's systemd; ``systemctl stop fleetd``
(SIGTERM) stops and unloads it there and removes the machine from the cluster. etcd frozen for longer than
agent_ttl: the units keep running (no ``Stopping`` in the journal); the machines register again after.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devcluster.etcd import EtcdServer
from devcluster.nspawn import CHECKOUT, Machine, boot_machines, stop_leftovers
from fleetd.model import MachineID, TargetState, UnitName
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.keyspace import UnitRecord
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile

SERVICE = CHECKOUT / "deploy" / "systemd" / "fleetd.service"
HELLO = UnitName("hello.service")


def _fleet_conf(endpoint: str, prefix: str, machine: Machine) -> str:
    return (
        f'etcd_servers="{endpoint}"\n'
        f'etcd_key_prefix="{prefix}"\n'
        f'public_ip="{machine.address}"\n'
        f'metadata="name={machine.name}"\n'
        'agent_ttl="10s"\n'
        "engine_reconcile_interval=0.5\n"
    )


@pytest.fixture(scope="module")
def own_etcd() -> Iterator[EtcdServer]:
    """This module's etcd (the outage test freezes it), on the loopback the machines share."""
    server = EtcdServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def fleet(
    own_etcd: EtcdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[list[Machine], str]]:
    """Two machines running fleetd from deploy/systemd/fleetd.service (ExecStart pointed at this checkout)."""
    state_dir = tmp_path_factory.mktemp("agent-machines")
    prefix = f"/t/{uuid.uuid4().hex}/"
    machines = boot_machines(2, state_dir, prefix=f"ag{uuid.uuid4().hex[:4]}-")
    try:
        unit = SERVICE.read_text().replace(
            "/opt/fleet/bin/fleetd", str(CHECKOUT / ".venv" / "bin" / "fleetd")
        )
        for machine in machines:
            machine.put_file("/etc/fleet/fleet.conf", _fleet_conf(own_etcd.endpoint, prefix, machine))
            machine.put_file("/etc/systemd/system/fleetd.service", unit)
            machine.run(["systemctl", "daemon-reload"], check=True)
            # Type=notify: this returns once fleetd has sent READY=1.
            machine.run(["systemctl", "start", "fleetd.service"], check=True, timeout=60)
        yield machines, prefix
    finally:
        for machine in machines:
            machine.destroy()
        stop_leftovers(state_dir)


def _wait(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _active(machine: Machine, name: str) -> str:
    result = machine.run(["systemctl", "show", "-p", "ActiveState", "-p", "SubState", "--value", name])
    return " ".join(result.stdout.split())


def test_scheduled_unit_runs_and_sigterm_stops_it_and_removes_the_machine(
    fleet: tuple[list[Machine], str], own_etcd: EtcdServer, aio: asyncio.Runner
) -> None:
    machines, prefix = fleet
    first, second = machines
    kv = EtcdKV([own_etcd.endpoint], request_timeout=5.0)
    registry = Registry(kv, prefix)

    def machine_ids() -> set[str]:
        return {m.id for m in aio.run(registry.list_machines())}

    try:
        _wait("both machines registered", lambda: machine_ids() == {first.machine_id, second.machine_id})
        records = {m.id: m for m in aio.run(registry.list_machines())}
        assert records[MachineID(first.machine_id)].public_ip == first.address
        assert dict(records[MachineID(first.machine_id)].metadata) == {"name": first.name}

        text = f"[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineID={first.machine_id}\n"
        unit = UnitFile.from_text(text)
        aio.run(
            registry.put_units([(UnitRecord(HELLO, unit.hash, False, TargetState.LAUNCHED), unit.canonical)])
        )

        _wait("hello.service running on the first machine", lambda: _active(first, HELLO) == "active running")
        assert _active(second, HELLO) != "active running"

        def published() -> list[tuple[str, str]]:
            return [(s.machine_id, s.active_state) for s in aio.run(registry.list_unit_states([HELLO]))]

        _wait("its state published", lambda: published() == [(first.machine_id, "active")])
        assert Path(f"/proc/{first.leader}/root/run/fleet/units/hello.service").read_text() == unit.canonical

        show = ["systemctl", "show", "-p", "MainPID", "--value", "fleetd.service"]
        fleetd_pid = first.run(show).stdout.strip()
        status = first.run(["cat", f"/proc/{fleetd_pid}/status"]).stdout
        rss_kib = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
        assert rss_kib <= 80 * 1024, f"fleetd RSS {rss_kib} KiB"

        first.run(["systemctl", "stop", "fleetd.service"], check=True, timeout=90)  # SIGTERM to fleetd
        assert _active(first, HELLO) in ("inactive dead", "")
        assert not Path(f"/proc/{first.leader}/root/run/fleet/units/hello.service").exists()
        _wait("the first machine gone", lambda: machine_ids() == {second.machine_id}, timeout=10)
        assert published() == []
        journal = first.run(["journalctl", "-u", "fleetd.service", "--no-pager", "-o", "cat"]).stdout
        assert "task=start unit=hello.service" in journal
        assert "machine " + first.machine_id + " removed from the cluster" in journal
    finally:
        aio.run(registry.destroy_units([HELLO]))
        aio.run(kv.close())


def test_units_keep_running_through_an_etcd_outage_longer_than_agent_ttl(
    fleet: tuple[list[Machine], str], own_etcd: EtcdServer, aio: asyncio.Runner
) -> None:
    machines, prefix = fleet
    first, second = machines
    kv = EtcdKV([own_etcd.endpoint], request_timeout=5.0)
    registry = Registry(kv, prefix)
    pinned = UnitName("pinned.service")

    def machine_ids() -> set[str]:
        return {m.id for m in aio.run(registry.list_machines())}

    def published() -> list[tuple[str, str]]:
        return [(s.machine_id, s.active_state) for s in aio.run(registry.list_unit_states([pinned]))]

    first.run(["systemctl", "start", "fleetd.service"], check=True, timeout=60)  # stopped by the test above
    try:
        _wait("both machines registered", lambda: machine_ids() == {first.machine_id, second.machine_id})
        text = f"[Service]\nExecStart=/bin/sleep infinity\n\n[X-Fleet]\nMachineID={first.machine_id}\n"
        unit = UnitFile.from_text(text)
        aio.run(
            registry.put_units([(UnitRecord(pinned, unit.hash, False, TargetState.LAUNCHED), unit.canonical)])
        )
        _wait("pinned.service published active", lambda: published() == [(first.machine_id, "active")])
        pid = first.run(["systemctl", "show", "-p", "MainPID", "--value", pinned]).stdout.strip()

        own_etcd.pause()  # etcd unreachable for agent_ttl (10 s) + 5 s: the machines' leases run out
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                assert _active(first, pinned) == "active running"
                time.sleep(1)
        finally:
            own_etcd.resume()

        _wait(
            "both machines registered again", lambda: machine_ids() == {first.machine_id, second.machine_id}
        )
        _wait("pinned.service published active again", lambda: published() == [(first.machine_id, "active")])
        time.sleep(6)  # past the agent's settle window: nothing may stop the unit after it either
        assert _active(first, pinned) == "active running"
        assert first.run(["systemctl", "show", "-p", "MainPID", "--value", pinned]).stdout.strip() == pid
        journal = first.run(["journalctl", "--no-pager", "-o", "cat"]).stdout
        assert "Stopping pinned.service" not in journal
        assert "lease expired" in journal or "etcd unreachable" in journal
        aio.run(registry.destroy_units([pinned]))
        first.run(["systemctl", "stop", "fleetd.service"], check=True, timeout=90)
    finally:
        aio.run(kv.close())


def test_an_engine_leads_again_after_the_outage(
    fleet: tuple[list[Machine], str], own_etcd: EtcdServer, aio: asyncio.Runner
) -> None:
    _, prefix = fleet
    kv = EtcdKV([own_etcd.endpoint], request_timeout=5.0)
    registry = Registry(kv, prefix)
    try:
        _wait("an engine leader", lambda: aio.run(kv.get(registry.keys.leader)) is not None, timeout=15)
    finally:
        aio.run(kv.close())
