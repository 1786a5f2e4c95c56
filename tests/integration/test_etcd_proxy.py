"""The partition proxy (devcluster/proxy.py) on a real etcd: open, it forwards; cut, requests time out and
a lease lapses; healed, the same client works again. Real sockets throughout."""

from __future__ import annotations

import asyncio

import pytest

from devcluster.etcd import EtcdServer, free_port
from devcluster.proxy import EtcdProxy
from fleetd.errors import RegistryUnavailable
from fleetd.registry.etcd import EtcdKV


def test_a_cut_proxy_times_requests_out_and_a_healed_one_forwards_again(etcd_server: EtcdServer) -> None:
    async def scenario(proxy: EtcdProxy) -> None:
        kv = EtcdKV([proxy.endpoint], request_timeout=1.0)
        try:
            lease = await kv.grant(2)
            assert await kv.keep_alive(lease) > 0
            proxy.cut()
            with pytest.raises(RegistryUnavailable):
                await kv.keep_alive(lease)
            direct = EtcdKV([etcd_server.endpoint], request_timeout=1.0)
            try:
                async with asyncio.timeout(10):
                    while await direct.time_to_live(lease) >= 0:  # noqa: ASYNC110  (-1 once expired)
                        await asyncio.sleep(0.2)  # poll: etcd expires the lease behind the cut
            finally:
                await direct.close()
            proxy.heal()
            async with asyncio.timeout(10):
                while True:
                    try:
                        assert await kv.keep_alive(lease) <= 0, "the lease lapsed behind the cut"
                        break
                    except RegistryUnavailable:
                        await asyncio.sleep(0.2)  # the client reconnects after the heal
        finally:
            await kv.close()

    with EtcdProxy(free_port(), etcd_server.endpoint) as proxy:
        asyncio.run(scenario(proxy))
        assert proxy.running
    assert not proxy.running
