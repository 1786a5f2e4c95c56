"""etcd compaction while a watcher is behind, on a real etcd: the mirror relists and misses nothing.

The mirror's client reaches etcd through a partition proxy (devcluster/proxy.py). Cut, it falls behind
while keys are put, changed and deleted and etcd compacts past its revision; healed, its watch resumes
from a compacted revision, the mirror relists and holds exactly what etcd holds, then follows events.
"""

from __future__ import annotations

import asyncio

from devcluster.etcd import EtcdServer, free_port
from devcluster.proxy import EtcdProxy
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.mirror import Mirror


def test_a_mirror_behind_a_compaction_relists_and_converges(
    etcd_server: EtcdServer, etcd_prefix: str
) -> None:
    a, b = etcd_prefix + "a/", etcd_prefix + "b/"

    async def scenario(proxy: EtcdProxy) -> None:
        direct = EtcdKV([etcd_server.endpoint], request_timeout=5.0)
        behind = EtcdKV([proxy.endpoint], request_timeout=1.0)
        mirror = Mirror(behind, [a, b], retry_delay=0.2)
        task = asyncio.create_task(mirror.run())
        try:
            await direct.put(a + "gone", "1")
            await direct.put(a + "changed", "old")
            seen = await direct.put(b + "kept", "1")
            await asyncio.wait_for(mirror.wait_for(seen, b), 10)
            proxy.cut()
            await direct.delete(a + "gone")
            await direct.put(a + "changed", "new")
            await direct.put(a + "added", "1")
            now = await direct.put(b + "added", "1")
            await direct.compact(now)
            proxy.heal()
            await asyncio.wait_for(mirror.wait_for(now, a), 30)
            await asyncio.wait_for(mirror.wait_for(now, b), 30)
            assert mirror.relists >= 1
            for prefix in (a, b):
                stored = {item.key: item.value for item in (await direct.range(prefix)).kvs}
                assert {key: item.value for key, item in mirror.items(prefix).items()} == stored
            later = await direct.put(a + "after", "1")
            await asyncio.wait_for(mirror.wait_for(later, a), 10)
            assert a + "after" in mirror.items(a)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await direct.delete(etcd_prefix, prefix=True)
            await behind.close()
            await direct.close()

    with EtcdProxy(free_port(), etcd_server.endpoint) as proxy:
        asyncio.run(scenario(proxy))
