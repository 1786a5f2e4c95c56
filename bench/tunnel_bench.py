"""What the SSH tunnel costs: a small fleetctl-sized job direct vs through the tunnel, on real sshd and etcd.

A "command" is what one fleetctl invocation does: open a client, a few etcd reads, close. Through the tunnel
it also makes one SSH connection (handshake + auth with a real ssh-agent) and carries every gRPC call over one
forwarded channel. Also timed: a remote command over an existing connection vs one hop through a bastion.

    .venv/bin/python bench/tunnel_bench.py [--rounds N]

Prints medians and the overhead; the target is an overhead of at most 100 ms per command.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devcluster.etcd import EtcdServer  # noqa: E402
from devcluster.sshd import SshAgent, SshServer  # noqa: E402
from fleetctl.ssh import tunnel  # noqa: E402
from fleetd.model import MachineID, MachineState  # noqa: E402
from fleetd.registry.etcd import EtcdKV  # noqa: E402

TARGET_MS = 100.0
READS = 5  # etcd calls per command (list-units reads a few prefixes)


async def _reads(endpoint: str) -> None:
    kv = EtcdKV([endpoint], request_timeout=5.0)
    try:
        for _ in range(READS):
            await kv.range("/_coreos.com/fleet/")
    finally:
        await kv.close()


def _median_ms(job: Callable[[], object], rounds: int) -> float:
    job()  # warm up
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        job()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    from fleetctl.ssh import remote  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="fleet-tunnel-bench-") as tmp_text:
        tmp = Path(tmp_text)
        with (
            SshAgent(tmp / "agent") as agent,
            SshServer(tmp / "bastion", [agent.public_key]) as bastion,
            SshServer(tmp / "target", [agent.public_key]) as target,
            EtcdServer() as etcd,
        ):
            os.environ["SSH_AUTH_SOCK"] = agent.socket
            etcd.wait_healthy()
            settings = tunnel.SSHSettings(user="root", strict=False, use_default_keys=False)
            bastion_at = f"{bastion.host}:{bastion.port}"

            def direct() -> None:
                asyncio.run(_reads(etcd.endpoint))

            def tunneled() -> None:
                with tunnel.tunneled_endpoints(bastion_at, [etcd.endpoint], settings) as (endpoint,):
                    asyncio.run(_reads(endpoint))

            direct_ms = _median_ms(direct, rounds)
            tunnel_ms = _median_ms(tunneled, rounds)
            overhead = tunnel_ms - direct_ms
            print(f"command ({READS} etcd reads) direct:   {direct_ms:7.1f} ms (median of {rounds})")
            print(f"command ({READS} etcd reads) tunnel:   {tunnel_ms:7.1f} ms")
            verdict = "OK" if overhead <= TARGET_MS else "OVER TARGET"
            target_text = f"target <= {TARGET_MS:.0f} ms"
            print(f"tunnel overhead per command:      {overhead:7.1f} ms ({target_text}) {verdict}")

            machine = MachineState(MachineID("t" * 32), public_ip=target.host)
            sink = io.BytesIO()

            def remote_direct() -> None:
                with remote.SSHRunner(settings, stdout=sink) as runner:
                    runner.run(machine, ["true"], target.port)

            def remote_hop() -> None:
                with remote.SSHRunner(settings, bastion_at, stdout=sink) as runner:
                    runner.run(machine, ["true"], target.port)

            with tunnel.connect(target.host, target.port, settings) as open_connection:
                exec_ms = _median_ms(lambda: open_connection.run("true", stdout=sink, stderr=sink), rounds)
            remote_ms = _median_ms(remote_direct, rounds)
            hop_ms = _median_ms(remote_hop, rounds)
            print(f"remote `true` on an open connection: {exec_ms:7.1f} ms (sshd session + shell)")
            print(f"remote `true`, connect direct:       {remote_ms:7.1f} ms")
            print(f"remote `true`, hop via bastion:      {hop_ms:7.1f} ms (+{hop_ms - remote_ms:.1f} ms)")


if __name__ == "__main__":
    main()
