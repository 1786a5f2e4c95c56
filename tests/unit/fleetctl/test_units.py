"""submit/load/start/stop/unload/destroy/restart through the CLI on MemoryKV with an agent stand-in."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fleetctl.verify import verify_paths
from fleetd.model import TargetState, UnitName, UnitState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import UnitRecord
from fleetd.unitfile.body import MAX_BODY_BYTES
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, FakeCluster

TEMPLATE = "[Unit]\nDescription=Hello %i\n\n[Service]\nExecStart=/bin/sleep 100\n"
OTHER = "[Service]\nExecStart=/bin/sleep 200\n"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hello.service").write_text(HELLO)
    (tmp_path / "hello@.service").write_text(TEMPLATE)
    return tmp_path


@pytest.mark.parametrize("command", ["submit", "load", "start", "stop", "unload", "destroy", "restart"])
def test_no_units_given(cluster: FakeCluster, command: str) -> None:
    result = cluster.invoke([command])
    assert result.exit_code == 2
    assert result.stderr == "No units given\n"


def test_submit_creates_inactive(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["submit", "hello"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Unit hello.service inactive\n"
    assert cluster.targets() == {"hello.service": TargetState.INACTIVE}


def test_start_creates_loads_and_waits_for_active(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["start", "hello.service"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Unit hello.service inactive\nUnit hello.service launched on 1a2b3c4d.../127.0.0.12\n"
    )
    assert cluster.targets() == {"hello.service": TargetState.LAUNCHED}


def test_start_of_a_submitted_unit_prints_only_the_launch(cluster: FakeCluster, workdir: Path) -> None:
    cluster.submit("hello.service", HELLO)
    result = cluster.invoke(["start", "hello"])
    assert result.stdout == "Unit hello.service launched on 1a2b3c4d.../127.0.0.12\n"


def test_load_waits_for_loaded(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["load", "hello"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "Unit hello.service loaded on 1a2b3c4d.../127.0.0.12"


def test_no_block_triggers(cluster: FakeCluster, workdir: Path) -> None:
    cluster.agent = False
    result = cluster.invoke(["start", "--no-block", "hello"])
    assert result.exit_code == 0
    assert result.stdout == "Unit hello.service inactive\nTriggered unit hello.service start\n"


def test_global_units_are_triggered_not_waited(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "g.service").write_text("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nGlobal=true\n")
    cluster.agent = False
    result = cluster.invoke(["start", "g"])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[-1] == "Triggered global unit g.service start"


def test_wait_times_out_after_the_attempts(cluster: FakeCluster, workdir: Path) -> None:
    cluster.agent = False
    result = cluster.invoke(["start", "--block-attempts", "2", "hello"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error waiting for units: timed out waiting for unit hello.service to report state launched\n"
    )


def test_start_and_load_fail_at_once_with_the_engines_reason_when_no_machine_can_run_the_unit(
    cluster: FakeCluster, workdir: Path
) -> None:
    cluster.unplaceable["hello.service"] = "no machine has the metadata role=nonesuch"
    for command in ("start", "load"):
        result = cluster.invoke([command, "hello"])  # no budget: only the reason can end the wait
        assert result.exit_code == 1, result.output
        assert result.stderr == (
            "Error waiting for units: unit hello.service cannot be placed:"
            " no machine has the metadata role=nonesuch\n"
        )


def test_list_unit_files_shows_why_a_unit_is_not_placed(cluster: FakeCluster, workdir: Path) -> None:
    cluster.unplaceable["hello.service"] = "no machine has the metadata role=nonesuch"
    assert cluster.invoke(["submit", "hello"]).exit_code == 0
    assert cluster.invoke(["start", "hello"]).exit_code == 1
    result = cluster.invoke(["list-unit-files", "--no-legend", "--fields", "unit,target,reason"])
    assert result.stdout == "hello.service\t-\tno machine has the metadata role=nonesuch\n"


def test_a_reason_published_for_another_version_of_the_unit_does_not_end_the_wait(
    cluster: FakeCluster, workdir: Path
) -> None:
    other = ks.encode_unplaceable(ks.Unplaceable("0" * 40, "an older body could not be placed"))
    cluster.run(cluster.kv.put(cluster.registry.keys.unplaceable_unit("hello.service"), other))
    result = cluster.invoke(["start", "hello"])
    assert result.exit_code == 0, result.output
    assert "Unit hello.service launched on" in result.stdout


def test_start_fails_within_seconds_when_systemd_reports_the_unit_failed(
    cluster: FakeCluster, workdir: Path
) -> None:
    cluster.fail_active.add("hello.service")
    result = cluster.invoke(["start", "hello"])  # no budget: only the failure can end the wait
    assert result.exit_code == 1
    assert result.stderr == (
        "Error waiting for units: unit hello.service failed to start on 1a2b3c4d.../127.0.0.12"
        " (systemd: loaded/failed/failed); see its journal: fleetctl journal hello.service\n"
    )


def test_start_of_several_names_every_failed_unit(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "other.service").write_text(OTHER)
    cluster.fail_active.update({"hello.service", "other.service"})
    result = cluster.invoke(["start", "hello", "other"])
    assert result.exit_code == 1
    assert "unit hello.service failed to start" in result.stderr
    assert "unit other.service failed to start" in result.stderr
    assert "fleetctl journal other.service" in result.stderr


def test_start_of_an_already_failed_unit_fails_at_once(cluster: FakeCluster, workdir: Path) -> None:
    cluster.fail_active.add("hello.service")
    assert cluster.invoke(["start", "--no-block", "hello"]).exit_code == 0
    result = cluster.invoke(["start", "hello"])
    assert result.exit_code == 1
    assert "(systemd: loaded/failed/failed)" in result.stderr


def test_restart_fails_when_the_start_fails(cluster: FakeCluster, workdir: Path) -> None:
    assert cluster.invoke(["start", "hello"]).exit_code == 0
    cluster.fail_active.add("hello.service")
    result = cluster.invoke(["restart", "hello"])
    assert result.exit_code == 1
    assert "unit hello.service failed to start" in result.stderr


def test_load_ignores_systemd_failure(cluster: FakeCluster, workdir: Path) -> None:
    cluster.fail_active.add("hello.service")
    assert cluster.invoke(["load", "hello"]).exit_code == 0


def test_timeout_names_systemds_states_and_the_journal(cluster: FakeCluster, workdir: Path) -> None:
    cluster.stuck_activating.add("hello.service")
    result = cluster.invoke(["start", "--timeout", "300ms", "hello"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error waiting for units: timed out waiting for unit hello.service to report state launched"
        " (systemd: loaded/activating/start); see its journal: fleetctl journal hello.service\n"
    )


@pytest.mark.parametrize("timeout", ["0.2", "200ms"])
def test_timeout_overrides_block_attempts(cluster: FakeCluster, workdir: Path, timeout: str) -> None:
    cluster.agent = False
    began = time.monotonic()
    result = cluster.invoke(["start", "--block-attempts", "10000", "--timeout", timeout, "hello"])
    assert time.monotonic() - began < 5
    assert result.exit_code == 1
    assert "timed out waiting for unit hello.service to report state launched" in result.stderr


def _running(cluster: FakeCluster) -> None:
    cluster.submit("hello.service", HELLO, TargetState.LAUNCHED)
    cluster.publish(
        UnitState(
            UnitName("hello.service"), MACHINE_A.id, "loaded", "active", "running", "h", TargetState.LAUNCHED
        )
    )
    cluster.agent = False


@pytest.mark.parametrize(
    ("command", "stderr"),
    [
        ("load", "Error waiting for units: timed out waiting for unit hello.service to report state loaded"),
        ("stop", "Failed to stop units [hello.service]. err: timed out waiting for unit hello.service"),
        ("unload", "Failed to unload units [hello.service]. err: timed out waiting for unit hello.service"),
        (
            "destroy",
            "Error destroying units: timed out waiting for unit hello.service to report state inactive",
        ),
    ],
)
def test_every_blocking_command_takes_a_timeout(
    cluster: FakeCluster, workdir: Path, command: str, stderr: str
) -> None:
    if command == "load":
        cluster.agent = False
    else:
        _running(cluster)
    result = cluster.invoke([command, "--timeout", "0.2", "hello.service"])
    assert result.exit_code == 1
    assert result.stderr.startswith(stderr)


@pytest.mark.parametrize("value", ["soon", "-1s", "25h", "nan"])
def test_bad_timeouts_are_usage_errors(cluster: FakeCluster, value: str) -> None:
    result = cluster.invoke(["start", "--timeout", value, "hello"])
    assert result.exit_code == 2
    assert "Invalid value for '--timeout'" in result.stderr


def test_timeout_zero_means_no_limit(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["start", "--block-attempts", "1", "--timeout", "0", "hello"])
    assert result.exit_code == 0, result.stderr


def test_templates_instances_from_a_local_template(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["start", "hello@1", "hello@2.service"])
    assert result.exit_code == 0, result.stderr
    assert "Unit hello@1.service launched on 1a2b3c4d.../127.0.0.12" in result.stdout
    assert "Unit hello@2.service launched on 1a2b3c4d.../127.0.0.12" in result.stdout
    cat = cluster.invoke(["cat", "hello@1"])
    assert cat.stdout == TEMPLATE.rstrip("\n") + "\n"


def test_instance_from_a_template_in_the_registry(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cluster.submit("web@.service", TEMPLATE)
    result = cluster.invoke(["load", "web@7"])
    assert result.exit_code == 0, result.stderr
    assert cluster.targets()["web@7.service"] is TargetState.LOADED


def test_errors_creating_units(cluster: FakeCluster, workdir: Path) -> None:
    cases = {
        (
            "start",
            "nothere",
        ): "Error creating units: unable to find Unit(nothere.service) in Registry or on filesystem",
        (
            "load",
            "a@1",
        ): "Error creating units: failed getting Unit(a@1.service) from template: unable to find"
        " template Unit(a@.service) in Registry or on filesystem",
        ("submit", "bad name"): "Error creating units: invalid character ' ' in unit name",
    }
    for args, message in cases.items():
        result = cluster.invoke(list(args))
        assert result.exit_code == 1, args
        assert result.stderr == message + "\n"


def test_unparseable_file_names_file_and_line(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "broken.service").write_text("[Service]\nExecStart=/bin/true\n[Unit\n")
    result = cluster.invoke(["submit", "broken.service"])
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error creating units: failed getting Unit(broken.service) from file: broken.service:3: "
    )


def test_invalid_xfleet_combination(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "x.service").write_text("[X-Fleet]\nMachineID=abc\nGlobal=true\n")
    result = cluster.invoke(["submit", "x"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error creating units: failed getting Unit(x.service) from file: x.service:3: MachineID cannot be"
        " used with Global\n"
    )
    assert cluster.targets() == {}


def test_unknown_xfleet_key_warns(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "x.service").write_text("[Service]\nExecStart=/bin/true\n\n[X-Fleet]\nBogus=1\n")
    result = cluster.invoke(["submit", "x"])
    assert result.exit_code == 0
    assert 'Unit x.service: unrecognized requirement in [X-Fleet] section: "Bogus"' in result.stderr


def test_cannot_activate_a_template(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["start", "hello@.service"])
    assert result.exit_code == 1
    assert result.stderr == 'Error starting units: cannot activate template "hello@.service"\n'


def test_an_error_writes_nothing(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["submit", "hello", "nothere"])
    assert result.exit_code == 1
    assert cluster.targets() == {}


LATIN1 = "[Unit]\nDescription=caf\xe9\n".encode("latin-1")
BAD_FILES = [
    pytest.param(LATIN1, "bad.service: not valid UTF-8 text (line 2); save it as UTF-8", id="not UTF-8"),
    pytest.param(b"[Unit]\n" + b"\n" * MAX_BODY_BYTES,
                 f"bad.service: unit file is {MAX_BODY_BYTES + 7} bytes; the limit is {MAX_BODY_BYTES} bytes"
                 " (1 MiB): make it smaller", id="over 1 MiB"),
    pytest.param(b"[Unit]\nA=b\x00\n", "bad.service: contains a NUL character (line 2); a unit file is text:"
                 " remove it", id="NUL"),
    pytest.param(b"[Service]\nExecStart=/bin/true \\", "bad.service:2: ExecStart: the backslash at the end of"
                 " the file continues nothing; remove it or add the next line",
                 id="backslash at end of file"),
    pytest.param(b"[X-Fleet]\nConflicts=b*\nMachineOf=bar.service\n", 'bad.service:3: unresolvable'
                 ' requirements: peer "bar.service" matches conflict "b*"', id="invalid [X-Fleet]"),
]


@pytest.mark.parametrize("command", ["submit", "load", "start"])
@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_a_bad_file_among_good_ones_writes_nothing(
    cluster: FakeCluster, workdir: Path, command: str, data: bytes, message: str
) -> None:
    (workdir / "bad.service").write_bytes(data)
    revision = cluster.kv.revision
    result = cluster.invoke([command, "hello", "hello@1", "bad.service"])
    assert result.exit_code == 1
    assert result.stderr == f"Error creating units: failed getting Unit(bad.service) from file: {message}\n"
    assert cluster.kv.revision == revision


@pytest.mark.parametrize(("data", "message"), BAD_FILES)
def test_verify_rejects_what_submit_rejects(workdir: Path, data: bytes, message: str) -> None:
    (workdir / "bad.service").write_bytes(data)
    report = verify_paths(["bad.service"], canonical=False)
    assert report.exit_code == 1
    assert report.stderr.splitlines()[0] == message


def test_a_bad_template_in_the_registry_is_not_instantiated(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "hello@.service").unlink()
    cluster.run(cluster.registry.put_units([(UnitRecord(UnitName("t@.service"), "ab" * 20, False,
                                                        TargetState.INACTIVE), "[Unit]\nA=b\x00\n")]))
    revision = cluster.kv.revision
    result = cluster.invoke(["start", "t@1"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Error creating units: template Unit(t@.service) in the Registry cannot be used: contains a NUL"
        " character (line 2); a unit file is text: remove it; replace it (fleetctl submit --replace"
        " t@.service) or destroy it\n"
    )
    assert cluster.kv.revision == revision


# --replace ------------------------------------------------------------------------------------------------


def test_differs_without_replace_warns_and_keeps(cluster: FakeCluster, workdir: Path) -> None:
    cluster.submit("hello.service", OTHER)
    result = cluster.invoke(["submit", "hello"])
    assert result.exit_code == 0
    assert result.stderr == (
        "WARNING: Unit hello.service in registry differs from local unit file hello.service."
        " Add --replace to override.\n"
    )
    assert "sleep 200" in cluster.invoke(["cat", "hello"]).stdout


def test_instance_differs_from_local_template(cluster: FakeCluster, workdir: Path) -> None:
    cluster.submit("hello@1.service", OTHER)
    result = cluster.invoke(["submit", "hello@1"])
    assert "differs from local template unit file hello@.service. Add --replace to override." in result.stderr


def test_replace_same_content(cluster: FakeCluster, workdir: Path) -> None:
    cluster.submit("hello.service", HELLO)
    result = cluster.invoke(["submit", "--replace", "hello"])
    assert result.exit_code == 0
    assert result.stdout == "Found same Unit(hello.service) in Registry, nothing to do\n"


@pytest.mark.parametrize(
    ("command", "target", "allowed"),
    [
        ("submit", TargetState.INACTIVE, True),
        ("submit", TargetState.LOADED, False),
        ("load", TargetState.LOADED, True),
        ("load", TargetState.LAUNCHED, False),
        ("start", TargetState.LAUNCHED, True),
    ],
)
def test_replace_rules(
    cluster: FakeCluster, workdir: Path, command: str, target: TargetState, allowed: bool
) -> None:
    cluster.submit("hello.service", OTHER, target)
    result = cluster.invoke([command, "--replace", "hello"])
    assert result.exit_code == 0, result.stderr
    body = cluster.invoke(["cat", "hello"]).stdout
    if allowed:
        assert "Hello World" in body
        assert "Unit hello.service inactive" in result.stdout
    else:
        assert "sleep 200" in body
        assert result.stderr == (
            f"Warning: can not replace Unit(hello.service) in state '{target.value}',"
            " use the appropriate command\n"
        )


# stop / unload / destroy / restart ---------------------------------------------------------------------


def test_stop(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["start", "hello", "hello@1"])
    result = cluster.invoke(["stop", "hello", "hello@1"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Unit hello.service loaded on 1a2b3c4d.../127.0.0.12\n"
        "Unit hello@1.service loaded on 1a2b3c4d.../127.0.0.12\n"
    )
    assert result.stderr == "Successfully stopped units [hello.service hello@1.service].\n"


def test_stop_unknown_units(cluster: FakeCluster) -> None:
    result = cluster.invoke(["stop", "nothere"])
    assert result.exit_code == 1
    assert result.stderr == "Units not found in registry\n"


def test_stop_inactive_unit(cluster: FakeCluster) -> None:
    cluster.submit("hello.service", HELLO)
    result = cluster.invoke(["stop", "hello"])
    assert result.exit_code == 1
    assert result.stderr == "Unable to stop unit hello.service in state inactive\n"


def test_stop_timeout_message(cluster: FakeCluster) -> None:
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
    cluster.agent = False
    result = cluster.invoke(["stop", "--block-attempts", "1", "hello"])
    assert result.exit_code == 1
    assert result.stderr == (
        "Failed to stop units [hello.service]. err:"
        " timed out waiting for unit hello.service to report state loaded\n"
    )


def test_unload(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["start", "hello"])
    result = cluster.invoke(["unload", "hello"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Unit hello.service inactive\n"
    assert result.stderr == "Successfully unloaded units [hello.service].\n"
    assert cluster.states() == ()


def test_destroy(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["start", "hello"])
    result = cluster.invoke(["destroy", "hello", "nothere"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "Destroyed hello.service\n"
    assert cluster.targets() == {}
    assert cluster.states() == ()
    assert cluster.invoke(["destroy", "hello"]).stderr == "Units not found in registry\n"


def test_restart_stops_then_starts(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["start", "hello"])
    result = cluster.invoke(["restart", "hello"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        "Unit hello.service loaded on 1a2b3c4d.../127.0.0.12\n"
        "Unit hello.service launched on 1a2b3c4d.../127.0.0.12\n"
    )


def test_restart_inactive_unit_fails(cluster: FakeCluster) -> None:
    cluster.submit("hello.service", HELLO)
    result = cluster.invoke(["restart", "hello"])
    assert result.exit_code == 1
    assert result.stderr == "Unable to restart unit hello.service in state inactive\n"


# globs and progress --------------------------------------------------------------------------------------


def test_start_glob_starts_every_submitted_instance(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["submit", "hello@1", "hello@2", "hello@3"])
    result = cluster.invoke(["start", "hello@*"])
    assert result.exit_code == 0, result.stderr
    launched = [line for line in result.stdout.splitlines() if "launched" in line]
    assert [line.split()[1] for line in launched] == ["hello@1.service", "hello@2.service", "hello@3.service"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("web?.service", ["web1.service", "web2.service"]), ("[ab]*", ["a.service", "b.socket"])],
)
def test_globs_against_the_registry(cluster: FakeCluster, pattern: str, expected: list[str]) -> None:
    for name in ("web1.service", "web2.service", "web10.service", "a.service", "b.socket", "c.service"):
        cluster.submit(name, HELLO, TargetState.LOADED)
    result = cluster.invoke(["destroy", pattern])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "".join(f"Destroyed {name}\n" for name in expected)


def test_glob_against_local_files(cluster: FakeCluster, workdir: Path) -> None:
    (workdir / "web1.service").write_text(HELLO)
    (workdir / "web2.service").write_text(OTHER)
    result = cluster.invoke(["submit", "web*"])
    assert result.exit_code == 0, result.stderr
    assert set(cluster.targets()) == {"web1.service", "web2.service"}


def test_glob_matching_nothing_when_creating(cluster: FakeCluster, workdir: Path) -> None:
    result = cluster.invoke(["start", "zzz*"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error creating units: unable to find any Unit matching 'zzz*'")


def test_progress_line_on_a_terminal(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["submit", "hello@1", "hello@2", "hello@3"])
    cluster.agent = False
    result = cluster.invoke(["start", "--block-attempts", "1", "hello@*"], tty=True)
    assert "\r\x1b[Kwaiting for hello@1.service (0/3 done): " in result.stdout
    assert result.exit_code == 1


def test_no_progress_line_without_a_terminal(cluster: FakeCluster, workdir: Path) -> None:
    cluster.invoke(["submit", "hello@1", "hello@2"])
    result = cluster.invoke(["start", "hello@*"])
    assert "Waiting" not in result.stdout
