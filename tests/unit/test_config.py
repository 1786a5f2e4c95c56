"""fleetd configuration: sources, precedence, formats and one-line errors (spec §7.1-7.2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleetd.config import (
    IGNORED_KEYS,
    KEYS,
    Config,
    Invocation,
    UsageError,
    build_config,
    help_text,
    load_config,
    parse_args,
    parse_duration,
    parse_env,
    parse_file_text,
    parse_metadata,
    unit_cap,
)
from fleetd.errors import ConfigError


def test_defaults_match_the_reference() -> None:
    config = build_config({}, {}, {})
    assert config.etcd_servers == ("http://127.0.0.1:2379", "http://127.0.0.1:4001")
    assert config.etcd_key_prefix == "/_coreos.com/fleet/"
    assert config.etcd_request_timeout == 1.0
    assert config.engine_reconcile_interval == 2.0
    assert config.agent_ttl == 30.0
    assert config.units_directory == "/run/fleet/units/"
    assert config.public_ip == ""
    assert dict(config.metadata) == {}
    assert (config.verbosity, config.disable_engine, config.token_limit) == (0, False, 100)
    assert config.notices == ()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("1.5h", 5400.0),
        ("0", 0.0),
        ("2h45m", 9900.0),
        ("1500us", 0.0015),
        ("+5s", 5.0),
        ("-1s", -1.0),
        (".5s", 0.5),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "", "s", "1x", "1m30", "--1s", "1.2.3s", "abc"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("http://a:2379", ("http://a:2379",)),
        ("http://a:2379,http://b:2379", ("http://a:2379", "http://b:2379")),
        ('["http://a:2379","http://b:2379"]', ("http://a:2379", "http://b:2379")),
        ('[ "http://a:2379" , "http://b:2379" ]', ("http://a:2379", "http://b:2379")),
        ("http://a:2379, ", ("http://a:2379",)),
        ("https://10.0.0.1:2379", ("https://10.0.0.1:2379",)),
    ],
    ids=["one", "comma list", "json-ish list", "spaced list", "trailing comma", "https"],
)
def test_etcd_servers_list_forms(text: str, expected: tuple[str, ...]) -> None:
    assert build_config({"etcd_servers": text}, {}, {}).etcd_servers == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foo=bar, ping=pong", {"foo": "bar", "ping": "pong"}),
        (" region = us-west ,az=1", {"region": "us-west", "az": "1"}),
        ("a=1,a=2", {"a": "2"}),
        ("a=1,junk,=x,b=2", {"a": "1", "b": "2"}),
        ("k=v=w", {"k": "v=w"}),
        ("", {}),
    ],
    ids=["reference example", "trimmed", "last wins", "malformed ignored", "first = splits", "empty"],
)
def test_metadata(text: str, expected: dict[str, str]) -> None:
    assert parse_metadata(text) == expected
    assert dict(build_config({"metadata": text}, {}, {}).metadata) == expected


def test_file_format_top_level_keys_quoted_values_and_comments() -> None:
    text = """
