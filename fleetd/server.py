"""fleetd's composition root: configuration, logging, the adapters, the agent and the engine, and signals.

``fleetd [--config PATH] [--version]``. The agent and (unless ``disable_engine``) the engine run as asyncio
tasks in one TaskGroup. SIGTERM/SIGINT: stop the components, stop and unload this machine's units, remove its
states and record (the engine resigns as it stops), exit 0. SIGHUP: re-read the configuration and restart the
components; units keep running and the agent keeps its lease. Under systemd (Type=notify) fleetd sends
READY=1 once its components run and WATCHDOG=1 at half of WatchdogSec. This is the only module that
configures logging.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from fleetd import metrics
from fleetd.agent.agent import Agent, Handover
from fleetd.agent.identity import machine_state, read_machine_id
from fleetd.agent.plan import FencePolicy
from fleetd.api.listen import ApiServer
from fleetd.config import (
    DEFAULT_CONFIG_PATH,
    Config,
    Invocation,
    UsageError,
    help_text,
    load_config,
    parse_args,
    unit_cap,
)
from fleetd.engine.engine import Engine
from fleetd.errors import ConfigError, FleetError
from fleetd.model import VERSION, MachineID
from fleetd.registry.etcd import EtcdKV
from fleetd.registry.kv import KV
from fleetd.registry.registry import Registry
from fleetd.sdnotify import Notifier
from fleetd.systemd.dbus import DbusUnitManager
from fleetd.systemd.protocol import UnitManager

__all__ = ["Components", "Runnable", "Server", "build_components", "configure_logging", "main"]

logger = logging.getLogger(__name__)

USAGE = "Usage: fleetd [--config PATH] [--KEY VALUE ...] [--version] [--help]"
ENGINE_TTL_FACTOR = 5  # the engine leader lease is 5 reconcile intervals (as fleet)


class Runnable(Protocol):
    """What the server needs of the engine shell: run until cancelled, resigning leadership on the way out."""

    async def run(self) -> None: ...


@dataclass(slots=True)
class Components:
    """One generation of running parts, built from one Config; a reload builds the next."""

    kv: KV
    units: UnitManager
    agent: Agent
    engine: Runnable | None = None
    api: Runnable | None = None

    async def close(self) -> None:
        for close in (self.units.close, self.kv.close):
            try:
                await close()
            except FleetError as exc:
                logger.warning("closing: %s", exc)


Factory = Callable[[Config, MachineID, "Handover | None"], Awaitable[Components]]


async def build_components(config: Config, machine_id: MachineID, handover: Handover | None) -> Components:
    """The real adapters: etcd over gRPC, systemd over D-Bus. The only place that names them."""
    if config.systemd_user:
        logger.warning("systemd_user is not supported; using the system bus")
    kv = EtcdKV(
        config.etcd_servers,
        request_timeout=config.etcd_request_timeout,
        ca_file=config.etcd_cafile or None,
        cert_file=config.etcd_certfile or None,
        key_file=config.etcd_keyfile or None,
        username=config.etcd_username or None,
        password=config.etcd_password or None,
        observe=metrics.observe_etcd_request,
    )
    try:
        units = await DbusUnitManager.connect_retrying(Path(config.units_directory))
    except FleetError:
        await kv.close()
        raise
    cap = unit_cap(config.max_units, config.metadata)
    machine = machine_state(machine_id, config.public_ip, dict(config.metadata), max_units=cap)
    registry = Registry(kv, config.etcd_key_prefix)
    fence = FencePolicy(config.fence_units)
    agent = Agent(registry, units, machine, ttl=config.agent_ttl, fence=fence, handover=handover)
    engine = None
    if not config.disable_engine:
        interval = config.engine_reconcile_interval
        engine = Engine(
            kv, machine_id, prefix=config.etcd_key_prefix, interval=interval,
            ttl=ENGINE_TTL_FACTOR * interval, grace=config.agent_ttl,
        )
    api = None
    if not config.disable_api and (config.api_socket or config.api_listen):
        api = ApiServer(
            registry, socket_path=config.api_socket, listen=config.api_listen, token_limit=config.token_limit,
            machine_id=machine_id,
        )
    return Components(kv, units, agent, engine, api)


class Server:
    """Runs generations of components until SIGTERM; ``request("stop" | "reload")`` acts as a signal does.
    A lost connection to systemd ends a generation too: the next one connects again and takes over the
    agent's lease and units, as a reload does."""

    def __init__(
        self,
        config: Config,
        machine_id: MachineID,
        *,
        reload_config: Callable[[], Config],
        config_path: str = DEFAULT_CONFIG_PATH,
        factory: Factory = build_components,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.machine_id = machine_id
        self._reload_config = reload_config
        self._config_path = config_path
        self._factory = factory
        self._notifier = notifier or Notifier(None)
        self._requests: asyncio.Queue[str] = asyncio.Queue()
        self.components: Components | None = None
        self.started = asyncio.Event()  # set whenever a generation of components is running

    def request(self, what: str) -> None:
        self._requests.put_nowait(what)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handled = ((signal.SIGTERM, "stop"), (signal.SIGINT, "stop"), (signal.SIGHUP, "reload"))
        for signum, what in handled:
            loop.add_signal_handler(signum, self.request, what)
        try:
            return await self._generations()
        finally:
            for signum, _ in handled:
                loop.remove_signal_handler(signum)

    async def _generations(self) -> int:
        handover: Handover | None = None
        while True:
            components = await self._factory(self.config, self.machine_id, handover)
            self.components = components
            try:
                what = await self._serve(components)
            except BaseException:
                await components.close()
                raise
            if what == "stop":
                self._notifier.stopping()
                logger.info("shutting down: stopping and unloading this machine's units")
                await components.agent.shutdown()
                await components.close()
                return 0
            handover = components.agent.handover()
            if what == "reconnect":  # a new generation on a new connection, same configuration
                await components.close()
                continue
            logger.info("Reloading configuration from %s", self._config_path)
            self._notifier.reloading()
            await components.close()
            try:
                self.config = self._reload_config()
            except ConfigError as exc:
                logger.error("%s; keeping the running configuration", exc)
            else:
                configure_logging(self.config.verbosity)
                for notice in self.config.notices:
                    logger.warning("%s", notice)

    async def _serve(self, components: Components) -> str:
        """Run the components until a stop or reload request; returns which."""
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(components.agent.run(), name="agent")]
            if components.engine is not None:
                tasks.append(group.create_task(components.engine.run(), name="engine"))
            if components.api is not None:
                tasks.append(group.create_task(components.api.run(), name="api"))
            tasks.append(group.create_task(self._systemd_lost(components.units), name="systemd"))
            interval = self._notifier.watchdog_interval
            if interval is not None:
                tasks.append(group.create_task(self._watchdog(interval), name="watchdog"))
            self._notifier.ready(f"fleetd {VERSION} on machine {self.machine_id}")
            self.started.set()
            what = await self._requests.get()
            self.started.clear()
            for task in tasks:
                task.cancel()
        return what

    async def _systemd_lost(self, units: UnitManager) -> None:
        await units.lost()
        logger.error("lost the connection to systemd; connecting again (this machine's units keep running)")
        self.request("reconnect")

    async def _watchdog(self, interval: float) -> None:
        while True:
            self._notifier.watchdog()
            await asyncio.sleep(interval)


