"""fleetd's composition root: invocation, signals (SIGHUP reload, SIGTERM purge) and sd_notify.

The server runs the real agent and engine shells on MemoryKV + FakeUnitManager; signals are real signals
sent to this process (the server installs and removes its handlers).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import AsyncGenerator, Callable
from pathlib import Path

import pytest

from fleetd.agent.agent import Agent, Handover
from fleetd.config import Config, build_config
from fleetd.engine.engine import Engine
from fleetd.model import VERSION, MachineID, MachineState, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.kv import KeyValue
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.sdnotify import Notifier
from fleetd.server import Components, Server, main
from fleetd.systemd.fake import FakeUnitManager
from fleetd.unitfile.unit import UnitFile
from tests.unit.agent.test_agent_shell import FlakyKV

PREFIX = "/fleet/"
KEYS = ks.Keyspace(PREFIX)
MACHINE = MachineID("0123456789abcdef")
WEB = UnitName("web.service")


# -- invocation ------------------------------------------------------------------------------------------


def test_help_lists_the_keys_and_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleetd", "--help"], {}) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage: fleetd [--config PATH]")
    assert "etcd_servers" in out and "agent_ttl" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fleetd", "--version"], {}) == 0
    assert main(["fleetd", "version"], {}) == 0
    assert capsys.readouterr().out == f"fleetd version {VERSION}\n" * 2


def test_positional_arguments_point_at_fleetctl(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["/usr/bin/fleetd", "list-units"], {}) == 1
    err = capsys.readouterr().err
    assert err.startswith("/usr/bin/fleetd takes no arguments. Did you mean to invoke fleetctl instead?\n")
    assert "Usage: fleetd [--config PATH] [--KEY VALUE ...] [--version] [--help]" in err


def test_a_bad_value_stops_startup_with_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    conf = tmp_path / "fleet.conf"
    conf.write_text('agent_ttl = "soon"\n')
    assert main(["fleetd", "--config", str(conf)], {}) == 1
    err = capsys.readouterr().err
    assert (
        err
        == "fleetd: invalid value 'soon' for agent_ttl (from config file): expected a duration such as 30s,"
        " 1m30s or 500ms\n"
    )


def test_an_unreadable_machine_id_stops_startup(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["fleetd", "--config", os.devnull], {}, machine_id_path=str(tmp_path / "none")) == 1
    assert "unable to determine local machine ID" in capsys.readouterr().err


# -- the running server ------------------------------------------------------------------------------------


class SharedKV(FlakyKV):
    """One MemoryKV shared by every generation of components (closing a generation leaves it open)."""

    async def close(self) -> None:
        pass


class Harness:
    def __init__(self) -> None:
        self.store = MemoryKV()
        self.units = FakeUnitManager()
        self.built: list[tuple[Config, Handover | None]] = []

    async def factory(self, config: Config, machine_id: MachineID, handover: Handover | None) -> Components:
        self.built.append((config, handover))
        kv = SharedKV(self.store)
        registry = Registry(kv, config.etcd_key_prefix)
        machine = MachineState(machine_id, config.public_ip, dict(config.metadata))
        agent = Agent(registry, self.units, machine, ttl=config.agent_ttl, handover=handover)
        engine = Engine(kv, machine_id, prefix=config.etcd_key_prefix, interval=0.2, ttl=5.0)
        return Components(kv, self.units, agent, engine)

    async def submit(self, name: str, text: str) -> None:
        unit = UnitFile.from_text(text)
        record = ks.UnitRecord(UnitName(name), unit.hash, False, TargetState.LAUNCHED)
        await Registry(self.store, PREFIX).put_units([(record, unit.canonical)])


def config(**values: str) -> Config:
    return build_config({"etcd_key_prefix": PREFIX, "public_ip": "127.0.0.9", **values}, {}, {})


async def receive(sock: socket.socket, wanted: str) -> list[str]:
    """Datagrams from the notify socket until one starts with ``wanted``."""
    loop = asyncio.get_running_loop()
    seen: list[str] = []
    async with asyncio.timeout(10):
        while not (seen and seen[-1].startswith(wanted)):
            seen.append((await loop.sock_recv(sock, 4096)).decode())
    return seen


async def value_where(store: MemoryKV, key: str, predicate: Callable[[str], bool]) -> KeyValue:
    """The key's record once its value satisfies ``predicate`` (read, then watch: no polling)."""
    async with asyncio.timeout(10):
        found = await store.get(key)
        if found is not None and predicate(found.value):
            return found
        async for batch in store.watch(key, store.revision + 1):
            for event in batch:
                if event.kv.key == key and predicate(event.kv.value):
                    return event.kv
    raise AssertionError(f"{key} never matched")


