"""Fixtures for a real sshd on loopback.

- ``agent`` (function): a real ssh-agent holding one key, exported as ``SSH_AUTH_SOCK``.
- ``sshd`` (function): OpenSSH's sshd on 127.0.0.1 (random port) that accepts the agent's key for root.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.sshd import SshAgent, SshServer

__all__ = ["agent", "sshd"]


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SshAgent]:
    with SshAgent(tmp_path / "agent") as running:
        monkeypatch.setenv("SSH_AUTH_SOCK", running.socket)
        yield running


@pytest.fixture
def sshd(tmp_path: Path, agent: SshAgent) -> Iterator[SshServer]:
    with SshServer(tmp_path / "sshd-a", [agent.public_key]) as server:
        yield server
