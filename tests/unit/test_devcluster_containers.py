"""The machines' copy of /etc/containers: the host's files plus keyring = false (nspawn refuses keyctl)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from devcluster.containers import containers_binds, with_keyring_off


@pytest.mark.parametrize(
    ("conf", "containers"),
    [
        ("", {"keyring": False}),
        ('[engine]\nevents_logger = "file"', {"keyring": False}),
        ('[containers]\nlog_driver = "journald"\n[engine]\n', {"keyring": False, "log_driver": "journald"}),
        ("[containers]\nkeyring = true\n", {"keyring": True}),
    ],
    ids=["empty", "other tables only (no final newline)", "a [containers] table", "keyring set already"],
)
def test_with_keyring_off(conf: str, containers: dict[str, object]) -> None:
    assert tomllib.loads(with_keyring_off(conf))["containers"] == containers


def test_binds_a_copy_of_the_hosts_configuration(tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "policy.json").write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    (host / "registries.conf").write_text("")
    copy = tmp_path / "machine" / "containers"
    assert containers_binds(copy, host) == [(copy, "/etc/containers")]
    assert (copy / "policy.json").read_text() == (host / "policy.json").read_text()
    assert tomllib.loads((copy / "containers.conf").read_text()) == {"containers": {"keyring": False}}
    assert not (host / "containers.conf").exists()


def test_no_bind_without_podman_on_the_host(tmp_path: Path) -> None:
    assert containers_binds(tmp_path / "copy", tmp_path / "absent") == []
    assert not (tmp_path / "copy").exists()