# fleet.conf
; another comment
etcd_servers = "http://127.0.0.1:2379"
metadata='region=us-west'
agent_ttl=45s
public_ip = 127.0.0.5
[other]
verbosity=3
"""
    values, notices = parse_file_text(text, "/etc/fleet/fleet.conf")
    assert values == {
        "etcd_servers": "http://127.0.0.1:2379",
        "metadata": "region=us-west",
        "agent_ttl": "45s",
        "public_ip": "127.0.0.5",
    }
    assert notices == ("/etc/fleet/fleet.conf line 9: key verbosity in section [other] ignored",)


def test_file_line_without_equals_is_an_error_naming_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^/x\.conf line 2: expected key = value"):
        parse_file_text("a=1\nnonsense\n", "/x.conf")


def test_env_uses_fleet_uppercase_key_names() -> None:
    environ = {"FLEET_AGENT_TTL": "10s", "FLEET_DISABLE_ENGINE": "true", "FLEETCTL_ENDPOINT": "x"}
    assert parse_env(environ) == {"agent_ttl": "10s", "disable_engine": "true"}


def test_precedence_cli_over_env_over_file_over_defaults() -> None:
    config = build_config(
        {"agent_ttl": "10s", "verbosity": "1", "metadata": "a=file"},
        {"agent_ttl": "20s", "verbosity": "2"},
        {"agent_ttl": "40s"},
    )
    assert (config.agent_ttl, config.verbosity, dict(config.metadata)) == (40.0, 2, {"a": "file"})


def test_every_option_parses() -> None:
    config = build_config(
        {
            "etcd_username": "root",
            "etcd_password": "s3cret #1",
            "etcd_keyfile": "/k.pem",
            "etcd_certfile": "/c.pem",
            "etcd_cafile": "/ca.pem",
            "etcd_key_prefix": "/custom",
            "etcd_request_timeout": "2.5",
            "engine_reconcile_interval": "0.5",
            "units_directory": "/tmp/units",
            "systemd_user": "false",
            "token_limit": "50",
            "enable_grpc": "0",
            "disable_engine": "1",
            "disable_watches": "True",
        },
        {},
        {},
    )
    assert (config.etcd_username, config.etcd_password) == ("root", "s3cret #1")
    assert (config.etcd_keyfile, config.etcd_certfile, config.etcd_cafile) == ("/k.pem", "/c.pem", "/ca.pem")
    assert config.etcd_key_prefix == "/custom/"
    assert (config.etcd_request_timeout, config.engine_reconcile_interval) == (2.5, 0.5)
    assert config.units_directory == "/tmp/units"
    assert (config.systemd_user, config.enable_grpc, config.disable_engine, config.disable_watches) == (
        False,
        False,
        True,
        True,
    )
    assert config.token_limit == 50


@pytest.mark.parametrize(
    ("text", "expected"), [("conflicts", "conflicts"), (" ALL ", "all"), ("none", "none")]
)
def test_fence_units(text: str, expected: str) -> None:
    assert build_config({}, {}, {}).fence_units == "conflicts"
    assert build_config({}, {"fence_units": text}, {}).fence_units == expected


def test_fence_units_refuses_other_words() -> None:
    with pytest.raises(ConfigError, match=r"fence_units.*expected conflicts, all, none"):
        build_config({"fence_units": "yes"}, {}, {})


def test_deprecated_keys_are_noticed_not_fatal() -> None:
    config = build_config({"verify_units": "true"}, {}, {})
    assert config.notices == ("config key verify_units is deprecated and no longer supported; ignored",)
    assert config == Config(notices=config.notices)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("etcd_server", "unknown config key etcd_server (from config file); did you mean etcd_servers?"),
        ("metdata", "unknown config key metdata (from config file); did you mean metadata?"),
        ("agentttl", "unknown config key agentttl (from config file); did you mean agent_ttl?"),
        ("bogus", "unknown config key bogus (from config file)"),
    ],
)
def test_an_unknown_key_is_an_error_naming_the_closest_known_key(key: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({key: "x"}, {}, {})
    assert str(caught.value) == message


def test_an_unknown_key_in_the_file_stops_load_config(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text('etcd_server="http://10.0.0.1:2379"\n')
    with pytest.raises(ConfigError, match="did you mean etcd_servers"):
        load_config(parse_args(["fleetd", f"--config={path}"]), {})


@pytest.mark.parametrize("key", sorted(IGNORED_KEYS))
def test_keys_without_effect_are_said_to_be_ignored_when_set(key: str) -> None:
    value = "50" if key == "token_limit" else "true"
    for config, source in (
        (build_config({key: value}, {}, {}), "config file"),
        (build_config({}, {key: value}, {}), "environment"),
        (build_config({}, {}, {key: value}), "flag"),
    ):
        assert len(config.notices) == 1
        assert config.notices[0].startswith(f"config key {key} ({source}) is ignored: ")
    assert build_config({}, {}, {}).notices == ()


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["help"], ["--etcd-servers", "x", "--help"]])
def test_help_is_asked_for(args: list[str]) -> None:
    assert parse_args(["fleetd", *args]) == Invocation(show_help=True)


def test_help_lists_every_key_with_its_default() -> None:
    text = help_text()
    for key in KEYS:
        assert f"\n  {key} " in text
    lines = text.splitlines()
    assert any(line.split() == ["agent_ttl", "30s"] for line in lines)
    servers = ["etcd_servers", "http://127.0.0.1:2379,http://127.0.0.1:4001"]
    assert any(line.split() == servers for line in lines)
    assert any(line.split() == ["etcd_key_prefix", "/_coreos.com/fleet/"] for line in lines)
    assert "FLEET_KEY" in text


@pytest.mark.parametrize(
    ("source", "key", "value", "message"),
    [
        ("file", "agent_ttl", "30", "invalid value '30' for agent_ttl (from config file): expected a dur"),
        ("env", "agent_ttl", "1x", "invalid value '1x' for agent_ttl (from FLEET_AGENT_TTL): expected"),
        ("cli", "agent_ttl", "500ms", "invalid value '500ms' for agent_ttl (from flag): expected a dur"),
        ("file", "verbosity", "loud", "invalid value 'loud' for verbosity (from config file): expected"),
        ("file", "disable_engine", "maybe", "invalid value 'maybe' for disable_engine"),
        ("file", "etcd_request_timeout", "-1", "invalid value '-1' for etcd_request_timeout"),
        ("file", "engine_reconcile_interval", "nan", "invalid value 'nan' for engine_reconcile_interval"),
        ("file", "public_ip", "10.0.0", "invalid value '10.0.0' for public_ip"),
        ("file", "etcd_servers", "[]", "invalid value '[]' for etcd_servers"),
        ("file", "etcd_servers", "http://a b", "invalid value 'http://a b' for etcd_servers"),
        ("file", "etcd_key_prefix", "fleet", "invalid value 'fleet' for etcd_key_prefix"),
        ("file", "units_directory", "units", "invalid value 'units' for units_directory"),
        ("file", "token_limit", "0", "invalid value '0' for token_limit"),
    ],
)
def test_bad_values_are_one_line_errors_naming_key_and_value(
    source: str, key: str, value: str, message: str
) -> None:
    sources: dict[str, dict[str, str]] = {"file": {}, "env": {}, "cli": {}}
    sources[source][key] = value
    with pytest.raises(ConfigError) as caught:
        build_config(sources["file"], sources["env"], sources["cli"])
    assert str(caught.value).startswith(message)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["fleetd"], Invocation()),
        (["fleetd", "--config", "/x.conf"], Invocation(config_path="/x.conf")),
        (["fleetd", "-config=/x.conf"], Invocation(config_path="/x.conf")),
        (["fleetd", "--version"], Invocation(show_version=True)),
        (["fleetd", "version"], Invocation(show_version=True)),
        (
            ["fleetd", "--agent-ttl=5s", "--disable_engine"],
            Invocation(options={"agent_ttl": "5s", "disable_engine": "true"}),
        ),
        (["fleetd", "--metadata", "a=b"], Invocation(options={"metadata": "a=b"})),
    ],
)
def test_parse_args(argv: list[str], expected: Invocation) -> None:
    assert parse_args(argv) == expected


@pytest.mark.parametrize("argv", [["/usr/bin/fleetd", "list-units"], ["/usr/bin/fleetd", "version", "x"]])
def test_positional_arguments_are_refused(argv: list[str]) -> None:
    expected = r"^/usr/bin/fleetd takes no arguments\. Did you mean to invoke fleetctl instead\?$"
    with pytest.raises(UsageError, match=expected):
        parse_args(argv)


def test_unknown_flag_and_missing_value() -> None:
    with pytest.raises(ConfigError, match="unknown flag --nope"):
        parse_args(["fleetd", "--nope"])
    with pytest.raises(ConfigError, match="unknown flag --etcd-server; did you mean etcd_servers"):
        parse_args(["fleetd", "--etcd-server", "http://e:1"])
    with pytest.raises(ConfigError, match="flag --config needs a value"):
        parse_args(["fleetd", "--config"])


def test_load_config_reads_file_then_env_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text('agent_ttl="10s"\nmetadata="a=1"\nverbosity=1\n')
    invocation = parse_args(["fleetd", f"--config={path}", "--verbosity=3"])
    config = load_config(invocation, {"FLEET_METADATA": "a=2", "FLEET_VERBOSITY": "2"})
    assert (config.agent_ttl, dict(config.metadata), config.verbosity) == (10.0, {"a": "2"}, 3)


def test_missing_explicit_config_is_fatal_but_missing_default_is_not(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*nope\.conf does not exist"):
        load_config(Invocation(config_path=str(tmp_path / "nope.conf")), {})
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(Invocation(config_path=str(tmp_path)), {})


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("agent_ttl", "10000000000000000000000h", "expected a duration between 1s and 1h"),
        ("agent_ttl", "61m", "expected a duration between 1s and 1h"),
        ("agent_ttl", "-5s", "expected a duration between 1s and 1h"),
        ("engine_reconcile_interval", "1ns", "expected a duration between 100ms and 1h"),
        ("engine_reconcile_interval", "inf", "expected a duration between 100ms and 1h"),
        ("engine_reconcile_interval", "-inf", "expected a duration between 100ms and 1h"),
        ("engine_reconcile_interval", "1e400", "expected a duration between 100ms and 1h"),
        ("etcd_request_timeout", "nan", "expected a duration between 100ms and 5m"),
        ("etcd_request_timeout", "-0.5", "expected a duration between 100ms and 5m"),
        ("etcd_request_timeout", "2h", "expected a duration between 100ms and 5m"),
    ],
    ids=[
        "ttl 10^22 hours",
        "ttl over an hour",
        "ttl negative",
        "reconcile 1ns",
        "reconcile inf",
        "reconcile -inf",
        "reconcile overflowing float",
        "request nan",
        "request negative",
        "request two hours",
    ],
)
def test_absurd_durations_are_refused_with_their_bounds(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"^invalid value .* for {key} \\(from config file\\): {message}$"):
        build_config({key: value}, {}, {})


@pytest.mark.parametrize(
    ("key", "value", "seconds"),
    [
        ("agent_ttl", "1s", 1.0),
        ("agent_ttl", "1h", 3600.0),
        ("engine_reconcile_interval", "100ms", 0.1),
        ("engine_reconcile_interval", "3600", 3600.0),
        ("etcd_request_timeout", "5m", 300.0),
    ],
)
def test_duration_bounds_are_inclusive(key: str, value: str, seconds: float) -> None:
    assert getattr(build_config({key: value}, {}, {}), key) == seconds


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("etcd_key_prefix", "/fleet\udcff/", "not valid UTF-8"),
        ("etcd_key_prefix", "/fle\x1bet/", "without spaces or control characters"),
        ("etcd_key_prefix", "/my fleet/", "without spaces or control characters"),
        ("etcd_password", "s\udce9cret", "not valid UTF-8"),
        ("etcd_servers", "http://[::1", "malformed URL"),
        ("etcd_servers", "http://a:99999", "malformed URL"),
        ("etcd_servers", "ftp://a:2379", "unsupported scheme 'ftp'"),
        ("etcd_servers", "http://a:2379/v2/keys", "no path"),
    ],
    ids=[
        "prefix undecodable byte",
        "prefix escape",
        "prefix space",
        "password undecodable byte",
        "server unclosed IPv6 bracket",
        "server port out of range",
        "server scheme",
        "server path",
    ],
)
def test_weird_text_values_are_config_errors(key: str, value: str, message: str) -> None:
    with pytest.raises(ConfigError, match=f"for {key} \\(from FLEET_{key.upper()}\\): .*{message}"):
        build_config({}, {key: value}, {})


def test_non_utf8_config_file_is_a_config_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "fleet.conf"
    path.write_bytes(b'agent_ttl="10s"\nmetadata="caf\xe9=1"\n')
    with pytest.raises(ConfigError, match=rf"^config file {path} line 2: byte 0xe9 is not valid UTF-8"):
        load_config(Invocation(config_path=str(path)), {})


@pytest.mark.parametrize(
    ("text", "mode", "warned"),
    [
        ('etcd_password="s3cret"\n', 0o644, True),
        ('etcd_password="s3cret"\n', 0o640, True),
        ('etcd_password="s3cret"\n', 0o600, False),
        ('etcd_password=""\n', 0o644, False),
        ('agent_ttl="10s"\n', 0o644, False),
    ],
    ids=[
        "password world-readable",
        "password group-readable",
        "password 0600",
        "empty password",
        "no password",
    ],
)
def test_a_readable_config_file_holding_a_password_is_noticed_once(
    tmp_path: Path, text: str, mode: int, warned: bool
) -> None:
    path = tmp_path / "fleet.conf"
    path.write_text(text)
    path.chmod(mode)
    config = load_config(Invocation(config_path=str(path)), {})
    expected = (
        f"config file {path} holds etcd_password but is readable by group/other (mode {mode:04o});"
        f" run: chmod 600 {path}"
    )
    assert [n for n in config.notices if "etcd_password" in n] == ([expected] if warned else [])


@pytest.mark.parametrize("key", ["etcd_cafile", "etcd_certfile", "etcd_keyfile"])
def test_unreadable_tls_files_stop_startup_naming_the_key(tmp_path: Path, key: str) -> None:
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        ConfigError, match=rf"^invalid value for {key}: cannot read '{missing}': No such file"
    ):
        load_config(Invocation(config_path=None, options={key: str(missing)}), {})
    with pytest.raises(ConfigError, match=rf"^invalid value for {key}: '{tmp_path}' is a directory"):
        load_config(Invocation(options={key: str(tmp_path)}), {})
    present = tmp_path / "present.pem"
    present.write_text("pem")
    assert getattr(load_config(Invocation(options={key: str(present)}), {}), key) == str(present)


def test_api_listens_on_the_socket_only_by_default_and_tcp_only_when_set() -> None:
    config = build_config({}, {}, {})
    assert (config.api_socket, config.api_listen, config.disable_api) == ("/var/run/fleet.sock", "", False)
    config = build_config({"api_listen": "127.0.0.1:8080"}, {"disable_api": "1"}, {})
    assert (config.api_listen, config.disable_api) == ("127.0.0.1:8080", True)
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        build_config({"api_listen": ":8080"}, {}, {})
    with pytest.raises(ConfigError, match="absolute path"):
        build_config({"api_socket": "fleet.sock"}, {}, {})


@pytest.mark.parametrize(
    ("options", "cap"),
    [
        ({}, 0),
        ({"max_units": "5"}, 5),
        ({"metadata": "fleet.max-units=3"}, 3),
        ({"max_units": "5", "metadata": "fleet.max-units=3,role=web"}, 3),
        ({"max_units": "2", "metadata": "fleet.max-units=3"}, 2),
        ({"max_units": "0", "metadata": "fleet.max-units=0"}, 0),
        ({"max_units": "4", "metadata": "fleet.max-units=0"}, 4),
    ],
)
def test_unit_cap_is_the_smaller_of_max_units_and_metadata(options: dict[str, str], cap: int) -> None:
    config = build_config(options, {}, {})
    assert unit_cap(config.max_units, config.metadata) == cap


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_units", "-1"),
        ("max_units", "many"),
        ("max_units", str(10**9 + 1)),
        ("metadata", "fleet.max-units=lots"),
        ("metadata", "fleet.max-units=-2"),
        ("metadata", "fleet.max-units="),
    ],
)
def test_bad_unit_caps_are_refused_at_startup(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        build_config({key: value}, {}, {})
