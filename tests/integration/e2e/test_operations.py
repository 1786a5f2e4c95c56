"""Operating a cluster on the real one: rolling updates (a probe polling the instances meanwhile counts how
many are down at once), their roll back, Reschedule=on-failure, and drain/uncordon."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.integration.e2e.harness import FIXTURES, FleetCluster, eventually
from tests.integration.e2e.waits import active_units, list_units, wait_for_active

INSTANCES = [f"roll@{n}.service" for n in range(1, 5)]
V2 = """[Unit]
Description=Rolling update subject, version 2, instance %i

[Service]
ExecStartPre=/bin/sleep 2
ExecStart=/bin/bash -c "while true; do echo roll version 2; sleep 1; done"

[X-Fleet]
HealthCheck=test -d /run/systemd/system
"""
BROKEN = """[Unit]
Description=Rolling update subject that cannot start

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/false
"""


@dataclass
class Probe:
    """Polls ``list-units`` until stopped: per sample, how many of ``names`` are not active anywhere."""

    fleet: FleetCluster
    names: list[str]
    samples: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            rows = list_units(self.fleet)
            if rows is not None:
                active = active_units(rows)
                self.samples.append(sum(1 for name in self.names if name not in active))


@contextmanager
def probing(fleet: FleetCluster, names: list[str]) -> Iterator[Probe]:
    probe = Probe(fleet, names)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        yield probe
    finally:
        probe.stop.set()
        thread.join(timeout=60)


def _hashes(fleet: FleetCluster) -> dict[str, str]:
    out = fleet.ok("list-unit-files", "--no-legend", "--full", "--fields", "unit,hash")
    return dict(line.split() for line in out.splitlines() if line.startswith("roll@"))


def test_rolling_update_keeps_at_most_max_unavailable_instances_down(
    fleet: FleetCluster, tmp_path: Path
) -> None:
    fleet.ok("start", *INSTANCES)
    wait_for_active(fleet, len(INSTANCES))
    new = str(tmp_path / "roll@.service")
    (tmp_path / "roll@.service").write_text(V2)
    dry = fleet.ok("rolling-update", "--dry-run", "--max-unavailable", "2", "roll@*", new)
    assert dry == (
        "Step 1/2: replace roll@1.service roll@2.service\nStep 2/2: replace roll@3.service roll@4.service\n"
    )
    with probing(fleet, INSTANCES) as probe:
        out = fleet.ok(
            "rolling-update", "--max-unavailable", "2", "--min-healthy-time", "2s", "roll@*", new, timeout=300
        )
        time.sleep(1)  # a last sample or two after the end
    assert "Replacing roll@1.service roll@2.service\n" in out
    assert "Replacing roll@3.service roll@4.service\n" in out
    assert out.splitlines()[-1].startswith("Rolled out roll@.service (")
    print(f"\nrolling update probe: {len(probe.samples)} samples, most down at once {max(probe.samples)}"
          f" (max-unavailable 2), samples with some down {sum(1 for s in probe.samples if s)}")
    assert max(probe.samples) <= 2, probe.samples
    assert any(probe.samples), "the probe never saw an instance restart: it measured nothing"
    assert len(set(_hashes(fleet).values())) == 1
    wait_for_active(fleet, len(INSTANCES))
    journal = fleet.ok("journal", "--lines", "3", "roll@1.service")
    assert "roll version 2" in journal  # the agent restarted it with the new body


def test_a_rolling_update_that_fails_is_rolled_back(fleet: FleetCluster, tmp_path: Path) -> None:
    fleet.ok("start", *INSTANCES[:3])
    wait_for_active(fleet, 3)
    before = _hashes(fleet)
    (tmp_path / "roll@.service").write_text(BROKEN)
    code, out, err = fleet.fleetctl("rolling-update", "roll@*", str(tmp_path / "roll@.service"), timeout=300)
    assert code == 1, (out, err)
    assert "Rolling back: roll@1.service failed at the new body" in out
    assert err.startswith("Error: rolling update of roll@.service failed and was rolled back:")
    assert _hashes(fleet) == before
    placed = wait_for_active(fleet, 3)
    assert sorted(placed) == INSTANCES[:3]
    assert "roll@2.service" not in out  # the one step that failed was rolled back; nothing else was touched


def test_reschedule_on_failure_moves_a_failed_unit_a_bounded_number_of_times(fleet: FleetCluster) -> None:
    fleet.fleetctl("start", "--no-block", "flaky.service")
    machines: set[str] = set()  # where list-unit-files saw it (a move may fall between two looks)

    def where() -> str:
        fields = ("--no-legend", "--full", "--fields", "unit,target,reason")
        code, out, _ = fleet.fleetctl("list-unit-files", *fields)
        line = next((line for line in out.splitlines() if line.startswith("flaky.service")), None)
        if code != 0 or line is None:
            return ""  # etcd slow to answer on a loaded host: look again
        cells = line.split(maxsplit=2)
        if cells[1] != "-":
            machines.add(cells[1].split("/")[0])
        return cells[2] if len(cells) > 2 else ""

    used_up = "left failed after 2 reschedule attempts"
    reason = eventually(where, lambda r: used_up in r, 120, "attempts used up")
    assert machines, "list-unit-files never showed where it was"
    started_on = [m for m in fleet.machines if "Fails wherever" in fleet.journal(m, "-u", "flaky.service")]
    assert len(started_on) == 3  # failed on its first machine, then moved twice: to each of the others
    settled = fleet.ok("list-unit-files", "--no-legend", "--full", "--fields", "unit,target")
    time.sleep(5)  # bounded: it does not move again
    assert fleet.ok("list-unit-files", "--no-legend", "--full", "--fields", "unit,target") == settled
    assert used_up in reason
    listed = fleet.ok("list-units", "--no-legend", "--fields", "unit,active,reason")
    rows = [line for line in listed.splitlines() if line.split()[:2] == ["flaky.service", "failed"]]
    assert rows and used_up in rows[0], listed
    status_code, status_out, _ = fleet.fleetctl("status", "flaky.service")
    assert status_out.startswith("Unit flaky.service: failed on Machine("), status_out
    assert status_code != 0  # systemctl status of a failed unit


def test_drain_moves_units_away_and_uncordon_lets_them_back(fleet: FleetCluster) -> None:
    names = [f"hello@{n}.service" for n in range(1, 4)]
    fleet.ok("start", *names)
    placed = wait_for_active(fleet, 3)
    target = placed[names[0]][0]
    try:
        out = fleet.ok("drain", "--timeout", "120s", target, timeout=180)
        assert out.startswith(f"Machine {target} cordoned\n") and out.endswith(f"Machine {target} drained\n")
        after = active_units(list_units(fleet))
        assert all(target not in after.get(name, [target]) for name in names), after
        assert _machine_state(fleet, target) == "cordoned"
        fleet.ok("start", str(FIXTURES / "hello.service"))
        assert target not in wait_for_active(fleet, 4)["hello.service"]
    finally:
        fleet.fleetctl("uncordon", target)
    assert _machine_state(fleet, target) == "schedulable"


def _machine_state(fleet: FleetCluster, machine_id: str) -> str:
    out = fleet.ok("list-machines", "--no-legend", "--full", "--fields", "machine,state")
    return dict(line.split() for line in out.splitlines())[machine_id]


GLOBAL_V1 = """[Service]
ExecStart=/bin/bash -c "while true; do echo rollg version 1; sleep 1; done"

