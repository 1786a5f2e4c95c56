"""Fixtures for a real etcd.

- ``etcd_server`` (session): one Debian etcd on 127.0.0.1, random ports, tmp data dir, stopped by PID.
- ``etcd_prefix`` (function): a key prefix no other test uses, e.g. ``/t/3f2a.../``.
- ``aio`` (function): an ``asyncio.Runner``; run coroutines with ``aio.run(...)`` (one loop per test).
- ``etcd_kv`` (function): an ``EtcdKV`` on ``etcd_server`` for use inside ``aio``'s loop; on teardown the
  keys under ``etcd_prefix`` are deleted and the client is closed.

    def test_x(aio, etcd_kv, etcd_prefix):
        aio.run(etcd_kv.put(etcd_prefix + "k", "v"))
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest

from devcluster.etcd import EtcdServer
from fleetd.registry.etcd import EtcdKV

__all__ = ["aio", "etcd_kv", "etcd_prefix", "etcd_server"]


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    server = EtcdServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def etcd_prefix() -> str:
    return f"/t/{uuid.uuid4().hex}/"


@pytest.fixture
def aio() -> Iterator[asyncio.Runner]:
    with asyncio.Runner() as runner:
        yield runner


@pytest.fixture
def etcd_kv(etcd_server: EtcdServer, etcd_prefix: str, aio: asyncio.Runner) -> Iterator[EtcdKV]:
    kv = EtcdKV([etcd_server.endpoint], request_timeout=5.0)
    try:
        yield kv
    finally:
        async def teardown() -> None:
            try:
                await kv.delete(etcd_prefix, prefix=True)
            finally:
                await kv.close()

        aio.run(teardown())
