"""deploy/cloud-config/worker.yaml applied for real: cloud-init in a systemd machine makes it a fleet node.

A systemd-nspawn machine (DESIGN.md §9) boots with a NoCloud seed whose user-data is ``worker.yaml``
rendered with the test etcd's endpoint and this machine's metadata. cloud-init itself runs inside
(``systemctl start cloud-init-local cloud-init cloud-config cloud-final``) and applies every module of the
file unchanged: ``packages``, ``write_files`` and the ``runcmd`` that creates the venv, pip-installs fleet and
enables fleetd. The test then checks that fleetd.service is active and that ``fleetctl list-machines``
shows the machine with its metadata.

What stands in for the internet and for a cloud image, and why (the test talks only to 127.0.0.0/8):

- ``__FLEET_PACKAGE__`` is a wheel of this checkout (its packages, and pyproject.toml's name, version,
  dependencies and console scripts), assembled by the test because the venv has no wheel builder and a
  build with isolation would download setuptools. Its dependencies come from a local wheelhouse: each
  installed distribution of the checkout's venv that fleet needs is packed back into a wheel (its files as
  listed in its RECORD, with its original wheel tag). The machine has an ``/etc/pip.conf`` with ``no-index``
  and ``find-links`` to that wheelhouse, as an offline site would. So the runcmd's ``python3 -m venv`` and
  ``pip install`` run for real with Debian's python3, and the fleetd that starts is the one installed from
  the wheel, not the checkout.
- ``packages`` (python3, python3-venv, dbus) are already installed: the machine's /usr is the host's. It
  gets a writable copy of the host's dpkg database and no apt sources, so cloud-init's apt module runs
  ``apt-get update`` (nothing to fetch) and ``apt-get install`` (already the newest version) for real.
- A NoCloud ``vendor-data`` (the image vendor's part, merged under the user-data, which stays unchanged)
  says what a cloud image would have settled: no default user to create (the machine's account files are
  the host's, bound read-only, and useradd cannot replace a bound file), the locale as the image has it
  (this host has generated no en_US.UTF-8), and the machine's own SSH host keys kept.
- The volatile machine's /usr is read-only; a writable directory is bound at /usr/local/bin so the runcmd's
  fleetctl symlink can be made (the test then runs that fleetctl inside the machine).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import time
import tomllib
import uuid
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from devcluster.cloudconfig import render, written_files
from devcluster.etcd import EtcdServer
from devcluster.nspawn import CHECKOUT, Bind, Machine, client_key

VENV_SITE = next((CHECKOUT / ".venv" / "lib").glob("python3*/site-packages"))
PACKAGES = ("fleetd", "fleetctl")  # as pyproject.toml's packages.find: devcluster is not installed
SOURCE_SUFFIXES = (".py", ".pyi", ".proto", ".typed")
WHEELHOUSE = "/var/lib/fleet-wheelhouse"
SEED = "/var/lib/cloud/seed/nocloud"
# The image vendor's part (NoCloud vendor-data, merged under the user-data): no default user to create (the
# machine's account files are the host's, bound read-only: only root, who exists), the locale left as the
# image has it, and the machine's own SSH host keys kept.
VENDOR_DATA = (
    "#cloud-config\nusers: [{name: root, lock_passwd: false}]\nlocale: \"false\"\nssh_deletekeys: false\n"
)
CLOUD_INIT_UNITS = ("cloud-init-local.service", "cloud-init.service", "cloud-config.service",
                    "cloud-final.service")


def _write_wheel(path: Path, files: dict[str, bytes], info: str) -> Path:
    """A wheel at ``path`` with ``files`` and a RECORD of their SHA-256 digests."""
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        archive.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return path


def _build_fleet_wheel(out: Path) -> Path:
    """A pure-Python wheel of the checkout: its packages and pyproject.toml's name, version, dependencies
    and console scripts."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    info = f"{name}-{version}.dist-info"
    files: dict[str, bytes] = {}
    for package in PACKAGES:
        for path in sorted((CHECKOUT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix in SOURCE_SUFFIXES:
                files[str(path.relative_to(CHECKOUT))] = path.read_bytes()
    requires = "".join(f"Requires-Dist: {r}\n" for r in project["dependencies"])
    files[f"{info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        f"Requires-Python: {project['requires-python']}\n{requires}"
    ).encode()
    scripts = "".join(f"{k} = {v}\n" for k, v in project["scripts"].items())
    files[f"{info}/entry_points.txt"] = f"[console_scripts]\n{scripts}".encode()
    files[f"{info}/WHEEL"] = b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    return _write_wheel(out / f"{name}-{version}-py3-none-any.whl", files, info)


def _needed(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions that ``requirements`` need at run time (their closure, without extras)."""
    found: dict[str, metadata.Distribution] = {}
    todo = [Requirement(text).name for text in requirements]
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        (dist,) = [d for d in metadata.distributions(path=[str(VENV_SITE)])
                   if canonicalize_name(d.metadata["Name"]) == name]
        found[name] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def _repack(dist: metadata.Distribution, out: Path) -> Path:
    """A wheel holding an installed distribution's files (from its RECORD) and its original wheel tag."""
    info = next(VENV_SITE / str(f) for f in dist.files or [] if f.name == "METADATA").parent
    tags = [line.split(":", 1)[1].strip() for line in (info / "WHEEL").read_text().splitlines()
            if line.startswith("Tag:")]
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    skip = {"INSTALLER", "REQUESTED", "direct_url.json", "RECORD"}
    files = {
        str(entry): (VENV_SITE / str(entry)).read_bytes()
        for entry in dist.files or []
        if not str(entry).startswith("..") and "__pycache__" not in str(entry) and entry.name not in skip
    }
    return _write_wheel(out / f"{name}-{dist.version}-{tags[0]}.whl", files, info.name)


def _seeded_machine(name: str, tmp: Path, wheel_dir: Path, user_data: str) -> Machine:
    staging = tmp / "staging"
    seed = staging / "seed"
    seed.mkdir(parents=True)
    (seed / "user-data").write_text(user_data)
    (seed / "meta-data").write_text("instance-id: iid-fleet-cloud-init-test\n")
    (seed / "vendor-data").write_text(VENDOR_DATA)
    dpkg = staging / "dpkg"
    shutil.copytree("/var/lib/dpkg", dpkg, symlinks=True)
    local_bin = staging / "local-bin"
    local_bin.mkdir()
    binds = (
        Bind(Path("/etc/cloud"), "/etc/cloud"),
        Bind(seed, SEED),
        Bind(wheel_dir, WHEELHOUSE),
        Bind(dpkg, "/var/lib/dpkg", writable=True),
        Bind(local_bin, "/usr/local/bin", writable=True),
    )
    state = tmp / "state"
    machine = Machine(name, state, authorized_key=client_key(state), binds=binds)
    try:
        machine.put_file("/etc/pip.conf", f"[global]\nno-index = true\nfind-links = {WHEELHOUSE}\n")
        machine.boot()
    except BaseException:
        machine.destroy()
        raise
    return machine


def _listed(endpoint: str, machine_id: str, deadline: float) -> str:
    row = ""
    while time.monotonic() < deadline and not row:
        listed = subprocess.run(
            [str(CHECKOUT / ".venv/bin/fleetctl"), "--endpoint", endpoint, "list-machines", "--full",
             "--no-legend"], capture_output=True, text=True, timeout=30, check=False,
        )
        row = next((line for line in listed.stdout.splitlines() if line.startswith(machine_id)), "")
        if not row:
            time.sleep(0.5)
    return row


def test_worker_yaml_makes_a_machine_join_the_cluster(tmp_path: Path, etcd_server: EtcdServer) -> None:
    wheel_dir = tmp_path / "wheelhouse"
    wheel_dir.mkdir()
    fleet_wheel = _build_fleet_wheel(wheel_dir)
    # From pyproject.toml's dependencies, not from the installed project (whose name may be an older one).
    for dist in _needed(tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]["dependencies"]):
        _repack(dist, wheel_dir)

    name = f"ci{uuid.uuid4().hex[:6]}"
    metadata_text = f"role=cloud,hostname={name}"
    user_data = render("worker.yaml", {
        "ETCD_SERVERS": etcd_server.endpoint,
        "METADATA": metadata_text,
        "FLEET_PACKAGE": f"{WHEELHOUSE}/{fleet_wheel.name}",
    })
    machine = _seeded_machine(name, tmp_path, wheel_dir, user_data)
    try:
        started = machine.run(["systemctl", "start", *CLOUD_INIT_UNITS], timeout=600)
        status = machine.run(["cloud-init", "status", "--long"], timeout=60).stdout
        log = machine.run(["tail", "-n", "40", "/var/log/cloud-init-output.log"]).stdout
        warnings = machine.run(["grep", "-E", "WARNING|ERROR|Traceback", "/var/log/cloud-init.log"]).stdout
        report = f"{started.stderr}\n{status}\n{warnings[-4000:]}\n{log}"
        assert started.returncode == 0, report
        assert "status: done" in status, report

        expected = written_files(user_data)
        for path in ("/etc/fleet/fleet.conf", "/etc/systemd/system/fleetd.service"):
            assert machine.run(["cat", path], check=True).stdout == expected[path].content
        active = machine.run(["systemctl", "is-active", "fleetd.service"]).stdout.strip()
        assert active == "active", log[-3000:]
        assert machine.run(["systemctl", "is-enabled", "fleetd.service"]).stdout.strip() == "enabled"
        installed = machine.run(["/opt/fleet/bin/python", "-c", "import fleetd; print(fleetd.__file__)"],
                                check=True).stdout
        assert installed.startswith("/opt/fleet/lib/")  # from the wheel, not the bound checkout

        row = _listed(etcd_server.endpoint, machine.machine_id, time.monotonic() + 60)
        assert row, f"{machine.machine_id} not in fleetctl list-machines"
        assert "role=cloud" in row and f"hostname={name}" in row
        inside = machine.run(["/usr/local/bin/fleetctl", "--endpoint", etcd_server.endpoint,
                              "list-machines", "--full", "--no-legend"], timeout=60)
        assert machine.machine_id in inside.stdout, inside.stderr
    finally:
        machine.destroy()