def configure_logging(verbosity: int) -> None:
    """One format for the journal (which adds time and unit); verbosity > 0 turns on debug output."""
    logging.basicConfig(
        level=logging.DEBUG if verbosity > 0 else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


def _first_fleet_error(error: BaseException) -> FleetError | None:
    if isinstance(error, FleetError):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _first_fleet_error(inner)
            if found is not None:
                return found
    return None


def main(
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    factory: Factory = build_components,
    machine_id_path: str = "/etc/machine-id",
) -> int:
    """The ``fleetd`` console entry point; returns the exit status."""
    args = list(sys.argv if argv is None else argv)
    env = os.environ if environ is None else environ
    try:
        invocation = parse_args(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"fleetd: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    if invocation.show_help:
        print(help_text())
        return 0
    if invocation.show_version:
        print(f"fleetd version {VERSION}")
        return 0
    try:
        config = load_config(invocation, env)
        machine_id = read_machine_id(machine_id_path)
    except ConfigError as exc:
        print(f"fleetd: {exc}", file=sys.stderr)
        return 1
    configure_logging(config.verbosity)
    for notice in config.notices:
        logger.warning("%s", notice)
    path = invocation.config_path or DEFAULT_CONFIG_PATH
    server = Server(
        config,
        machine_id,
        reload_config=lambda: load_config(Invocation(invocation.config_path, invocation.options), env),
        config_path=path,
        factory=factory,
        notifier=Notifier.from_environ(env, os.getpid()),
    )
    logger.info("fleetd %s starting on machine %s", VERSION, machine_id)
    try:
        return asyncio.run(server.run())
    except KeyboardInterrupt:
        return 1
    except BaseException as exc:
        error = _first_fleet_error(exc)
        if error is None:
            raise
        logger.error("fleetd stopped: %s", error)
        return 1


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
