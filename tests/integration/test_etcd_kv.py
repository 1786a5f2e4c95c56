"""The KV contract on a real etcd, plus what only a real etcd can show: failover, timeouts, restarts, auth."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest

from devcluster.etcd import EtcdServer, free_port
from fleetd.errors import RegistryError, RegistryUnavailable
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.kv import KV, Put
from tests.contract.kv_contract import KVContract, Scenario, collect


class EtcdHarness:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.prefix = f"/t/{uuid.uuid4().hex}/"

    def run(self, scenario: Scenario) -> None:
        async def main() -> None:
            kv = EtcdKV([self.endpoint], request_timeout=5.0)
            try:
                await scenario(kv)
            finally:
                await kv.close()

        asyncio.run(main())

    async def let_time_pass(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # lease time on a real etcd is real time

    async def compact(self, kv: KV, revision: int) -> None:
        assert isinstance(kv, EtcdKV)
        await kv.compact(revision)


@pytest.fixture
def harness(etcd_server: EtcdServer) -> EtcdHarness:
    return EtcdHarness(etcd_server.endpoint)


class TestEtcdKV(KVContract):
    pass


@pytest.fixture
def own_etcd() -> Iterator[EtcdServer]:
    """An etcd of its own, for tests that pause, restart or reconfigure it."""
    with EtcdServer() as server:
        yield server


def test_a_dead_endpoint_fails_over_to_a_live_one(aio: asyncio.Runner, etcd_server: EtcdServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    async def main() -> None:
        kv = EtcdKV([dead, etcd_server.endpoint], request_timeout=5)
        try:
            key = f"/t/{uuid.uuid4().hex}"
            rev = await kv.put(key, "v")
            it = aiter(kv.watch(key, rev))
            assert [e.kv.value for b in await collect(it, 1) for e in b] == ["v"]
            await it.aclose()  # type: ignore[attr-defined]
            await kv.delete(key)
        finally:
            await kv.close()
        only_dead = EtcdKV([dead], request_timeout=2)
        try:
            with pytest.raises(RegistryUnavailable):
                await only_dead.get("/x")
        finally:
            await only_dead.close()

    aio.run(main())


def test_a_paused_etcd_times_out_as_unavailable(aio: asyncio.Runner, own_etcd: EtcdServer) -> None:
    async def main() -> None:
        kv = EtcdKV([own_etcd.endpoint], request_timeout=1)
        try:
            await kv.put("/k", "v")
            own_etcd.pause()
            try:
                started = time.monotonic()
                with pytest.raises(RegistryUnavailable):
                    await kv.get("/k")
                with pytest.raises(RegistryUnavailable):
                    await kv.keep_alive(1)
                assert time.monotonic() - started < 4
            finally:
                own_etcd.resume()
            got = await kv.get("/k")
            assert got is not None and got.value == "v"
        finally:
            await kv.close()

    aio.run(main())


def test_a_watch_resumes_after_an_etcd_restart_without_losing_events(
    aio: asyncio.Runner, own_etcd: EtcdServer
) -> None:
    async def main() -> None:
        kv = EtcdKV([own_etcd.endpoint], request_timeout=2)
        try:
            start = await kv.put("/w/a", "1")
            it = aiter(kv.watch("/w/", start))
            assert [e.kv.value for b in await collect(it, 1) for e in b] == ["1"]
            own_etcd.restart()
            etcdctl = ["etcdctl", "--endpoints", own_etcd.endpoint, "put", "/w/b", "2"]
            await asyncio.to_thread(subprocess.run, etcdctl, check=True, capture_output=True)
            await kv.put("/w/c", "3")
            events = [e for b in await collect(it, 2, within=20) for e in b]
            assert [(e.kv.key, e.kv.value) for e in events] == [("/w/b", "2"), ("/w/c", "3")]
            await it.aclose()  # type: ignore[attr-defined]
        finally:
            await kv.close()

    aio.run(main())


def test_a_thousand_watches_share_one_client(aio: asyncio.Runner, etcd_server: EtcdServer) -> None:
    prefix = f"/t/{uuid.uuid4().hex}/"

    async def main() -> None:
        kv = EtcdKV([etcd_server.endpoint], request_timeout=10)
        try:
            start = await kv.put(prefix + "seed", "s")
            its = [aiter(kv.watch(f"{prefix}m/{i:04}/", start)) for i in range(1000)]
            for base in range(0, 1000, 125):
                await kv.txn([], [Put(f"{prefix}m/{i:04}/u", str(i)) for i in range(base, base + 125)])
            for i, it in enumerate(its):
                assert [e.kv.value for b in await collect(it, 1) for e in b] == [str(i)]
            for it in its:
                await it.aclose()  # type: ignore[attr-defined]
            leases = await asyncio.gather(*(kv.grant(30) for _ in range(200)))
            rev = (await kv.range(prefix)).revision
            ttls = await asyncio.gather(*(kv.keep_alive(lease) for lease in leases))
            assert all(ttl >= 30 for ttl in ttls)
            assert (await kv.range(prefix)).revision == rev
            await asyncio.gather(*(kv.revoke(lease) for lease in leases))
            await kv.delete(prefix, prefix=True)
        finally:
            await kv.close()

    aio.run(main())


def test_username_and_password_auth(aio: asyncio.Runner) -> None:
    with EtcdServer(extra_args=("--auth-token", "simple")) as server:
        def ctl(*args: str) -> None:
            command = ["etcdctl", "--endpoints", server.endpoint, *args]
            subprocess.run(command, check=True, capture_output=True)

        ctl("user", "add", "root:s3cret")
        ctl("auth", "enable")

        async def main() -> None:
            kv = EtcdKV([server.endpoint], request_timeout=5, username="root", password="s3cret")
            try:
                await kv.put("/a", "1")
                lease = await kv.grant(10)
                assert await kv.keep_alive(lease) >= 10
                it = aiter(kv.watch("/", 1))
                assert [e.kv.value for b in await collect(it, 1) for e in b] == ["1"]
                await it.aclose()  # type: ignore[attr-defined]
            finally:
                await kv.close()
            anonymous = EtcdKV([server.endpoint], request_timeout=5)
            wrong = EtcdKV([server.endpoint], request_timeout=5, username="root", password="nope")
            try:
                with pytest.raises(RegistryError):
                    await anonymous.put("/a", "2")
                with pytest.raises(RegistryError):
                    await wrong.get("/a")
            finally:
                await anonymous.close()
                await wrong.close()

        aio.run(main())


def test_the_etcd_kv_fixture(aio: asyncio.Runner, etcd_kv: EtcdKV, etcd_prefix: str) -> None:
    aio.run(etcd_kv.put(etcd_prefix + "k", "v"))
    got = aio.run(etcd_kv.get(etcd_prefix + "k"))
    assert got is not None and got.value == "v"
