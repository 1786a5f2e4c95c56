"""Fixtures for real systemd machines (systemd-nspawn, DESIGN.md §9).

``cluster``: three machines booted once per session and shared; a test that loads units must unload them.
``machine``: a fresh machine for one test, which may power it off, kill or reboot it.
Both stop every process they started by PID and remove their files, also when a test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devcluster.nspawn import Machine, boot_machines, client_key, stop_leftovers, write_known_hosts

__all__ = ["Cluster", "cluster", "machine", "machine_state_dir"]

CLUSTER_SIZE = 3


@dataclass(frozen=True)
class Cluster:
    machines: tuple[Machine, ...]
    state_dir: Path
    key: Path  # SSH client key authorized for root on every machine
    known_hosts: Path  # host keys of every machine, for strict checking


def _prefix() -> str:
    return f"it{uuid.uuid4().hex[:4]}-"


@pytest.fixture(scope="session")
def machine_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    state_dir = tmp_path_factory.mktemp("machines")
    try:
        yield state_dir
    finally:
        stop_leftovers(state_dir)


@pytest.fixture(scope="session")
def cluster(machine_state_dir: Path) -> Iterator[Cluster]:
    state_dir = machine_state_dir / "cluster"
    machines = boot_machines(CLUSTER_SIZE, state_dir, prefix=_prefix())
    try:
        yield Cluster(
            machines=tuple(machines),
            state_dir=state_dir,
            key=client_key(state_dir),
            known_hosts=write_known_hosts(machines, state_dir / "known_hosts"),
        )
    finally:
        for machine in machines:
            machine.destroy()


@pytest.fixture
def machine(machine_state_dir: Path) -> Iterator[Machine]:
    state_dir = machine_state_dir / "single"
    (booted,) = boot_machines(1, state_dir, prefix=_prefix())
    try:
        yield booted
    finally:
        booted.destroy()
