"""A fleetd-like process for benchmarks: ``fleetd.server.main`` itself (configuration, one EtcdKV, the Agent
and the Engine wired as ``build_components`` wires them), with a FakeUnitManager in place of systemd and,
optionally, a benchmark engine class. Run only in a child process: it owns the process's signals and loop.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fleetd.engine.engine import Engine
    from fleetd.server import Components
    from fleetd.systemd.fake import FakeUnitManager

__all__ = ["run_fleetd", "status_mb"]

Report = Callable[["Components", "FakeUnitManager", "Engine"], Coroutine[object, object, None]]


def status_mb(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_fleetd(
    machine_hex: str, report: Report, engine_class: type[Engine] | None = None, api_socket: str = ""
) -> int:
    """Run fleetd against ``$BENCH_ETCD`` as machine ``machine_hex``; ``report`` runs beside it as a task.
    With ``api_socket``, the HTTP API is served there (as fleetd serves it on /var/run/fleet.sock)."""
    from fleetd import server  # noqa: PLC0415 (the child alone imports fleetd's composition root)
    from fleetd.agent.agent import Agent, Handover  # noqa: PLC0415
    from fleetd.agent.identity import machine_state  # noqa: PLC0415
    from fleetd.api.listen import ApiServer  # noqa: PLC0415
    from fleetd.config import Config  # noqa: PLC0415
    from fleetd.engine.engine import Engine  # noqa: PLC0415
    from fleetd.model import MachineID  # noqa: PLC0415
    from fleetd.registry.etcd import EtcdKV  # noqa: PLC0415
    from fleetd.registry.registry import Registry  # noqa: PLC0415
    from fleetd.systemd.fake import FakeUnitManager  # noqa: PLC0415

    tasks: list[asyncio.Task[None]] = []

    async def factory(cfg: Config, machine_id: MachineID, handover: Handover | None) -> server.Components:
        kv = EtcdKV(cfg.etcd_servers, request_timeout=cfg.etcd_request_timeout)
        manager = FakeUnitManager()
        machine = machine_state(machine_id, cfg.public_ip, dict(cfg.metadata))
        agent = Agent(
            Registry(kv, cfg.etcd_key_prefix), manager, machine, ttl=cfg.agent_ttl, handover=handover
        )
        interval = cfg.engine_reconcile_interval
        engine = (engine_class or Engine)(
            kv,
            str(machine_id),
            prefix=cfg.etcd_key_prefix,
            interval=interval,
            ttl=server.ENGINE_TTL_FACTOR * interval,
            grace=cfg.agent_ttl,
        )
        api = None
        if api_socket:
            api = ApiServer(Registry(kv, cfg.etcd_key_prefix), socket_path=api_socket, listen="",
                            token_limit=cfg.token_limit)
        components = server.Components(kv, manager, agent, engine, api)
        tasks.append(asyncio.get_running_loop().create_task(report(components, manager, engine)))
        return components

    with tempfile.TemporaryDirectory(prefix="fleet-bench-") as tmp:
        conf = Path(tmp) / "fleet.conf"
        conf.write_text("")
        machine_id = Path(tmp) / "machine-id"
        machine_id.write_text(machine_hex + "\n")
        env = {
            "FLEET_ETCD_SERVERS": os.environ["BENCH_ETCD"],
            "FLEET_PUBLIC_IP": "127.0.0.1",
            "FLEET_VERBOSITY": "0",
        }
        argv = ["fleetd", "--config", str(conf)]
        return server.main(argv, env, factory=factory, machine_id_path=str(machine_id))
