"""The cloud-config files: valid for cloud-init, every placeholder documented, rendering complete."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from devcluster.cloudconfig import CLOUD_CONFIG_DIR, placeholders, render, written_files
from fleetd.unitfile import UnitFile

FILES = sorted(p.name for p in CLOUD_CONFIG_DIR.glob("*.yaml"))
VALUES = {
    "ETCD_SERVERS": "http://10.0.0.11:2379,http://10.0.0.12:2379",
    "METADATA": "role=web",
    "FLEET_PACKAGE": "/srv/fleet-0.1.0-py3-none-any.whl",
    "NODE_NAME": "node1",
    "NODE_IP": "10.0.0.11",
    "INITIAL_CLUSTER": "node1=http://10.0.0.11:2380,node2=http://10.0.0.12:2380,node3=http://10.0.0.13:2380",
}


def test_the_three_node_kinds_exist() -> None:
    assert FILES == ["cluster-node.yaml", "single-node.yaml", "worker.yaml"]


NO_CLOUD_INIT = "cloud-init is not installed (scripts/setup installs it)"


@pytest.mark.skipif(shutil.which("cloud-init") is None, reason=NO_CLOUD_INIT)
@pytest.mark.parametrize("name", FILES)
def test_cloud_init_accepts_the_file(name: str, tmp_path: Path) -> None:
    rendered = tmp_path / name
    rendered.write_text(render(name, VALUES))
    for path in (CLOUD_CONFIG_DIR / name, rendered):
        result = subprocess.run(
            ["cloud-init", "schema", "--config-file", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid cloud-config" in result.stdout


@pytest.mark.parametrize("name", FILES)
def test_every_placeholder_is_documented_in_the_readme(name: str) -> None:
    readme = (CLOUD_CONFIG_DIR / "README.md").read_text()
    for placeholder in placeholders((CLOUD_CONFIG_DIR / name).read_text()):
        assert placeholder in readme, f"{placeholder} of {name} is not explained in README.md"


@pytest.mark.parametrize("name", FILES)
def test_rendering_leaves_no_placeholder(name: str) -> None:
    assert placeholders(render(name, VALUES)) == frozenset()


def test_a_missing_value_is_named() -> None:
    with pytest.raises(ValueError, match=r"no value for placeholder.*ETCD_SERVERS"):
        render("worker.yaml", {"METADATA": "", "FLEET_PACKAGE": "x"})


@pytest.mark.parametrize("name", FILES)
def test_every_node_gets_fleet_conf_and_the_fleetd_unit(name: str) -> None:
    files = written_files(render(name, VALUES))
    conf = files["/etc/fleet/fleet.conf"].content
    assert 'metadata="role=web"' in conf
    assert files["/etc/fleet/fleet.conf"].permissions == 0o600  # it may hold etcd_password
    unit = files["/etc/systemd/system/fleetd.service"]
    assert unit.permissions == 0o644
    assert "Type=notify" in unit.content
    assert "ExecStart=/opt/fleet/bin/fleetd --config /etc/fleet/fleet.conf" in unit.content


def test_secrets_are_never_baked_in() -> None:
    for name in FILES:
        text = (CLOUD_CONFIG_DIR / name).read_text()
        assert "BEGIN " not in text and "PRIVATE KEY" not in text
        assert "etcd_password" not in text.replace("# etcd_password", "")


@pytest.mark.parametrize("name", FILES)
def test_the_fleetd_unit_is_the_one_in_deploy_systemd(name: str) -> None:
    shipped = UnitFile.from_text((CLOUD_CONFIG_DIR.parent / "systemd" / "fleetd.service").read_text())
    files = written_files(render(name, VALUES))
    written = UnitFile.from_text(files["/etc/systemd/system/fleetd.service"].content)
    assert written.canonical == shipped.canonical


def test_devcluster_machines_get_fleet_conf_readable_by_root_only() -> None:
    from devcluster.cluster import machine_files  # noqa: PLC0415 (only this test needs the dev cluster)

    files = machine_files("http://10.0.0.1:2379", "role=web", "10.0.0.5")
    assert files["/etc/fleet/fleet.conf"].permissions == 0o600
    assert 'public_ip="10.0.0.5"' in files["/etc/fleet/fleet.conf"].content
    assert files["/etc/systemd/system/fleetd.service"].permissions == 0o644
