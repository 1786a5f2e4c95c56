"""set-metadata, unset-metadata and reset-metadata on the fake cluster: stored live, shown by list-machines,
the planned moves printed, bad input refused with one line."""

from __future__ import annotations

from tests.unit.fleetctl.conftest import HELLO, MACHINE_A, MACHINE_B
from tests.unit.fleetctl.test_drain import _cluster, _schedule

A, B = MACHINE_A.id, MACHINE_B.id
WEB = HELLO + "\n[X-Fleet]\nMachineMetadata=role=web\n"


def test_metadata_set_and_unset_live_prints_the_units_that_move() -> None:
    cluster = _cluster(agent=False)
    _schedule(cluster, MACHINE_A, "web.service", WEB)
    result = cluster.invoke(["set-metadata", "9f8e", "role=web", "disk=ssd"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"Machine {B}: set role=web, disk=ssd\nNo unit moves\n"
    result = cluster.invoke(["unset-metadata", "1a2b", "role"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"Machine {A}: unset role\n"
        "Planned: move web.service from 1a2b3c4d... to 9f8e7d6c... (target Machine(1a2b3c4d5e6f) unable to"
        " run unit: local Machine metadata insufficient)\n"
    )
    listed = cluster.invoke(["list-machines", "--no-legend", "--fields", "machine,metadata"])
    assert listed.stdout == "1a2b3c4d...\taz=b\n9f8e7d6c...\tdisk=ssd,role=web\n"


def test_reset_metadata_brings_back_the_configured_values_and_prints_the_units_that_move() -> None:
    cluster = _cluster(agent=False)
    _schedule(cluster, MACHINE_A, "web.service", WEB)
    assert cluster.invoke(["set-metadata", "9f8e", "role=web", "disk=ssd"]).exit_code == 0
    assert cluster.invoke(["unset-metadata", "1a2b", "role", "az"]).exit_code == 0
    result = cluster.invoke(["reset-metadata", "9f8e"])  # every override of B: it has no role any more
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        f"Machine {B}: reset disk, role\n"
        "Planned: unschedule web.service from 1a2b3c4d... (target Machine(1a2b3c4d5e6f) unable to run unit:"
        " local Machine metadata insufficient)\n"
        "Planned: cannot place web.service: no machine has the metadata role=web\n"
    )
    result = cluster.invoke(["reset-metadata", "1a2b", "role"])  # A's configured role=web is back
    assert result.stdout == f"Machine {A}: reset role\nNo unit moves\n"
    assert cluster.run(cluster.registry.read_metadata()) == {A: {"az": ""}}
    listed = cluster.invoke(["list-machines", "--no-legend", "--fields", "machine,metadata"])
    assert listed.stdout == "1a2b3c4d...\trole=web\n9f8e7d6c...\t-\n"
    assert cluster.invoke(["reset-metadata", "1a2b"]).stdout == f"Machine {A}: reset az\nNo unit moves\n"
    assert cluster.run(cluster.registry.read_metadata()) == {}
    again = cluster.invoke(["reset-metadata", "1a2b"])
    assert again.stdout == f"Machine {A}: no live metadata to reset (its configured metadata holds)\n"
    listed = cluster.invoke(["list-machines", "--no-legend", "--fields", "machine,metadata"])
    assert listed.stdout == "1a2b3c4d...\taz=b,role=web\n9f8e7d6c...\t-\n"


def test_reset_metadata_of_every_key_drops_an_entry_that_does_not_decode() -> None:
    cluster = _cluster(agent=False)
    key = cluster.registry.keys.machine_metadata(A)
    cluster.run(cluster.kv.put(key, "{not json"))
    result = cluster.invoke(["reset-metadata", "1a2b"])
    assert result.exit_code == 0, result.stderr
    assert cluster.run(cluster.kv.get(key)) is None


def test_bad_metadata_arguments_are_one_line_errors() -> None:
    cluster = _cluster(agent=False)
    for args, code, text in [
        (["set-metadata", "1a2b", "disk"], 2, "is not key=value"),
        (["set-metadata", "1a2b", "a,b=c"], 2, "must not contain"),
        (["set-metadata", "1a2b", "disk="], 2, "must not be empty"),
        (["set-metadata", "1a2b", "fleet.max-units=3"], 2, "unit cap"),
        (["unset-metadata", "1a2b", "a=b"], 2, "must not contain"),
        (["reset-metadata", "1a2b", "a=b"], 2, "must not contain"),
        (["reset-metadata", "1a2b", "fleet.max-units"], 2, "unit cap"),
        (["reset-metadata", "77"], 1, "no machine 77 in the cluster"),
        (["set-metadata", "77", "disk=ssd"], 1, "no machine 77 in the cluster"),
    ]:
        result = cluster.invoke(args)
        assert result.exit_code == code, args
        assert text in result.stderr and result.stderr.count("\n") == 1, result.stderr
    missing = cluster.invoke(["set-metadata", "1a2b"])
    assert missing.exit_code == 2 and "Missing argument 'KEY=VALUE...'" in missing.stderr
    assert cluster.run(cluster.registry.read_metadata()) == {}
