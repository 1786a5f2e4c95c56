"""The root command: flags from the command line and FLEETCTL_*, prefixes, help, version, error handling."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from fleetctl.cli import cli
from fleetctl.client import FleetClient
from fleetctl.context import App, GlobalOptions, UsageFailed, unreachable_message
from fleetctl.global_flags import FleetCommand, go_bools
from fleetd.errors import RegistryError, RegistryUnavailable
from fleetd.model import VERSION
from tests.unit.fleetctl.conftest import FakeCluster


class Recorder:
    def __init__(self, error: Exception | None = None) -> None:
        self.options: GlobalOptions | None = None
        self.error = error

    @asynccontextmanager
    async def connect(self, options: GlobalOptions) -> AsyncIterator[FleetClient]:
        self.options = options
        if self.error is not None:
            raise self.error
        yield FleetClient(FakeCluster().registry)


def invoke(args: list[str], recorder: Recorder, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(cli, args, obj=App(connect=recorder.connect), env=env, catch_exceptions=False)


def test_defaults() -> None:
    recorder = Recorder()
    result = invoke(["list-units"], recorder)
    assert result.exit_code == 0, result.stderr
    assert recorder.options is not None
    assert recorder.options.endpoints == ("http://127.0.0.1:2379",)
    assert recorder.options.etcd_key_prefix == "/_coreos.com/fleet/"
    assert recorder.options.request_timeout == 3.0
    assert recorder.options.ssh_username  # the local user, not "core"


def test_env_sets_global_flags_and_the_command_line_wins(tmp_path: Path) -> None:
    recorder = Recorder()
    (tmp_path / "ca.pem").write_text("ca")
    (tmp_path / "old-key.pem").write_text("key")
    env = {
        "FLEETCTL_ENDPOINT": "http://127.0.0.1:1,http://127.0.0.2:2",
        "FLEETCTL_ETCD_KEY_PREFIX": "/other/",
        "FLEETCTL_REQUEST_TIMEOUT": "7.5",
        "FLEETCTL_CA_FILE": str(tmp_path / "ca.pem"),
        "FLEETCTL_ETCD_KEYFILE": str(tmp_path / "old-key.pem"),
        "FLEETCTL_SSH_USERNAME": "admin",
        "FLEETCTL_STRICT_HOST_KEY_CHECKING": "false",
    }
    assert invoke(["--request-timeout", "1", "list-units"], recorder, env).exit_code == 0
    options = recorder.options
    assert options is not None
    assert options.endpoints == ("http://127.0.0.1:1", "http://127.0.0.2:2")
    assert options.etcd_key_prefix == "/other/"
    assert options.request_timeout == 1.0
    assert options.ca_file == str(tmp_path / "ca.pem")
    assert options.key_file == str(tmp_path / "old-key.pem")
    assert options.ssh_username == "admin"
    assert options.strict_host_key_checking is False


def test_empty_env_var_is_ignored() -> None:
    recorder = Recorder()
    assert invoke(["list-units"], recorder, {"FLEETCTL_ENDPOINT": ""}).exit_code == 0
    assert recorder.options is not None and recorder.options.endpoints == ("http://127.0.0.1:2379",)


def test_go_style_boolean_flags() -> None:
    assert go_bools(["--strict-host-key-checking=false", "--debug=true", "x=false"]) == [
        "--no-strict-host-key-checking",
        "--debug",
        "x=false",
    ]
    recorder = Recorder()
    assert invoke(["--strict-host-key-checking=false", "list-units"], recorder).exit_code == 0
    assert recorder.options is not None and not recorder.options.strict_host_key_checking


def test_tunnel_gets_the_default_port() -> None:
    recorder = Recorder()
    assert invoke(["--tunnel", "bastion", "list-units"], recorder).exit_code == 0
    assert recorder.options is not None and recorder.options.tunnel == "bastion:22"


@pytest.mark.parametrize(
    "args",
    [
        ["list-machines", "--tunnel", "bastion", "--endpoint", "http://e:1", "--ssh-username", "u"],
        [
            "--endpoint",
            "http://a:2",
            "list-machines",
            "--tunnel=bastion",
            "--endpoint=http://e:1",
            "--ssh-username=u",
        ],
        ["list-m", "--ssh-username", "u", "--tunnel", "bastion"],
    ],
    ids=["all after the command", "after wins over before", "after a prefix"],
)
def test_global_flags_after_the_command(args: list[str]) -> None:
    recorder = Recorder()
    result = invoke(args, recorder, {"FLEETCTL_ENDPOINT": "http://e:1"})
    assert result.exit_code == 0, result.stderr
    assert recorder.options is not None
    assert recorder.options.tunnel == "bastion:22"
    assert recorder.options.ssh_username == "u"
    assert recorder.options.endpoints == ("http://e:1",)


def test_global_flags_after_the_command_override_the_environment_and_keep_the_rest(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    recorder = Recorder()
    env = {"FLEETCTL_TUNNEL": "from-env", "FLEETCTL_REQUEST_TIMEOUT": "7"}
    args = ["list-units", "--tunnel", "h:2222", "--etcd-cafile", str(tmp_path / "ca.pem"), "--debug=false"]
    assert invoke(args, recorder, env).exit_code == 0
    assert recorder.options is not None
    assert recorder.options.tunnel == "h:2222"
    assert recorder.options.request_timeout == 7.0
    assert recorder.options.ca_file == str(tmp_path / "ca.pem")
    assert recorder.options.debug is False


def test_bad_values_after_the_command_are_usage_errors_too() -> None:
    recorder = Recorder()
    result = invoke(["list-units", "--ssh-timeout", "nan"], recorder)
    assert result.exit_code == 2
    assert "Invalid value for '--ssh-timeout'" in result.stderr
    result = invoke(["list-units", "--driver", "api"], recorder)
    assert result.exit_code == 1
    assert result.stderr == 'Unable to initialize client: unrecognized driver "api"\n'
    assert recorder.options is None


def test_version_and_help_after_the_command() -> None:
    assert invoke(["list-units", "--version"], Recorder()).stdout.startswith("fleetctl version ")
    for spelling in ("-h", "--h", "--help"):
        result = invoke(["start", spelling], Recorder())
        assert result.exit_code == 0
        assert "Global options" in result.stdout and "FLEETCTL_TUNNEL" in result.stdout


def test_every_command_takes_the_global_flags() -> None:
    with click.Context(cli) as ctx:
        commands = [cli.get_command(ctx, name) for name in cli.list_commands(ctx)]
    assert all(isinstance(command, FleetCommand) for command in commands)


def test_go_style_booleans_stop_at_double_dash_and_at_positionals_when_asked() -> None:
    assert go_bools(["--debug=false", "--", "--debug=false"]) == ["--no-debug", "--", "--debug=false"]
    assert go_bools(["m", "--debug=false"], interspersed=False) == ["m", "--debug=false"]


@pytest.mark.parametrize("args", [["list-m"], ["list-unit-f"], ["list-units"]])
def test_unambiguous_prefixes(args: list[str]) -> None:
    result = invoke(args, Recorder())
    assert result.exit_code == 0, result.stderr


def test_ambiguous_prefix_is_a_usage_error() -> None:
    result = invoke(["list-u"], Recorder())
    assert result.exit_code == 2
    assert "ambiguous command 'list-u': could be list-unit-files, list-units" in result.stderr


def test_unknown_command_and_flag_exit_2() -> None:
    assert invoke(["frobnicate"], Recorder()).exit_code == 2
    assert invoke(["list-units", "--bogus"], Recorder()).exit_code == 2


@pytest.mark.parametrize("args", [["--version"], ["-v"], ["version"]])
def test_version(args: list[str]) -> None:
    result = invoke(args, Recorder())
    assert result.exit_code == 0
    assert result.stdout.startswith("fleetctl version ")


@pytest.mark.parametrize("args", [[], ["help"], ["--help"], ["-h"]])
def test_help(args: list[str]) -> None:
    result = invoke(args, Recorder())
    assert result.exit_code == 0
    assert "fleetctl is a command-line interface to fleet" in result.stdout
    assert "list-unit-files" in result.stdout
    assert f"VERSION: {VERSION}" in result.stdout


def test_every_help_spelling_prints_the_same_text() -> None:
    outputs = {invoke(args, Recorder()).stdout for args in ([], ["help"], ["--help"], ["-h"])}
    assert len(outputs) == 1


def test_help_for_a_command() -> None:
    result = invoke(["help", "start"], Recorder())
    assert result.exit_code == 0
    assert "--block-attempts" in result.stdout


def test_bad_driver() -> None:
    result = invoke(["--driver", "api", "list-units"], Recorder())
    assert result.exit_code == 1
    assert result.stderr == 'Unable to initialize client: unrecognized driver "api"\n'


def test_unreachable_etcd_is_one_line_naming_the_endpoint() -> None:
    recorder = Recorder(RegistryUnavailable("deadline exceeded"))
    result = invoke(["--endpoint", "http://127.0.0.1:1", "cat", "x"], recorder)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("Error: cannot reach etcd at http://127.0.0.1:1: deadline exceeded; check")
    assert "--endpoint/FLEETCTL_ENDPOINT" in lines[0]


def test_unreachable_message_does_not_repeat_the_endpoint() -> None:
    options = GlobalOptions(endpoints=("http://e:1",))
    text = unreachable_message(options, RegistryUnavailable("etcd unavailable (http://e:1): refused"))
    assert text.count("http://e:1") == 1


def test_other_fleet_errors_print_error_prefix_and_exit_1() -> None:
    result = invoke(["list-units"], Recorder(RegistryError("boom")))
    assert result.exit_code == 1
    assert result.stderr == "Error: boom\n"


def test_debug_adds_the_traceback() -> None:
    result = invoke(["--debug", "list-units"], Recorder(RegistryError("boom")))
    assert result.exit_code == 1
    assert "Traceback" in result.stderr
    assert result.stderr.endswith("Error: boom\n")


def test_usage_failures_exit_2() -> None:
    assert UsageFailed("x").exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ca-file", "/nonexistent/ca.pem"],
            "Invalid value for '--ca-file': cannot read '/nonexistent/ca.pem'",
        ),
        (["--cert-file", "/nonexistent/c.pem"], "Invalid value for '--cert-file': cannot read"),
        (["--key-file", "/nonexistent/k.pem"], "Invalid value for '--key-file': cannot read"),
        (["--etcd-cafile", "/"], "'/' is a directory, not a file"),
        (["--endpoint", "http://[::1"], "Invalid value for '--endpoint': 'http://[::1': malformed URL"),
        (["--endpoint", "http://a:1,http://b:99999"], "malformed URL"),
        (["--endpoint", "ftp://a:1"], "unsupported scheme 'ftp'"),
        (["--ssh-timeout", "nan"], "Invalid value for '--ssh-timeout': 'nan': expected a duration between"),
        (["--ssh-timeout", "inf"], "expected a duration between 100ms and 5m"),
        (["--ssh-timeout", "-1"], "expected a duration between 100ms and 5m"),
        (["--ssh-timeout", "soon"], "expected seconds such as 1.5"),
        (["--request-timeout", "1e400"], "Invalid value for '--request-timeout'"),
        (["--request-timeout", "1ns"], "expected a duration between 100ms and 5m"),
        (["--etcd-key-prefix", "fleet"], "expected a key prefix starting with /"),
        (["--etcd-key-prefix", "/a\x1bb/"], "without spaces or control characters"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_bad_global_flag_values_are_usage_errors_without_traceback(args: list[str], message: str) -> None:
    recorder = Recorder()
    result = invoke([*args, "list-units"], recorder)
    assert result.exit_code == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert recorder.options is None  # nothing ran


def test_bad_values_from_the_environment_are_usage_errors_too() -> None:
    result = invoke(["list-units"], Recorder(), {"FLEETCTL_SSH_TIMEOUT": "nan"})
    assert result.exit_code == 2
    assert "expected a duration between 100ms and 5m" in result.stderr


def test_durations_accept_go_forms_and_tls_files_expand_home(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    recorder = Recorder()
    args = ["--ssh-timeout", "1m", "--request-timeout", "500ms", "--ca-file", "~/ca.pem", "list-units"]
    assert invoke(args, recorder, {"HOME": str(tmp_path)}).exit_code == 0
    assert recorder.options is not None
    assert (recorder.options.ssh_timeout, recorder.options.request_timeout) == (60.0, 0.5)
    assert recorder.options.ca_file == str(tmp_path / "ca.pem")


@pytest.mark.parametrize(
    "args",
    [
        ["start", "--block-attempts", "99999999999999999999", "x.service"],
        ["status", "--ssh-port", "70000", "x.service"],
        ["ssh", "--ssh-port", "0", "m"],
        ["journal", "--lines", "-5", "x.service"],
    ],
    ids=["block attempts", "status port", "ssh port", "journal lines"],
)
def test_out_of_range_command_flags_are_usage_errors(args: list[str]) -> None:
    result = invoke(args, Recorder())
    assert result.exit_code == 2
    assert "Invalid value for" in result.stderr


def test_etcd_user_and_password_from_flags_and_environment() -> None:
    recorder = Recorder()
    env = {"FLEETCTL_USERNAME": "root", "FLEETCTL_PASSWORD": "s3cret"}
    assert invoke(["list-units"], recorder, env).exit_code == 0
    assert recorder.options is not None
    assert (recorder.options.username, recorder.options.password) == ("root", "s3cret")
    assert "s3cret" not in repr(recorder.options)
    assert invoke(["list-units", "--username", "ops", "--password", "pw"], recorder, env).exit_code == 0
    assert (recorder.options.username, recorder.options.password) == ("ops", "pw")


def test_connect_etcd_authenticates_with_the_user_and_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleetctl.connect import connect_etcd  # noqa: PLC0415
    from fleetd.registry import etcd  # noqa: PLC0415

    made: dict[str, object] = {}

    class FakeEtcdKV:
        def __init__(self, endpoints: list[str], **kwargs: object) -> None:
            made.update(kwargs, endpoints=endpoints)

        async def close(self) -> None:
            made["closed"] = True

    monkeypatch.setattr(etcd, "EtcdKV", FakeEtcdKV)

    async def go() -> None:
        async with connect_etcd(GlobalOptions(username="root", password="pw")):
            pass

    asyncio.run(go())
    assert (made["username"], made["password"], made["closed"]) == ("root", "pw", True)


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (
            ["--ca-file", "{ca}"],
            "WARNING: --ca-file not used for http://127.0.0.1:2379: TLS needs an https://",
        ),
        (["--endpoint", "https://e:2379,http://f:2379", "--ca-file", "{ca}"], "not used for http://f:2379:"),
        (["--password", "pw"], "WARNING: an etcd password without --username/FLEETCTL_USERNAME is not used"),
        (["--endpoint", "https://e:2379", "--ca-file", "{ca}"], None),
        (["--username", "u", "--password", "pw"], None),
    ],
    ids=["TLS with the default http endpoint", "one http endpoint of two", "password alone", "https", "auth"],
)
def test_settings_that_cannot_work_are_warned_about(
    tmp_path: Path, args: list[str], warning: str | None
) -> None:
    (tmp_path / "ca.pem").write_text("ca")
    args = [arg.format(ca=tmp_path / "ca.pem") for arg in args]
    result = invoke(["list-units", *args], Recorder())
    assert result.exit_code == 0
    if warning is None:
        assert result.stderr == ""
    else:
        assert warning in result.stderr
        assert result.stderr.count("\n") == 1
