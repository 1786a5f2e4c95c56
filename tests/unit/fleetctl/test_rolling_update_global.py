"""rolling-update of a Global unit on the fake cluster: machine by machine through hash pins."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from fleetd.model import MachineID, MachineState, TargetState, UnitName, UnitState
from fleetd.registry import records
from fleetd.unitfile.unit import UnitFile
from tests.unit.fleetctl.conftest import MACHINE_A, MACHINE_B, FakeCluster

MON = UnitName("mon.service")
OLD = "[Service]\nExecStart=/bin/sleep 100\n[X-Fleet]\nGlobal=true\n"
NEW = "[Service]\nExecStart=/bin/sleep 200\n[X-Fleet]\nGlobal=true\n"
OLD_HASH, NEW_HASH = UnitFile.from_text(OLD).hash, UnitFile.from_text(NEW).hash
MACHINE_C = MachineState(MachineID("c0ffee"), "", {})
IDS = sorted([MACHINE_A.id, MACHINE_B.id, MACHINE_C.id])


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fleetctl.commands.rollout.POLL", 0.01)


@dataclass
class GlobalCluster(FakeCluster):
    """Every machine's agent runs the Global units at their pinned hash, else the unit's; records the
    hashes each machine ran (``ran``) and the most machines seen not running the unit at its meant hash."""

    ran: dict[str, list[str]] = field(default_factory=dict)

    async def _reconcile(self) -> None:
        machines = [m.id for m in await self.registry.list_machines()]
        for unit in await self.registry.list_units():
            if not unit.is_global:
                continue
            pins = await self.registry.get_pins(unit.name, machines)
            for machine_id in machines:
                unit_hash = pins.get(machine_id, unit.hash)
                active = "failed" if unit_hash in self.fail_active else "active"
                want = UnitState(unit.name, machine_id, "loaded", active, "x", unit_hash, unit.target_state)
                seen = self.ran.setdefault(machine_id, [])
                if not seen or seen[-1] != unit_hash:
                    seen.append(unit_hash)
                    await self.registry.publish_state(want, self.lease)


def _cluster() -> GlobalCluster:
    cluster = GlobalCluster()
    cluster.add_machines(MACHINE_A, MACHINE_B, MACHINE_C)
    cluster.submit(MON, OLD, TargetState.LAUNCHED)
    cluster.run(cluster._reconcile())
    return cluster


def _file(tmp_path: Path, text: str) -> str:
    path = tmp_path / MON
    path.write_text(text)
    return str(path)


def _rollout(cluster: FakeCluster) -> records.Rollout | None:
    kv = cluster.run(cluster.kv.get(cluster.registry.keys.rollout(MON)))
    return None if kv is None else records.decode_rollout(kv.key, kv.value)


def _pins(cluster: FakeCluster) -> dict[MachineID, str]:
    return cluster.run(cluster.registry.get_pins(MON, IDS))


def _hash(cluster: FakeCluster) -> str:
    return {r.name: r.hash for r in cluster.run(cluster.registry.list_units())}[MON]


def _interrupted() -> GlobalCluster:
    """A cluster as an update interrupted after one machine leaves it: the record, the other two machines
    pinned to the old body, the unit at the new body."""
    cluster = _cluster()
    record = records.Rollout(MON, NEW_HASH, UnitFile.from_text(NEW).canonical, (MON,), {MON: OLD_HASH},
                             {OLD_HASH: UnitFile.from_text(OLD).canonical}, 1, machines=tuple(IDS),
                             machines_replaced=(IDS[0],))
    cluster.run(cluster.kv.put(cluster.registry.keys.rollout(MON), records.encode_rollout(record)))
    cluster.run(cluster.registry.set_pins(MON, IDS[1:], OLD_HASH))
    cluster.submit(MON, NEW, TargetState.LAUNCHED)
    return cluster


def test_dry_run_lists_the_machine_steps_and_writes_nothing(tmp_path: Path) -> None:
    cluster = _cluster()
    args = ["rolling-update", "--dry-run", "--max-unavailable", "2", MON, _file(tmp_path, NEW)]
    result = cluster.invoke(args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"Step 1/2: update {MON} on {IDS[0]} {IDS[1]}\nStep 2/2: update {MON} on {IDS[2]}\n"
    )
    assert _hash(cluster) == OLD_HASH and _rollout(cluster) is None and _pins(cluster) == {}


def test_a_global_unit_is_updated_one_machine_at_a_time(tmp_path: Path) -> None:
    cluster = _cluster()
    result = cluster.invoke(["rolling-update", MON, _file(tmp_path, NEW)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line for line in lines if line.startswith("Updating")] == [f"Updating {MON} on {m}" for m in IDS]
    assert lines[-1] == f"Rolled out {MON} ({NEW_HASH[:7]}) to 3 machines"
    assert _hash(cluster) == NEW_HASH and _pins(cluster) == {}
    assert all(cluster.ran[m] == [OLD_HASH, NEW_HASH] for m in IDS)  # no machine restarted twice
    done = _rollout(cluster)
    assert done is not None and done.phase == "done" and done.machines_replaced == tuple(IDS)


def test_a_failure_on_a_machine_pins_the_replaced_ones_back_and_restores_the_unit(tmp_path: Path) -> None:
    cluster = _cluster()
    cluster.fail_active.add(NEW_HASH)
    result = cluster.invoke(["rolling-update", MON, _file(tmp_path, NEW)])
    assert result.exit_code == 1
    assert f"Rolling back: {IDS[0]} failed at the new body" in result.stdout
    assert f"Restoring {MON} on {IDS[0]}" in result.stdout
    assert result.stderr == (
        f"Error: rolling update of {MON} failed and was rolled back: {IDS[0]} failed at the new body\n"
    )
    assert _hash(cluster) == OLD_HASH and _pins(cluster) == {}
    assert cluster.ran[IDS[1]] == [OLD_HASH] and cluster.ran[IDS[2]] == [OLD_HASH]  # never touched


def test_an_interrupted_global_update_resumes_from_its_record_and_pins(tmp_path: Path) -> None:
    cluster = _interrupted()
    result = cluster.invoke(["rolling-update", MON, _file(tmp_path, NEW)])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"Resuming the rolling update of {MON} (rolling, 0 replaced)"
    assert [line for line in result.stdout.splitlines() if line.startswith("Updating")] == [
        f"Updating {MON} on {m}" for m in IDS[1:]
    ]
    assert _hash(cluster) == NEW_HASH and _pins(cluster) == {}



def test_abort_releases_the_machines_still_held_at_the_old_file(tmp_path: Path) -> None:
    cluster = _interrupted()
    result = cluster.invoke(["rolling-update", "--abort", MON])
    assert (result.exit_code, result.stderr) == (0, "")
    assert result.stdout == f"Dropped the rolling update of {MON}; released 2 machines held at the old file\n"
    assert _rollout(cluster) is None and _pins(cluster) == {}


def test_abort_of_an_unreadable_record_releases_the_unit_s_pins_on_every_machine() -> None:
    cluster = _cluster()
    cluster.run(cluster.kv.put(cluster.registry.keys.rollout(MON), "{not json"))
    cluster.run(cluster.registry.set_pins(MON, IDS, OLD_HASH))
    result = cluster.invoke(["rolling-update", "--abort", MON])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"Dropped the rolling update of {MON}; released 3 machines")
    assert _rollout(cluster) is None and _pins(cluster) == {}
