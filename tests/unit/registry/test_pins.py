"""Hash pins: keys under a machine's schedule prefix, never mistaken for schedule entries; total decoding;
destroy and stop remove them."""

from __future__ import annotations

import asyncio

import pytest

from fleetd.model import MachineID, MachineState, TargetState, UnitName
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry
from fleetd.unitfile.unit import UnitFile
from fleetd.units import new_record

KEYS = ks.Keyspace("/fleet/")
H = "a" * 40


def test_a_pin_key_is_parsed_and_is_not_a_schedule_entry() -> None:
    key = KEYS.pin("m1", "mon.service")
    assert key == "/fleet/schedule/m1/pin/mon.service"
    assert KEYS.is_pin(key) and KEYS.parse_pin(key) == ("m1", "mon.service")
    with pytest.raises(BadRecord):
        KEYS.parse_scheduled(key)
    assert not KEYS.is_pin(KEYS.scheduled("m1", "pin"))  # hypothetically a unit named "pin"
    assert not KEYS.is_pin(KEYS.scheduled("m1", "web.service"))


@pytest.mark.parametrize("key", [
    "/fleet/schedule/m1/pin/", "/fleet/schedule/m1/pin/a/b.service", "/fleet/schedule/-x/pin/mon.service",
    "/fleet/schedule/m1/pin/not a unit", "/fleet/units/pin/mon.service",
])
def test_keys_that_are_not_pins_are_refused(key: str) -> None:
    with pytest.raises(BadRecord):
        KEYS.parse_pin(key)


@pytest.mark.parametrize(
    "value", ["", "null", "[]", '{"hash": 1}', '{"hash": "abc"}', "\udcff", "[" * 10_000]
)
def test_hostile_pin_values_end_in_bad_record(value: str) -> None:
    with pytest.raises(BadRecord):
        ks.decode_pin("k", value)
    assert ks.decode_pin("k", ks.encode_pin(H)) == H


def test_destroying_or_stopping_a_global_unit_removes_its_pins() -> None:
    async def main() -> None:
        registry = Registry(MemoryKV(clock=lambda: 0.0), "/fleet/")
        lease = await registry.kv.grant(60)
        for machine in ("m1", "m2"):
            await registry.register_machine(MachineState(MachineID(machine)), lease)
        unit = UnitFile.from_text("[Service]\nExecStart=/bin/true\n[X-Fleet]\nGlobal=true\n")
        plain = UnitFile.from_text("[Service]\nExecStart=/bin/true\n")
        await registry.put_units([new_record("mon.service", unit, TargetState.LAUNCHED),
                                  new_record("web.service", plain, TargetState.LAUNCHED)])
        pins = {"m1": H, "m2": H}
        await registry.set_pins("mon.service", pins, H)
        assert await registry.get_pins("mon.service", ["m1", "m2", "m3"]) == pins
        assert UnitName("mon.service") not in await registry.list_schedule()  # pins are not entries
        started = {"mon.service": TargetState.LAUNCHED, "web.service": TargetState.LOADED}
        await registry.set_target_states(started)
        assert await registry.get_pins("mon.service", ["m1", "m2"]) == pins  # start keeps them
        await registry.set_target_states({"mon.service": TargetState.LOADED})
        assert await registry.get_pins("mon.service", ["m1", "m2"]) == {}
        await registry.set_pins("mon.service", pins, H)
        await registry.destroy_units(["mon.service", "web.service"])
        assert await registry.get_pins("mon.service", ["m1", "m2"]) == {}

    asyncio.run(main())
