"""fleetctl ssh --pod: which pod a unit runs (its systemd-nspawn line), the command sent to its machine, and
the refusals (not a pod, not running, no name)."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from fleetctl.commands import remote as commands
from fleetctl.ssh.pod import Pod, PodKind, pod_command, pod_of_unit
from fleetctl.ssh.remote import RemoteRefused
from fleetd.model import TargetState, UnitName, UnitState
from tests.unit.fleetctl.conftest import MACHINE_A, FakeCluster
from tests.unit.fleetctl.test_remote_commands import HELLO, RecordingRunner, fake, invoke, runner

__all__ = ["fake", "runner"]  # the fixtures, used here by name

EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples"


def _service(exec_start: str) -> str:
    return f"[Service]\nExecStart={exec_start}\n"


@pytest.mark.parametrize(
    ("unit", "exec_start", "pod"),
    [
        ("a@web.service", "/usr/bin/systemd-nspawn --machine=app-%i -D / --as-pid2 /bin/true",
         Pod("app-web", PodKind.APPLICATION)),
        ("a@web.service", "systemd-nspawn -M %p-%i --boot -D /", Pod("a-web", PodKind.BOOTED)),
        ("a@web.service", "systemd-nspawn -bMpod1 -D /", Pod("pod1", PodKind.BOOTED)),
        ("a@web.service", "systemd-nspawn --machine pod1 -b", Pod("pod1", PodKind.BOOTED)),
        ("x.service", "-/usr/bin/systemd-nspawn --keep-unit --directory=/var/lib/machines/db/ -b",
         Pod("db", PodKind.BOOTED)),
        ("x.service", "systemd-nspawn --image=/var/lib/machines/web.raw /bin/sh",
         Pod("web", PodKind.APPLICATION)),
        ("db.service", "systemd-nspawn -M %N -D /", Pod("db", PodKind.APPLICATION)),
        # the command after the options is the pod's, not nspawn's: its -b and -M do not count
        ("x.service", "systemd-nspawn -M one --bind /a:/b -D / /bin/prog -b -M two",
         Pod("one", PodKind.APPLICATION)),
    ],
    ids=["--machine= with %i", "-M with %p-%i and --boot", "short cluster -bMname",
         "--machine NAME as two words", "directory's last component", "image without .raw",
         "%N", "options after the command are the pod's"],
)
def test_pod_of_unit(unit: str, exec_start: str, pod: Pod) -> None:
    assert pod_of_unit(unit, _service(exec_start)) == pod


def test_the_examples_are_pods_named_as_their_units_say() -> None:
    app = (EXAMPLES / "app-pod@.service").read_text()
    boot = (EXAMPLES / "boot-pod@.service").read_text()
    assert pod_of_unit("app-pod@1.service", app) == Pod("app-1", PodKind.APPLICATION)
    assert pod_of_unit("boot-pod@1.service", boot) == Pod("boot-1", PodKind.BOOTED)
    assert pod_of_unit("pod@db.service", (EXAMPLES / "pod@.service").read_text()) == Pod("db", PodKind.BOOTED)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (HELLO, "Unit x@1.service is not a pod: its ExecStart does not run systemd-nspawn; "
                "fleetctl ssh x@1.service opens a shell on its machine."),
        (_service("/bin/sh -c 'systemd-nspawn -M a'"), "is not a pod"),
        (_service("systemd-nspawn -D / --boot"), "has no --machine= name"),
        (_service("systemd-nspawn -M pod-%H"), "cannot work out its pod's name from %H"),
        (_service("systemd-nspawn -M 'a b'"), "'a b' is not a machine name machined accepts"),
        (_service("systemd-nspawn -M 50%%"), "'50%' is not a machine name machined accepts"),
        ("[Service\n", "its unit file does not parse"),
    ],
    ids=["not nspawn", "nspawn only inside a shell", "no name", "unknown specifier", "bad name",
         "%% expanded", "bad file"],
)
def test_pod_of_unit_refusals(body: str, message: str) -> None:
    with pytest.raises(RemoteRefused) as caught:
        pod_of_unit("x@1.service", body)
    assert message in str(caught.value)


def test_booted_pod_commands() -> None:
    pod = Pod("boot-1", PodKind.BOOTED)
    assert pod_command(pod, "") == "machinectl shell boot-1"
    assert shlex.split(pod_command(pod, "hostname; exit 3")) == [
        "systemd-run", "--machine=boot-1", "--quiet", "--wait", "--pipe", "--collect", "--",
        "/bin/sh", "-c", "hostname; exit 3",
    ]


def test_application_pod_commands_enter_the_leaders_namespaces() -> None:
    pod = Pod("app-1", PodKind.APPLICATION)
    assert pod_command(pod, "") == (
        'leader=$(machinectl show --property=Leader --value app-1) && exec nsenter --target "$leader" --all '
        "-- /bin/sh"
    )
    line = pod_command(pod, "echo $HOSTNAME | tr a-z A-Z")
    assert line.endswith("-- /bin/sh -c 'echo $HOSTNAME | tr a-z A-Z'")  # the pod's shell reads it


APP = "[Service]\nExecStart=/usr/bin/systemd-nspawn --machine=app-%i -D / --as-pid2 /bin/sleep 100\n"


def _running_pod(fake: FakeCluster) -> None:
    fake.submit("app@1.service", APP, TargetState.LAUNCHED)
    fake.publish(
        UnitState(
            UnitName("app@1.service"), MACHINE_A.id, "loaded", "active", "running", "h", TargetState.LAUNCHED
        )
    )


def test_ssh_pod_with_a_command_runs_it_in_the_pod_on_the_units_machine(
    fake: FakeCluster, runner: RecordingRunner
) -> None:
    _running_pod(fake)
    runner.codes = [7]
    result = invoke(fake, commands.ssh, ["--pod", "app@1", "--ssh-port", "2222", "--", "ps", "-e"])
    assert result.exit_code == 7, result.stderr
    assert runner.calls == [
        ("ssh", MACHINE_A.id, (pod_command(Pod("app-1", PodKind.APPLICATION), "ps -e"),), 2222, False)
    ]
    assert runner.made_with == [(False, True)]  # stdin goes to the command


def test_ssh_pod_without_a_command_opens_a_terminal(fake: FakeCluster, runner: RecordingRunner) -> None:
    _running_pod(fake)
    result = invoke(fake, commands.ssh, ["-A", "--pod", "app@1.service"])
    assert result.exit_code == 0, result.stderr
    assert runner.calls == [
        ("terminal", MACHINE_A.id, (pod_command(Pod("app-1", PodKind.APPLICATION), ""),), 22, True)
    ]


@pytest.mark.parametrize(
    ("args", "code", "stderr"),
    [
        (["--pod", "nope"], 1, "Unit nope.service does not exist."),
        (["--pod", "hello"], 1, "Unit hello.service is not a pod: its ExecStart does not run "
                                "systemd-nspawn; fleetctl ssh hello.service opens a shell on its machine."),
        (["--pod", "idle-app@1"], 1, "Unit idle-app@1.service is not running, so neither is its pod "
                                     "app-1: fleetctl start it first."),
        (["--pod", "app@1", "--unit", "hello"], 2, "Use only one of --machine, --unit and --pod."),
    ],
    ids=["unknown unit", "not a pod", "not running", "two targets"],
)
def test_ssh_pod_refusals(
    fake: FakeCluster, runner: RecordingRunner, args: list[str], code: int, stderr: str
) -> None:
    _running_pod(fake)
    fake.submit("idle-app@1.service", APP, TargetState.LOADED)
    result = invoke(fake, commands.ssh, args)
    assert result.exit_code == code
    assert stderr in result.stderr
    assert runner.calls == []