async def state_of(store: MemoryKV, wanted: str) -> None:
    states = Registry(store, PREFIX).watch_unit_states([WEB])
    assert isinstance(states, AsyncGenerator)
    async with asyncio.timeout(10):
        async for published in states:
            if [(s.machine_id, s.active_state) for s in published] == [(MACHINE, wanted)]:
                break
    await states.aclose()


def test_server_runs_units_reloads_on_sighup_and_purges_on_sigterm(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    harness = Harness()
    notify_path = str(tmp_path / "notify")
    reloaded = config(metadata="role=web,zone=b")

    async def scenario() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(notify_path)
            notify.setblocking(False)
            server = Server(
                config(metadata="role=web"),
                MACHINE,
                reload_config=lambda: reloaded,
                config_path="/etc/fleet/fleet.conf",
                factory=harness.factory,
                notifier=Notifier(notify_path, watchdog_usec=100_000),
            )
            task = asyncio.create_task(server.run())
            assert (await receive(notify, "READY=1"))[-1].startswith("READY=1")
            await receive(notify, "WATCHDOG=1")

            await harness.submit(WEB, "[Service]\nExecStart=/bin/sleep 1000\n")
            await state_of(harness.store, "active")
            assert harness.units.files().keys() == {WEB}

            os.kill(os.getpid(), signal.SIGHUP)
            await receive(notify, "RELOADING=1")
            await receive(notify, "READY=1")
            assert len(harness.built) == 2 and harness.built[1][0] is reloaded
            handover = harness.built[1][1]
            assert handover is not None and handover.lease != 0
            record = await value_where(harness.store, KEYS.machine(MACHINE), lambda text: "zone" in text)
            assert record is not None and record.lease == handover.lease, "the reloaded agent kept its lease"
            assert not [c for c in harness.units.calls if c[0] in ("stop", "unload")], "units keep running"

            os.kill(os.getpid(), signal.SIGTERM)
            await receive(notify, "STOPPING=1")
            assert await asyncio.wait_for(task, 10) == 0
        assert harness.units.files() == {}
        assert [c for c in harness.units.calls if c[0] in ("stop", "unload")] == [
            ("stop", WEB),
            ("unload", WEB),
        ]
        assert await harness.store.get(KEYS.machine(MACHINE)) is None
        assert (await harness.store.range(KEYS.states)).kvs == ()
        assert await harness.store.get(KEYS.leader) is None, "the engine resigned"

    with caplog.at_level(logging.INFO, logger="fleetd"):
        asyncio.run(scenario())
    assert "Reloading configuration from /etc/fleet/fleet.conf" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_notifier_is_silent_outside_systemd() -> None:
    notifier = Notifier.from_environ({}, os.getpid())
    assert not notifier.enabled and notifier.watchdog_interval is None and notifier.ready() is False
    other = Notifier.from_environ(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, 2
    )
    assert other.enabled and other.watchdog_interval is None, "the watchdog belongs to another process"
    mine = Notifier.from_environ({"NOTIFY_SOCKET": "@abstract", "WATCHDOG_USEC": "30000000"}, 2)
    assert mine.watchdog_interval == 15.0


def test_a_lost_connection_to_systemd_is_a_new_generation_that_keeps_the_lease_and_the_units(
    caplog: pytest.LogCaptureFixture,
) -> None:
    harness = Harness()

    async def scenario() -> None:
        server = Server(config(), MACHINE, reload_config=config, factory=harness.factory)
        task = asyncio.create_task(server.run())
        await harness.submit(WEB, "[Service]\nExecStart=/bin/sleep 1000\n")
        await state_of(harness.store, "active")
        first = server.components
        assert first is not None

        harness.units.lose_connection()
        async with asyncio.timeout(10):
            while len(harness.built) < 2 or not server.started.is_set():  # noqa: ASYNC110 - the server's own state
                await asyncio.sleep(0.01)
        handover = harness.built[1][1]
        assert handover is not None and handover.lease == first.agent.lease != 0
        assert harness.built[1][0] is server.config, "the same configuration, not reloaded"
        record = await harness.store.get(KEYS.machine(MACHINE))
        assert record is not None and record.lease == handover.lease
        assert not [c for c in harness.units.calls if c[0] in ("stop", "unload")], "units keep running"
        assert ("close",) in harness.units.calls, "the lost connection was closed"

        server.request("stop")
        assert await asyncio.wait_for(task, 10) == 0

    with caplog.at_level(logging.INFO, logger="fleetd"):
        asyncio.run(scenario())
    assert "lost the connection to systemd; connecting again" in caplog.text
    assert "Reloading configuration" not in caplog.text
