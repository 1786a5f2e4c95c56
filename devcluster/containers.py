"""The node's container configuration for a machine: podman reads ``/etc/containers`` (policy.json above all:
``podman import`` refuses to store an image without it), which a volatile machine's empty ``/etc`` lacks.

A copy of the host's ``/etc/containers`` (when podman is installed) is bound read-only into the machine, with
one addition in ``containers.conf``: ``keyring = false``. systemd-nspawn's system call filter refuses
``keyctl`` in its machines, and crun's default of a fresh session keyring per container fails there
("create keyring ...: Operation not permitted"); a real node has no such filter and needs no such line.
"""

from __future__ import annotations

import shutil
from pathlib import Path

__all__ = ["HOST_CONFIG", "containers_binds", "with_keyring_off"]

HOST_CONFIG = Path("/etc/containers")
SETTING = "keyring = false  # systemd-nspawn refuses keyctl: no session keyring per container\n"


def containers_binds(directory: Path, host: Path = HOST_CONFIG) -> list[tuple[Path, str]]:
    """(source, target) pairs to bind read-only: ``directory`` made a copy of ``host`` plus the nspawn
    setting, at ``/etc/containers``; nothing when the host has no container configuration."""
    if not (host / "policy.json").is_file():
        return []
    shutil.copytree(host, directory, symlinks=True)
    conf = directory / "containers.conf"
    existing = conf.read_text() if conf.exists() else ""
    conf.write_text(with_keyring_off(existing))
    return [(directory, str(HOST_CONFIG))]


def with_keyring_off(conf: str) -> str:
    """``conf`` (containers.conf text) with ``keyring = false`` in its ``[containers]`` table (unless it sets
    keyring already)."""
    lines = conf.splitlines(keepends=True)
    if any(line.split("=")[0].strip() == "keyring" for line in lines):
        return conf
    for index, line in enumerate(lines):
        if line.strip() == "[containers]":
            return "".join([*lines[: index + 1], SETTING, *lines[index + 1:]])
    separator = "\n" if conf and not conf.endswith("\n") else ""
    return f"{conf}{separator}[containers]\n{SETTING}"