[X-Fleet]
Global=true
"""
GLOBAL_V2 = """[Service]
ExecStartPre=/bin/sleep 2
ExecStart=/bin/bash -c "while true; do echo rollg version 2; sleep 1; done"

[X-Fleet]
Global=true
"""


@dataclass
class GlobalProbe:
    """Polls ``list-units`` until stopped: per sample, on how many of ``machines`` ``name`` is not active."""

    fleet: FleetCluster
    name: str
    machines: int
    samples: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            rows = list_units(self.fleet)
            if rows is not None:
                self.samples.append(self.machines - len(set(active_units(rows).get(self.name, []))))


def test_a_global_unit_is_rolled_machine_by_machine(fleet: FleetCluster, tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    v1, v2 = tmp_path / "v1" / "rollg.service", tmp_path / "v2" / "rollg.service"
    v1.write_text(GLOBAL_V1)
    v2.write_text(GLOBAL_V2)
    fleet.ok("start", str(v1))
    machines = len(wait_for_active(fleet, 3)["rollg.service"])
    assert machines == 3
    dry = fleet.ok("rolling-update", "--dry-run", "rollg.service", str(v2))
    assert [line.split(":")[0] for line in dry.splitlines()] == ["Step 1/3", "Step 2/3", "Step 3/3"], dry
    probe = GlobalProbe(fleet, "rollg.service", machines)
    thread = threading.Thread(target=probe.run, daemon=True)
    thread.start()
    try:
        out = fleet.ok(
            "rolling-update", "--max-unavailable", "1", "--min-healthy-time", "2s", "rollg.service", str(v2),
            timeout=300,
        )
        time.sleep(1)  # a last sample or two after the end
    finally:
        probe.stop.set()
        thread.join(timeout=60)
    down = sum(1 for sample in probe.samples if sample)
    print(f"\nglobal rolling update probe: {len(probe.samples)} samples, most machines down at once"
          f" {max(probe.samples)} (max-unavailable 1), samples with one down {down}")
    assert max(probe.samples) <= 1, probe.samples
    assert any(probe.samples), "the probe never saw a machine restart the unit: it measured nothing"
    assert out.splitlines()[-1].startswith("Rolled out rollg.service ("), out
    placed = wait_for_active(fleet, 3)["rollg.service"]
    assert len(set(placed)) == machines
    for machine in placed:  # every machine restarted it with the new body
        journal = fleet.ok("ssh", "--machine", machine, "journalctl", "-u", "rollg.service", "-n", "3",
                           "--no-pager")
        assert "rollg version 2" in journal, (machine, journal)
