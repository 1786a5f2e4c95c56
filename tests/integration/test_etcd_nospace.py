"""etcd's NOSPACE alarm on a real etcd with a tiny quota: fleet says so in one line and recovers.

The store is filled until etcd raises the alarm. Then writes fail with a RegistryError that names the
alarm and what to do; ``fleetctl submit`` prints it as one ``Error:`` line and exits 1; a lease is still
kept alive (fleetd's machines stay listed and their units keep running) and reads work. After compact,
defrag and ``etcdctl alarm disarm`` writes and ``fleetctl submit`` work again.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devcluster.cluster import FLEETCTL
from devcluster.etcd import EtcdServer
from fleetd.errors import RegistryError
from fleetd.registry.etcd import EtcdKV

QUOTA = 8 * 1024 * 1024
VALUE = "x" * (512 * 1024)
UNIT = Path(__file__).parent / "e2e" / "fixtures" / "hello.service"


@pytest.fixture
def small_etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(data_dir=tmp_path / "etcd", extra_args=("--quota-backend-bytes", str(QUOTA)))
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


def fleetctl(endpoint: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(FLEETCTL), "--endpoint", endpoint, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def etcdctl(endpoint: str, *args: str) -> str:
    done = subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args], capture_output=True, text=True, timeout=60, check=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
    )
    return done.stdout


def test_nospace_is_one_clear_line_and_fleet_recovers_once_it_is_cleared(small_etcd: EtcdServer) -> None:
    endpoint = small_etcd.endpoint

    async def fill() -> str:
        kv = EtcdKV([endpoint], request_timeout=5.0)
        try:
            lease = await kv.grant(30)
            for number in range(4 * QUOTA // len(VALUE)):
                try:
                    await kv.put(f"/filler/{number}", VALUE)
                except RegistryError as exc:
                    assert await kv.keep_alive(lease) > 0, "keep-alives still work under the alarm"
                    assert (await kv.range("/filler/", limit=1)).kvs, "reads still work"
                    return str(exc)
            raise AssertionError("the NOSPACE alarm never fired")
        finally:
            await kv.close()

    message = asyncio.run(fill())
    assert "NOSPACE" in message and "etcdctl alarm disarm" in message and "\n" not in message
    assert "NOSPACE" in etcdctl(endpoint, "alarm", "list")

    refused = fleetctl(endpoint, "submit", str(UNIT))
    assert refused.returncode == 1, refused
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "NOSPACE" in lines[0], refused.stderr
    assert "Traceback" not in refused.stderr

    etcdctl(endpoint, "del", "--prefix", "/filler/")  # deletes are allowed under the alarm
    status = etcdctl(endpoint, "endpoint", "status", "--write-out", "fields")
    current = next(line for line in status.splitlines() if line.startswith('"Revision"'))
    etcdctl(endpoint, "compact", current.split(":")[1].strip())
    etcdctl(endpoint, "defrag")
    etcdctl(endpoint, "alarm", "disarm")

    accepted = fleetctl(endpoint, "submit", str(UNIT))
    assert accepted.returncode == 0, accepted
    assert "hello.service" in fleetctl(endpoint, "list-unit-files").stdout
