import asyncio, gc, time, sys
from bench.fill import Filled
from bench import engine_sweep as es
from devcluster.etcd import EtcdServer
from fleetd.registry.etcd import EtcdKV

gcs = []
_t = {}
def cb(phase, info):
    if phase == "start": _t["s"] = time.perf_counter()
    else: gcs.append((info["generation"], time.perf_counter() - _t["s"]))
gc.callbacks.append(cb)

async def main(units, freeze):
    with EtcdServer(extra_args=("--quota-backend-bytes", str(8 << 30))) as etcd:
        kv = EtcdKV([etcd.endpoint], request_timeout=120.0)
        async with Filled(kv, "/s/", 1000) as filled:
            t = time.monotonic(); await filled.add_units(units); print("fill", time.monotonic() - t, flush=True)
            await asyncio.sleep(0.5)
            if freeze: gc.freeze()
            gcs.clear()
            secs, lags = await es._passes(filled, 20, 60)
            lags.sort()
            print("passes", len(secs), "median", sorted(secs)[len(secs)//2], "lag max", lags[-1], "p99", es._p99(lags))
            big = sorted(gcs, key=lambda g: -g[1])[:5]
            print("gc", len(gcs), "gen2", sum(1 for g in gcs if g[0] == 2), "worst", big)
        await kv.close()
asyncio.run(main(int(sys.argv[1]), len(sys.argv) > 2))
