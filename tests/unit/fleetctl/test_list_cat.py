"""list-machines, list-units, list-unit-files, cat and verify through the CLI; constant request counts."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from fleetctl.client import FleetClient, UnitStateRow
from fleetctl.context import GlobalOptions
from fleetd.errors import RegistryError
from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry.kv import KV
from fleetd.registry.registry import Registry
from fleetd.unitfile import UnitFile
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, MACHINE_B, FakeCluster


def test_list_machines(cluster: FakeCluster) -> None:
    cluster.add_machines(MACHINE_B)
    result = cluster.invoke(["list-machines"])
    assert result.stdout == (
        "MACHINE\t\tIP\t\tMETADATA\n1a2b3c4d...\t127.0.0.12\taz=b,role=web\n9f8e7d6c...\t-\t\t-\n"
    )
    full = cluster.invoke(["list-machines", "-l", "--no-legend", "--fields", "machine"])
    assert full.stdout == "1a2b3c4d5e6f\n9f8e7d6c5b4a\n"


@pytest.mark.parametrize(
    ("fields", "message"),
    [("", "Must define output format"), ("machine,x", 'Invalid key in output format: "x"')],
)
def test_bad_fields(cluster: FakeCluster, fields: str, message: str) -> None:
    result = cluster.invoke(["list-machines", "--fields", fields])
    assert result.exit_code == 1
    assert result.stderr == message + "\n"


def test_list_units(cluster: FakeCluster) -> None:
    unit = cluster.submit("hello.service", HELLO, TargetState.LAUNCHED)
    cluster.publish(
        UnitState(
            UnitName("hello.service"),
            MACHINE_A.id,
            "loaded",
            "active",
            "running",
            unit.hash,
            TargetState.LAUNCHED,
        )
    )
    cluster.publish(UnitState(UnitName("a.service"), MACHINE_B.id, "loaded", "failed", "failed", unit.hash))
    cluster.agent = False
    result = cluster.invoke(["list-units"])
    assert result.stdout == (
        "UNIT\t\tMACHINE\t\t\tACTIVE\tSUB\n"
        "a.service\t9f8e7d6c...\t\tfailed\tfailed\n"
        "hello.service\t1a2b3c4d.../127.0.0.12\tactive\trunning\n"
    )
    hashes = cluster.invoke(["list-units", "--no-legend", "--fields", "unit,hash,load", "--full"])
    assert hashes.stdout.splitlines()[1].split() == ["hello.service", unit.hash, "loaded"]


def test_list_unit_files(cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hello.service").write_text(HELLO)
    cluster.invoke(["start", "hello"])
    cluster.submit("g.service", "[X-Fleet]\nGlobal=true\n", TargetState.LAUNCHED)
    cluster.submit("b.service", "[Service]\nExecStart=/bin/true\n")
    result = cluster.invoke(["list-unit-files", "--fields", "unit,dstate,state,global,desc"])
    assert result.exit_code == 0, result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    assert [[cell for cell in line if cell] for line in lines] == [
        ["UNIT", "DSTATE", "STATE", "GLOBAL", "DESC"],
        ["b.service", "inactive", "inactive", "false", "-"],
        ["g.service", "launched", "-", "true", "-"],
        ["hello.service", "launched", "launched", "false", "Hello World"],
    ]


def test_tmachine_is_deprecated(cluster: FakeCluster) -> None:
    result = cluster.invoke(["list-unit-files", "--fields", "unit,tmachine"])
    assert result.stderr == 'WARNING: The "tmachine" field is deprecated. Use "target" instead\n'


def test_cat(cluster: FakeCluster) -> None:
    cluster.submit("hello.service", "# comment\n[Service]\nExecStart=/bin/sleep 100\n")
    result = cluster.invoke(["cat", "hello"])
    assert result.exit_code == 0
    assert result.stdout == "[Service]\nExecStart=/bin/sleep 100\n"


def test_cat_errors(cluster: FakeCluster) -> None:
    missing = cluster.invoke(["cat", "nothere"])
    assert (missing.exit_code, missing.stderr) == (1, "Unit nothere.service not found\n")
    for args in (["cat"], ["cat", "a", "b"]):
        result = cluster.invoke(args)
        assert (result.exit_code, result.stderr) == (2, "One unit file must be provided\n")


def test_verify_is_wired(cluster: FakeCluster, tmp_path: Path) -> None:
    path = tmp_path / "hello.service"
    path.write_text(HELLO)
    result = cluster.invoke(["verify", str(path)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"{path}: ok {UnitFile.from_text(HELLO).short_hash}\n"
    bad = tmp_path / "bad.service"
    bad.write_text("[Unit\n")
    failed = cluster.invoke(["verify", str(bad)])
    assert failed.exit_code == 1
    assert f"{bad}:1:" in failed.stdout + failed.stderr
    assert cluster.invoke(["verify"]).exit_code == 2


class CountingKV:
    """Counts requests to the wrapped KV (watch streams count once)."""

    def __init__(self, inner: KV) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> object:
        attribute = getattr(self.inner, name)
        if callable(attribute):

            def counted(*args: object, **kwargs: object) -> object:
                self.calls += 1
                return attribute(*args, **kwargs)

            return counted
        return attribute


@pytest.mark.parametrize("units", [5, 300])
def test_constant_requests_whatever_the_cluster_size(units: int) -> None:
    counts = {}
    fake = FakeCluster(agent=False)
    fake.add_machines(MACHINE_A)
    for index in range(units):
        unit = fake.submit(f"u{index}.service", HELLO, TargetState.LAUNCHED)
        fake.publish(
            UnitState(
                UnitName(f"u{index}.service"),
                MACHINE_A.id,
                "loaded",
                "active",
                "running",
                unit.hash,
                TargetState.LAUNCHED,
            )
        )
    counting = CountingKV(fake.kv)
    fake.registry.kv = counting  # type: ignore[assignment]
    for args in (["cat", "u1"], ["list-units"], ["stop", "--no-block", "u1"]):
        counting.calls = 0
        assert fake.invoke(args).exit_code == 0
        counts[args[0]] = counting.calls
    assert counts == {"cat": 2, "list-units": 3, "stop": 4}  # list-units: states, machines, live metadata


@pytest.mark.parametrize("fails", [False, True])
def test_the_garbage_collector_is_off_while_a_list_is_read_and_on_again_after(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch, fails: bool
) -> None:
    read = FleetClient.unit_state_rows
    seen: list[bool] = []

    async def recording(self: FleetClient, *, reasons: bool = False) -> list[UnitStateRow]:
        seen.append(gc.isenabled())
        if fails:
            raise RegistryError("etcd said no")
        return await read(self, reasons=reasons)

    monkeypatch.setattr(FleetClient, "unit_state_rows", recording)
    assert gc.isenabled()
    result = cluster.invoke(["list-units"])
    assert (result.exit_code, seen, gc.isenabled()) == (int(fails), [False], True)


def test_list_units_reads_states_and_machines_together_and_a_failure_ends_both(
    cluster: FakeCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []

    async def states_fail(self: Registry, names: object = None) -> tuple[UnitState, ...]:
        events.append("states read")
        await asyncio.sleep(0)  # the machines read is under way
        raise RegistryError("etcd said no")

    async def machines_hang(self: FleetClient) -> dict[MachineID, MachineState]:
        events.append("machines read")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("machines read ended")
        raise AssertionError("not reached")

    monkeypatch.setattr(Registry, "list_unit_states", states_fail)
    monkeypatch.setattr(FleetClient, "machine_map", machines_hang)
    connect = cluster.connect

    @contextlib.asynccontextmanager
    async def connect_and_close(options: GlobalOptions) -> AsyncIterator[FleetClient]:
        try:
            async with connect(options) as client:
                yield client
        finally:
            events.append("client closed")

    monkeypatch.setattr(cluster, "connect", connect_and_close)
    cluster.agent = False
    result = cluster.invoke(["list-units"])
    assert result.exit_code == 1
    assert result.stderr == "Error retrieving list of units from repository: etcd said no\n"
    assert events == ["states read", "machines read", "machines read ended", "client closed"]
