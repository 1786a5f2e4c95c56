"""``--output json`` of the list commands: one document of typed values (docs/fleetctl-json.md)."""

from __future__ import annotations

import json
from typing import Any

from fleetd.model import MachineID, TargetState, UnitName, UnitState
from fleetd.registry.keyspace import encode_schedule
from fleetd.unitfile import UnitFile
from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, MACHINE_B, FakeCluster, running


def _json(cluster: FakeCluster, *args: str) -> Any:
    result = cluster.invoke([*args, "-o", "json"])
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_list_machines_json(cluster: FakeCluster) -> None:
    cluster.add_machines(MACHINE_B)
    assert _json(cluster, "list-machines") == [
        {
            "machine_id": "1a2b3c4d5e6f",
            "short_id": "1a2b3c4d",
            "ip": "127.0.0.12",
            "metadata": {"az": "b", "role": "web"},
            "version": MACHINE_A.version,
            "state": "schedulable",
            "max_units": None,
        },
        {
            "machine_id": "9f8e7d6c5b4a",
            "short_id": "9f8e7d6c",
            "ip": None,
            "metadata": {},
            "version": MACHINE_B.version,
            "state": "schedulable",
            "max_units": None,
        },
    ]


def test_list_units_json(cluster: FakeCluster) -> None:
    cluster.agent = False
    unit = UnitFile.from_text(HELLO)
    cluster.publish(running("hello.service", unit.hash))
    cluster.publish(UnitState(UnitName("a.service"), MachineID("0dead0beef"), "", "", "", ""))
    assert (
        _json(cluster, "list-units")
        == [
            {
                "unit": "a.service",
                "machine_id": "0dead0beef",
                "machine_ip": None,  # the machine is not live
                "state": "loaded",
                "load_state": None,
                "active_state": None,
                "sub_state": None,
                "hash": None,
                "short_hash": None,
            },
            {
                "unit": "hello.service",
                "machine_id": "1a2b3c4d5e6f",
                "machine_ip": "127.0.0.12",
                "state": "launched",
                "load_state": "loaded",
                "active_state": "active",
                "sub_state": "running",
                "hash": unit.hash,
                "short_hash": unit.hash[:7],
            },
        ]
    )


def test_list_unit_files_json(cluster: FakeCluster) -> None:
    hello = cluster.submit("hello.service", HELLO, TargetState.LAUNCHED)
    cluster.submit("g.service", "[X-Fleet]\nGlobal=true\n", TargetState.LAUNCHED)
    keys = cluster.registry.keys
    placed = encode_schedule(hello.hash, TargetState.LAUNCHED)
    cluster.run(cluster.registry.kv.put(keys.scheduled(MACHINE_A.id, "hello.service"), placed))
    rows = _json(cluster, "list-unit-files")
    assert [row["unit"] for row in rows] == ["g.service", "hello.service"]
    assert rows[0] == {
        "unit": "g.service",
        "hash": rows[0]["hash"],
        "short_hash": rows[0]["hash"][:7],
        "global": True,
        "desired_state": "launched",
        "state": None,  # a global unit has no single current state
        "target_machine_id": None,
        "target_machine_ip": None,
        "description": None,
        "reason": None,
    }
    assert len(rows[0]["hash"]) == 40
    assert rows[1]["hash"] == hello.hash
    assert rows[1]["short_hash"] == hello.hash[:7]
    assert rows[1]["global"] is False
    assert rows[1]["description"] == "Hello World"
    assert rows[1]["desired_state"] == "launched"
    assert (rows[1]["target_machine_id"], rows[1]["target_machine_ip"]) == (MACHINE_A.id, "127.0.0.12")


def test_json_ignores_table_shaping_flags(cluster: FakeCluster) -> None:
    plain = _json(cluster, "list-machines")
    assert _json(cluster, "list-machines", "--fields", "ip", "--no-legend") == plain


def test_json_of_an_empty_cluster_is_an_empty_array(cluster: FakeCluster) -> None:
    assert cluster.invoke(["list-units", "-o", "json"]).stdout == "[]\n"
