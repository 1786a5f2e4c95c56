"""rolling-update on the fake cluster: steps, roll back, resume, health check, --dry-run, --abort."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from fleetctl.cli import cli
from fleetctl.context import App
from fleetd.model import MachineState, TargetState, UnitName
from fleetd.registry import records
from fleetd.unitfile.unit import UnitFile
from tests.unit.fleetctl.conftest import MACHINE_A, FakeCluster

OLD = "[Service]\nExecStart=/bin/sleep 100\n"
NEW = "[Service]\nExecStart=/bin/sleep 200\n"
CHECKED = NEW + "\n[X-Fleet]\nHealthCheck=test -e /run/web-ready\n"
NAMES = [f"web@{i}.service" for i in (1, 2, 10)]


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("fleetctl.commands.rollout.POLL", 0.01)


def _cluster(*names: str, body: str = OLD) -> FakeCluster:
    cluster = FakeCluster()
    cluster.add_machines(MACHINE_A)
    cluster.submit("web@.service", body)
    for name in names or NAMES:
        cluster.submit(name, body, TargetState.LAUNCHED)
    return cluster


def _file(tmp_path: Path, text: str, name: str = "web@.service") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _hashes(cluster: FakeCluster) -> dict[str, str]:
    return {r.name: r.hash for r in cluster.run(cluster.registry.list_units())}


def _rollout(cluster: FakeCluster) -> records.Rollout | None:
    kv = cluster.run(cluster.kv.get(cluster.registry.keys.rollout("web@.service")))
    return None if kv is None else records.decode_rollout(kv.key, kv.value)


@dataclass
class _Runner:
    """A Runner whose commands exit with ``code``; it records (machine, argv)."""

    code: int
    calls: list[tuple[str, Sequence[str]]]

    def run(self, machine: MachineState, argv: Sequence[str], port: int) -> int:
        self.calls.append((machine.id, argv))
        return self.code

    def shell(self, machine: MachineState, port: int, forward_agent: bool) -> int:
        raise AssertionError("not used")

    def run_ssh(self, machine: MachineState, argv: Sequence[str], port: int, forward_agent: bool) -> int:
        raise AssertionError("not used")


@dataclass
class _AppWithRunner(App):
    remote_runner: Any = None


def _invoke(cluster: FakeCluster, args: list[str], runner: _Runner | None = None) -> Result:
    @contextlib.contextmanager
    def factory(*_: object) -> Iterator[_Runner | None]:
        yield runner

    app = _AppWithRunner(connect=cluster.connect, tty=False, attempt_seconds=0.05, remote_runner=factory)
    return CliRunner().invoke(cli, args, obj=app, catch_exceptions=False)


NEW_HASH = UnitFile.from_text(NEW).hash


def test_dry_run_prints_the_steps_and_writes_nothing(tmp_path: Path) -> None:
    cluster = _cluster()
    before = _hashes(cluster)
    args = ["rolling-update", "--dry-run", "--max-unavailable", "2", "web@*", _file(tmp_path, NEW)]
    result = _invoke(cluster, args)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Step 1/2: replace web@1.service web@2.service\nStep 2/2: replace web@10.service\n"
    )
    assert _hashes(cluster) == before and _rollout(cluster) is None


def test_every_instance_and_the_template_get_the_new_body_a_step_at_a_time(tmp_path: Path) -> None:
    cluster = _cluster()
    result = _invoke(cluster, ["rolling-update", "--max-unavailable", "2", "web@*", _file(tmp_path, NEW)])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Replacing web@1.service web@2.service"
    assert "Replacing web@10.service" in lines
    assert lines[-1] == f"Rolled out web@.service ({NEW_HASH[:7]}) to 3 units"
    assert set(_hashes(cluster).values()) == {NEW_HASH}
    assert cluster.targets()["web@1.service"] is TargetState.LAUNCHED
    done = _rollout(cluster)
    assert done is not None and done.phase == "done"


def test_a_unit_failing_at_the_new_body_rolls_the_replaced_ones_back(tmp_path: Path) -> None:
    cluster = _cluster()
    before = _hashes(cluster)
    cluster.fail_active.add(NEW_HASH)
    result = _invoke(cluster, ["rolling-update", "--max-unavailable", "2", "web@*", _file(tmp_path, NEW)])
    assert result.exit_code == 1
    assert "Rolling back: web@1.service failed at the new body" in result.stdout
    assert "Restoring web@1.service web@2.service" in result.stdout
    assert result.stderr == (
        "Error: rolling update of web@.service failed and was rolled back: web@1.service failed at the new"
        " body\n"
    )
    assert _hashes(cluster) == before  # instances and template back at their old body
    failed = _rollout(cluster)
    assert failed is not None and failed.phase == "failed"


def test_an_interrupted_update_resumes_from_its_record(tmp_path: Path) -> None:
    cluster = _cluster()
    path = _file(tmp_path, NEW)
    old = _hashes(cluster)
    names = tuple(UnitName(n) for n in NAMES)
    record = records.Rollout(
        UnitName("web@.service"), NEW_HASH, UnitFile.from_text(NEW).canonical, names,
        {n: old[n] for n in names}, {old[names[0]]: UnitFile.from_text(OLD).canonical}, 1,
    )
    cluster.run(cluster.kv.put(cluster.registry.keys.rollout("web@.service"), records.encode_rollout(record)))
    (tmp_path / "other").mkdir()
    other = _invoke(cluster, ["rolling-update", "web@*", _file(tmp_path / "other", CHECKED)])
    assert other.exit_code == 1
    assert "an unfinished rolling update of web@.service to another body" in other.stderr
    result = _invoke(cluster, ["rolling-update", "web@*", path])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("Resuming the rolling update of web@.service (rolling, 0 replaced)\n")
    assert {_hashes(cluster)[n] for n in NAMES} == {NEW_HASH}


def test_a_health_check_runs_on_the_unit_machine_and_must_pass(tmp_path: Path) -> None:
    cluster = _cluster("web@1.service")
    runner = _Runner(0, [])
    result = _invoke(cluster, ["rolling-update", "web@*", _file(tmp_path, CHECKED)], runner)
    assert result.exit_code == 0, result.stderr
    assert runner.calls == [(MACHINE_A.id, ["sh", "-c", "test -e /run/web-ready"])]


def test_a_health_check_that_keeps_failing_rolls_back_after_the_step_timeout(tmp_path: Path) -> None:
    cluster = _cluster("web@1.service")
    before = _hashes(cluster)
    result = _invoke(
        cluster, ["rolling-update", "--step-timeout", "1s", "web@*", _file(tmp_path, CHECKED)], _Runner(1, [])
    )
    assert result.exit_code == 1
    assert "Waiting: web@1.service's health check fails" in result.stdout
    assert "not healthy within 1s (web@1.service's health check fails)" in result.stderr
    assert _hashes(cluster) == before


def test_abort_drops_the_record(tmp_path: Path) -> None:
    cluster = _cluster()
    cluster.fail_active.add(NEW_HASH)
    _invoke(cluster, ["rolling-update", "web@*", _file(tmp_path, NEW)])
    result = _invoke(cluster, ["rolling-update", "--abort", "web@.service"])
    assert (result.exit_code, result.stdout) == (0, "Dropped the rolling update of web@.service\n")
    assert _rollout(cluster) is None


def test_bad_arguments_are_refused_with_one_line(tmp_path: Path) -> None:
    cluster = _cluster()
    missing = _invoke(cluster, ["rolling-update", "web@*"])
    assert missing.exit_code == 2 and "needs UNITS and the new unit FILE" in missing.stderr
    none = _invoke(cluster, ["rolling-update", "api@*", _file(tmp_path, NEW, "api@.service")])
    assert none.exit_code == 1
    assert none.stderr == "Error: no unit in the cluster matches api@* (for api@.service)\n"
    global_file = _file(tmp_path, OLD + "\n[X-Fleet]\nGlobal=true\n", "mon.service")
    cluster.submit("mon.service", OLD + "\n[X-Fleet]\nGlobal=true\n", TargetState.LAUNCHED)
    refused = _invoke(cluster, ["rolling-update", "mon.service", global_file])  # no agent runs it here
    assert refused.exit_code == 1
    assert refused.stderr == "Error: no machine runs the Global unit mon.service; start it first\n"
    not_global = _invoke(cluster, ["rolling-update", "mon.service", _file(tmp_path, NEW, "mon.service")])
    assert not_global.stderr == "Error: mon.service is a Global unit and the new file is not (Global=true)\n"
