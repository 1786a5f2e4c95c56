"""Live machine metadata: key and value rules, merging, JSON Patch documents, the stored record (hostile
values ignored), the registry's read/write path and the engine's snapshot."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetd.engine.builder import SnapshotBuilder
from fleetd.engine.engine import parse_unit_body
from fleetd.metadata import (
    INVALID_OP,
    INVALID_PATH,
    INVALID_VALUE,
    REMOVED,
    RESET,
    MetadataChange,
    PatchError,
    applied,
    check_key,
    check_value,
    merged,
    parse_patch,
)
from fleetd.model import MachineID, MachineState
from fleetd.registry import keyspace as ks
from fleetd.registry.keyspace import BadRecord, Keyspace
from fleetd.registry.kv import KeyValue
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry

M1 = MachineID("m1")
CONFIGURED = MachineState(M1, "10.0.0.1", {"hostname": "a", "disk": "hdd"})


@pytest.mark.parametrize("key", ["disk", "fleet.zone", "a_b-c.9", "with space"])
def test_keys_fleet_conf_accepts_are_keys(key: str) -> None:
    assert check_key(key) is None


@pytest.mark.parametrize("key", ["", "a=b", "a,b", " a", "a\n", "x" * 254, "fleet.max-units"])
def test_keys_fleet_conf_could_not_hold_are_refused(key: str) -> None:
    assert check_key(key)


@pytest.mark.parametrize("value", ["", "a,b", "b ", "\t", "x" * 1025])
def test_values_that_are_empty_or_could_not_be_configured_are_refused(value: str) -> None:
    assert check_value(value)


def test_overrides_set_and_hide_configured_keys() -> None:
    machine = merged(CONFIGURED, {"disk": "ssd", "hostname": "", "zone": "b"})
    assert machine.metadata == {"disk": "ssd", "zone": "b"}
    assert machine.public_ip == "10.0.0.1" and CONFIGURED.metadata["disk"] == "hdd"


def test_a_reset_drops_the_override_so_the_configured_value_holds_again() -> None:
    m = MachineID("m1")
    resets = [MetadataChange(m, key, RESET) for key in ("disk", "hostname", "new")]
    overrides = applied({"disk": "ssd", "hostname": REMOVED}, resets)
    assert overrides == {}
    assert merged(CONFIGURED, overrides).metadata == CONFIGURED.metadata
    assert applied({"a": "1"}, [MetadataChange(m, "a", RESET), MetadataChange(m, "a", "2")]) == {"a": "2"}


def test_fleets_patch_document_names_machines_in_paths() -> None:
    document = [
        {"op": "add", "path": "/m0/metadata/foo", "value": {"value": "bar"}},
        {"op": "replace", "path": "/m1/metadata/ping", "value": "splat"},
        {"op": "remove", "path": "/m1/metadata/a~1b"},
    ]
    assert parse_patch(document) == [
        MetadataChange(MachineID("m0"), "foo", "bar"),
        MetadataChange(M1, "ping", "splat"),
        MetadataChange(M1, "a/b", ""),
    ]


def test_a_machines_patch_document_has_metadata_paths() -> None:
    document = [{"op": "add", "path": "/metadata/disk", "value": "ssd"}]
    assert parse_patch(document, "m1") == [MetadataChange(M1, "disk", "ssd")]
    with pytest.raises(PatchError, match=INVALID_PATH):
        parse_patch([{"op": "add", "path": "/m1/metadata/disk", "value": "ssd"}], "m1")


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"op": "add"}, "JSON array"),
        (["add"], "JSON object"),
        ([{"op": "noop", "path": "/m1/metadata/foo", "value": "x"}], INVALID_OP),
        ([{"op": "add", "path": "/m1/foo", "value": "x"}], INVALID_PATH),
        ([{"op": "add", "path": 7, "value": "x"}], INVALID_PATH),
        ([{"op": "add", "path": "/-m/metadata/foo", "value": "x"}], "not a machine ID"),
        ([{"op": "add", "path": "/m1/metadata/fleet.max-units", "value": "3"}], "unit cap"),
        ([{"op": "add", "path": "/m1/metadata/foo", "value": ""}], INVALID_VALUE),
        ([{"op": "replace", "path": "/m1/metadata/foo", "value": {"value": 3}}], INVALID_VALUE),
        ([{"op": "add", "path": "/m1/metadata/foo"}], INVALID_VALUE),
        ([{"op": "add", "path": "/m1/metadata/foo", "value": "a,b"}], "invalid value"),
    ],
)
def test_bad_patch_documents_name_the_problem(document: Any, message: str) -> None:
    with pytest.raises(PatchError, match=message):
        parse_patch(document)


def test_the_stored_record_round_trips() -> None:
    text = ks.encode_metadata({"disk": "ssd", "hostname": ""})
    assert ks.decode_metadata("k", text) == {"disk": "ssd", "hostname": ""}


@pytest.mark.parametrize(
    "text",
    ['[]', '{"overrides": []}', '{"overrides": {"a": 1}}', '{"overrides": {"a=b": "c"}}',
     '{"overrides": {"a": "b,c"}}', '{"overrides": {"\\ud800": "x"}}', "[" * 100_000, "{", "\udcff"],
)
def test_hostile_records_are_bad_records(text: str) -> None:
    with pytest.raises(BadRecord):
        ks.decode_metadata("/p/metadata/m1", text)


def test_registry_merges_overrides_and_patches_them_atomically_per_machine() -> None:
    async def scenario() -> None:
        kv = MemoryKV()
        registry = Registry(kv)
        lease = await kv.grant(30)
        await registry.register_machine(CONFIGURED, lease)
        await registry.patch_metadata([MetadataChange(M1, "disk", "ssd"), MetadataChange(M1, "hostname", "")])
        [machine] = await registry.list_machines()
        assert machine.metadata == {"disk": "ssd"}
        # an agent restarting registers its configured record again: the overrides stay
        await kv.revoke(lease)
        await registry.register_machine(CONFIGURED, await kv.grant(30))
        assert (await registry.list_machines())[0].metadata == {"disk": "ssd"}
        await registry.patch_metadata([MetadataChange(M1, "disk", "nvme")])
        assert await registry.read_metadata() == {M1: {"disk": "nvme", "hostname": ""}}
        # a hostile record is skipped by readers and replaced by the next change
        await kv.put(registry.keys.machine_metadata("m1"), "garbage")
        assert (await registry.list_machines())[0].metadata == CONFIGURED.metadata
        await registry.patch_metadata([MetadataChange(M1, "zone", "b")])
        assert await registry.read_metadata() == {M1: {"zone": "b"}}

    asyncio.run(scenario())


def _kv(key: str, value: str, revision: int = 5) -> KeyValue:
    return KeyValue(key, value, revision, revision, 1)


def test_the_engine_snapshot_merges_live_metadata_and_ignores_hostile_entries() -> None:
    keys = Keyspace("/p/")
    builder = SnapshotBuilder(keys, parse_unit_body)
    machines = {keys.machine("m1"): _kv(keys.machine("m1"), ks.encode_machine(CONFIGURED))}
    metadata = {
        keys.machine_metadata("m1"): _kv(keys.machine_metadata("m1"), ks.encode_metadata({"disk": "ssd"})),
        keys.machine_metadata("m9"): _kv(keys.machine_metadata("m9"), ks.encode_metadata({"a": "b"})),
        keys.machine_metadata("-x"): _kv(keys.machine_metadata("-x"), ks.encode_metadata({})),
        keys.machine_metadata("m2"): _kv(keys.machine_metadata("m2"), "{"),
    }
    empty: dict[str, KeyValue] = {}
    built = builder.build(9, machines=machines, units=empty, targets=empty, bodies=empty, schedule=empty,
                          metadata=metadata)
    assert built.snapshot.machines[M1].metadata == {"hostname": "a", "disk": "ssd"}
    assert len(built.problems) == 2 and all("ignoring live metadata" in p for p in built.problems)
    again = builder.build(10, machines=machines, units=empty, targets=empty, bodies=empty, schedule=empty,
                          metadata=metadata)
    assert again.problems == ()  # reported once per (key, mod revision)
