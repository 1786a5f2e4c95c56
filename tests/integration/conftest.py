"""Integration tests run on real parts: etcd, systemd-nspawn machines, sshd. They need root on Debian 12."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.integration.fixtures_cluster import *  # noqa: F403
from tests.integration.fixtures_etcd import *  # noqa: F403
from tests.integration.fixtures_ssh import *  # noqa: F403

_NEEDS = ("etcd", "systemd-nspawn", "sshd")


def _absent() -> str | None:
    if os.geteuid() != 0:
        return "integration tests need root (nspawn machines, loopback addresses)"
    missing = [b for b in _NEEDS if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]
    if missing:
        return f"not installed: {', '.join(missing)} (scripts/setup installs them)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _absent()
    for item in items:
        if "tests/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))
