"""Engine planner tables: snapshot -> expected plan, reasons included (fleet's functional scenarios)."""

from __future__ import annotations

import dataclasses

import pytest

from fleetd.engine import plan
from fleetd.engine.plan import (
    MACHINE_CORDONED,
    SCHEDULE_PLACED,
    SCHEDULE_UPDATED,
    UNSCHEDULE_DESTROYED,
    UNSCHEDULE_DUPLICATE,
    UNSCHEDULE_GLOBAL,
    UNSCHEDULE_INACTIVE,
    Action,
    Schedule,
    Unschedule,
    plan_cluster,
)
from fleetd.model import MachineID, Unit, UnitName
from fleetd.registry.snapshot import ClusterSnapshot, ScheduledUnit
from tests.unit.builders import INACTIVE, LAUNCHED, LOADED, apply, capped, digest, machine, snapshot, unit

M1, M2, M3 = machine("m1"), machine("m2"), machine("m3")
LONG = [machine(f"{c * 8}{'0' * 24}") for c in "abc"]  # aaaaaaaa000..., bbbbbbbb000..., cccccccc000...


def place(u: Unit, machine_id: str) -> Schedule:
    return Schedule(u.name, MachineID(machine_id), u.hash, u.target_state, SCHEDULE_PLACED)


def update(u: Unit, machine_id: str) -> Schedule:
    return Schedule(u.name, MachineID(machine_id), u.hash, u.target_state, SCHEDULE_UPDATED)


def drop(name: str, machine_id: str, reason: str) -> Unschedule:
    return Unschedule(UnitName(name), MachineID(machine_id), reason)


def unable(machine_id: str, reason: str) -> str:
    return f"target Machine({machine_id}) unable to run unit: {reason}"


def gone(machine_id: str) -> str:
    return f"target Machine({machine_id}) went away"


CASES: list[tuple[str, ClusterSnapshot, list[Action]]] = []


def case(case_id: str, snap: ClusterSnapshot, *actions: Action) -> None:
    CASES.append((case_id, snap, list(actions)))


# -- least loaded, ties by machine ID --
hello = unit("hello.service")
case("empty cluster: nothing to do", snapshot([], []))
case("no machines: the unit stays unplaced", snapshot([], [hello]))
case(
    "one unit, three idle machines: lowest machine ID wins",
    snapshot([M3, M2, M1], [hello]),
    place(hello, "m1"),
)
busy = [unit(f"busy{i}.service") for i in range(3)]
case(
    "least-loaded machine wins over the lower ID",
    snapshot(
        [M1, M2, M3], [*busy, hello], {"busy0.service": "m1", "busy1.service": "m1", "busy2.service": "m2"}
    ),
    place(hello, "m3"),
)
case(
    "placed unit at the right hash and state: nothing to do", snapshot([M1], [hello], {"hello.service": "m1"})
)
case(
    "loaded unit is placed with state loaded",
    snapshot([M1], [loaded := unit("hello.service", LOADED)]),
    place(loaded, "m1"),
)
case("inactive unit is not placed", snapshot([M1], [unit("hello.service", INACTIVE)]))

# -- TestScheduleConflicts: conflict.0-4 onto 3 machines --
conflict = [unit(f"conflict.{i}.service", conflicts=["conflict*"]) for i in range(5)]
case(
    "conflicts 0-4 on 3 machines: three placed on distinct machines, two wait",
    snapshot([M1, M2, M3], conflict),
    place(conflict[0], "m1"),
    place(conflict[1], "m2"),
    place(conflict[2], "m3"),
)
case(
    "TestDynamicClusterNewMemberUnitMigration: conflict.1's machine dies, it moves to the spare machine",
    snapshot(
        [M1, M3, machine("m4")],
        conflict[:3],
        {"conflict.0.service": "m1", "conflict.1.service": "m2", "conflict.2.service": "m3"},
    ),
    drop("conflict.1.service", "m2", gone("m2")),
    place(conflict[1], "m4"),
)

# -- TestScheduleMultipleConflicts --
names = [f"conflict.multiple.{i}.service" for i in range(3)]
one_line = [unit(n, conflicts=[o for o in names if o != n]) for n in names]
case(
    "multiple conflicts on one line: 3 units on 3 machines",
    snapshot([M1, M2, M3], one_line),
    *(place(u, m) for u, m in zip(one_line, ["m1", "m2", "m3"], strict=True)),
)
three_lines = [
    unit(n, conflicts=["conflict.multiple.0*", "conflict.multiple.1*", "conflict.multiple.2*"]) for n in names
]
case(
    "multiple conflicts on three lines (globs): 3 units on 3 machines, a 4th machine stays free",
    snapshot([M1, M2, M3, machine("m4")], three_lines),
    *(place(u, m) for u, m in zip(three_lines, ["m1", "m2", "m3"], strict=True)),
)

# -- TestScheduleOneWayConflict --
cwh = unit("conflicts-with-hello.service", conflicts=["hello.service"])
case(
    "one-way conflict: hello cannot join conflicts-with-hello on the only machine",
    snapshot([M1], [cwh, hello], {"conflicts-with-hello.service": "m1"}),
)
case(
    "one-way conflict: conflicts-with-hello destroyed, hello takes the machine",
    snapshot([M1], [hello], {"conflicts-with-hello.service": "m1"}),
    drop("conflicts-with-hello.service", "m1", UNSCHEDULE_DESTROYED),
    place(hello, "m1"),
)
case(
    "two placed units that conflict: the first by name is moved",
    snapshot([M1, M2], [cwh, hello], {"conflicts-with-hello.service": "m1", "hello.service": "m1"}),
    drop(
        "conflicts-with-hello.service",
        "m1",
        unable("m1", "found conflict with locally-scheduled Unit(hello.service)"),
    ),
    place(cwh, "m2"),
)

# -- TestScheduleMachineOf --
ping = [unit(f"ping.{i}.service") for i in range(1, 4)]
pong = [unit(f"pong.{i}.service", peers=[f"ping.{i}.service"]) for i in range(1, 4)]
case(
    "MachineOf pairs: each pong lands with its ping",
    snapshot([M1, M2, M3], ping + pong),
    place(ping[0], "m1"),
    place(ping[1], "m2"),
    place(ping[2], "m3"),
    place(pong[0], "m1"),
    place(pong[1], "m2"),
    place(pong[2], "m3"),
)
pairs = {f"{kind}.{i}.service": f"m{i}" for kind in ("ping", "pong") for i in range(1, 4)}
case(
    "MachineOf migration: ping.1's machine dies, ping.1 and pong.1 move together",
    snapshot([M2, M3], ping + pong, pairs),
    drop("ping.1.service", "m1", gone("m1")),
    drop("pong.1.service", "m1", gone("m1")),
    place(ping[0], "m2"),
    place(pong[0], "m2"),
)
ssd = unit("ssd.service", metadata={"disk": ["ssd"]})
case(
    "live metadata: a machine that lost disk=ssd gives its unit to one that has it now",
    snapshot([machine("m1", disk="hdd"), machine("m2", disk="ssd")], [ssd], {"ssd.service": "m1"}),
    drop("ssd.service", "m1", unable("m1", "local Machine metadata insufficient")),
    place(ssd, "m2"),
)
case(
    "live metadata: no machine left with disk=ssd: the unit is unscheduled and waits",
    snapshot([M1, M2], [ssd], {"ssd.service": "m2"}),
    drop("ssd.service", "m2", unable("m2", "local Machine metadata insufficient")),
)
case(
    "live metadata: a machine still satisfying it keeps its unit",
    snapshot([machine("m1", disk="ssd", extra="x"), machine("m2", disk="ssd")], [ssd], {"ssd.service": "m1"}),
)
leader = unit("zz-leader.service", metadata={"role": ["db"]})
follower = unit("aa-follower.service", peers=["zz-leader.service"])
case(
    "MachineOf follower sorting before its peer waits for it in the same pass",
    snapshot([M1, machine("m2", role="db")], [follower, leader]),
    place(leader, "m2"),
    place(follower, "m2"),
)
case(
    "MachineOf follower follows its peer when the peer can no longer stay",
    snapshot(
        [M1, machine("m2", role="db")],
        [follower, leader],
        {"zz-leader.service": "m1", "aa-follower.service": "m1"},
    ),
    drop("zz-leader.service", "m1", unable("m1", "local Machine metadata insufficient")),
    drop(
        "aa-follower.service",
        "m1",
        unable("m1", "required peer Unit(zz-leader.service) is not scheduled locally"),
    ),
    place(leader, "m2"),
    place(follower, "m2"),
)
mutual = [unit("a.service", peers=["b.service"]), unit("b.service", peers=["a.service"])]
case("mutual MachineOf can never be scheduled", snapshot([M1, M2], mutual))
case("MachineOf an inactive peer: not placed", snapshot([M1], [unit("p.service", INACTIVE), pong[0]]))

# -- TestScheduleReplace / TestScheduleCircularReplace --
replace = [unit(f"replace.{i}.service") for i in range(3)]
kick0 = unit("replace-kick0.service", replaces=["replace.0.service"])
KICKED = unable("m0", "replaced by locally-scheduled Unit(replace-kick0.service)")
replace_placed = {"replace.0.service": "m0", "replace.1.service": "m1", "replace.2.service": "m1"}
case(
    "Replaces: kick0 takes replace.0's machine, replace.0 moves to the other",
    snapshot([machine("m0"), machine("m1")], [*replace, kick0], replace_placed),
    place(kick0, "m0"),
    drop("replace.0.service", "m0", KICKED),
    place(replace[0], "m1"),
)
case(
    "Replaces found on a shared machine: the replaced unit moves",
    snapshot(
        [machine("m0"), machine("m1")],
        [replace[0], kick0],
        {"replace.0.service": "m0", "replace-kick0.service": "m0"},
    ),
    drop("replace.0.service", "m0", KICKED),
    place(replace[0], "m1"),
)
case(
    "Replaces with nowhere else to go: the replaced unit waits",
    snapshot([machine("m0")], [replace[0], kick0], {"replace.0.service": "m0"}),
    place(kick0, "m0"),
    drop("replace.0.service", "m0", KICKED),
)
circular = unit("replace.0.service", replaces=["replace-kick0.service"])
case(
    "circular Replaces are ignored: both share the only machine",
    snapshot([machine("m0")], [circular, kick0], {"replace.0.service": "m0"}),
    place(kick0, "m0"),
)

# -- TestScheduleConditionMachineID --
pins = [unit(f"pin{i}.service", machine_id=m.id) for i, m in enumerate(LONG)]
case(
    "MachineID pins each unit to its machine, against the load order",
    snapshot(LONG, list(reversed(pins))),
    *(place(p, m.id) for p, m in zip(pins, LONG, strict=True)),
)
short = unit("short.service", machine_id="cccccccc")
case("MachineID matches an 8-char short ID", snapshot(LONG, [short]), place(short, LONG[2].id))
case("MachineID of no live machine: not placed", snapshot(LONG, [unit("x.service", machine_id="dddddddd")]))
case(
    "MachineID changed: the unit moves to its new machine",
    snapshot(LONG, [short], {"short.service": LONG[0].id}),
    drop(
        "short.service",
        LONG[0].id,
        unable(LONG[0].id, f'agent ID "{LONG[0].id}" does not match required "cccccccc"'),
    ),
    place(short, LONG[2].id),
)

# -- TestTemplatesWithSpecifiersInMetadata --
smoke = [machine(f"m{i}", hostname=f"smoke{i}") for i in range(3)]
instances = [
    unit(f"metadata@{h}.service", metadata={"hostname": [h]}) for h in ("smoke2", "smoke1", "smoke0")
]
invalid = unit("metadata@invalid.service", metadata={"hostname": ["invalid"]})
case(
    "metadata with specifiers: each instance on its host, metadata@invalid never schedulable",
    snapshot(smoke, [*instances, invalid]),
    place(instances[2], "m0"),
    place(instances[1], "m1"),
    place(instances[0], "m2"),
)
any_of = unit("either.service", metadata={"hostname": ["smoke1", "smoke2"], "disk": ["ssd"]})
case(
    "metadata: values of a key OR-ed, keys AND-ed",
    snapshot([*smoke[:2], machine("m2", hostname="smoke2", disk="ssd")], [any_of]),
    place(any_of, "m2"),
)

# -- TestScheduleGlobalUnits / TestScheduleGlobalConflicts --
glob0 = unit("conflict-global.0.service", is_global=True, conflicts=["conflict-global.*"])
glob1 = unit("conflict-global.1.service", is_global=True, conflicts=["conflict-global.*"])
case("Global units are never placed by the engine", snapshot([M1, M2, M3], [glob0, glob1]))
case(
    "a scheduled Global unit is unscheduled",
    snapshot([M1], [glob0], {"conflict-global.0.service": "m1"}),
    drop("conflict-global.0.service", "m1", UNSCHEDULE_GLOBAL),
)
web_global = unit("web-global.service", is_global=True, metadata={"role": ["web"]})
case(
    "Global units count as load where their metadata matches",
    snapshot([machine("m1", role="web"), machine("m2", role="web"), M3], [web_global, hello]),
    place(hello, "m3"),
)
case(
    "a unit conflicting with a Global unit avoids the machines running it",
    snapshot(
        [machine("m1", role="web"), M2], [web_global, cwg := unit("x.service", conflicts=["web-global*"])]
    ),
    place(cwg, "m2"),
)
case(
    "MachineOf a Global unit: placed where the Global unit runs",
    snapshot(
        [M1, machine("m2", role="web")],
        [web_global, side := unit("side.service", peers=["web-global.service"])],
    ),
    place(side, "m2"),
)
case(
    "inactive Global units are no load",
    snapshot([machine("m1", role="web"), M2], [unit("web-global.service", INACTIVE, is_global=True), hello]),
    place(hello, "m1"),
)

# -- machine gone, destroyed, inactive, duplicates --
case(
    "machine gone: its unit is re-placed in the same pass",
    snapshot([M2], [hello], {"hello.service": "m1"}),
    drop("hello.service", "m1", gone("m1")),
    place(hello, "m2"),
)
case(
    "machine absent but held (grace after an etcd outage): its unit stays, nothing new goes there",
    dataclasses.replace(
        snapshot([M2], [hello, unit("new.service")], {"hello.service": "m1"}),
        held_machines=frozenset({MachineID("m1")}),
    ),
    place(unit("new.service"), "m2"),
)
case(
    "a held machine's destroyed unit is still unscheduled",
    dataclasses.replace(
        snapshot([M2], [], {"hello.service": "m1"}), held_machines=frozenset({MachineID("m1")})
    ),
    drop("hello.service", "m1", UNSCHEDULE_DESTROYED),
)
case(
    "destroyed unit is unscheduled",
    snapshot([M1], [], {"hello.service": "m1"}),
    drop("hello.service", "m1", UNSCHEDULE_DESTROYED),
)
case(
    "unloaded (inactive) unit is unscheduled",
    snapshot([M1], [unit("hello.service", INACTIVE)], {"hello.service": "m1"}),
    drop("hello.service", "m1", UNSCHEDULE_INACTIVE),
)
case(
    "duplicate schedule entries are removed",
    snapshot([M1, M2], [hello], {"hello.service": "m1"}, extra=[("hello.service", "m2")]),
    drop("hello.service", "m2", UNSCHEDULE_DUPLICATE),
)

# -- state and hash updates --
case(
    "fleetctl stop: launched entry updated to loaded",
    snapshot(
        [M1],
        [stopped := unit("hello.service", LOADED)],
        entries={"hello.service": ScheduledUnit(MachineID("m1"), hello.hash, LAUNCHED)},
    ),
    update(stopped, "m1"),
)
case(
    "fleetctl start --replace: new hash updates the entry in place",
    snapshot(
        [M1, M2],
        [new := unit("hello.service", body="v2")],
        {"hello.service": "m1"},
        entries={"hello.service": ScheduledUnit(MachineID("m1"), digest("hello.service"), LAUNCHED)},
    ),
    update(new, "m1"),
)

# -- unit caps (MachineState.max_units) --
two = [unit("a.service"), unit("b.service")]
case(
    "a machine at its cap is skipped: the unit goes to the next least loaded",
    snapshot([capped("m1", 1), machine("m2")], [*two, hello], {"a.service": "m1", "b.service": "m2"}),
    place(hello, "m2"),
)
case(
    "caps fill machines in load order: 3 units, caps 1 and 2",
    snapshot([capped("m1", 1), capped("m2", 2)], [hello, *two]),
    place(two[0], "m1"),
    place(two[1], "m2"),
    place(hello, "m2"),
)
case(
    "every machine at its cap: the unit stays unplaced",
    snapshot([capped("m1", 1), capped("m2", 1)], [*two, hello], {"a.service": "m1", "b.service": "m2"}),
)
case(
    "placements over a lowered cap are left alone",
    snapshot([capped("m1", 1)], two, {"a.service": "m1", "b.service": "m1"}),
)
case(
    "Global units count toward the cap",
    snapshot([capped("m1", 1), machine("m2")], [unit("g.service", is_global=True), hello]),
    place(hello, "m2"),
)
case(
    "a unit that replaces one on a full machine fits there (the replaced unit moves on)",
    snapshot(
        [capped("m1", 1), machine("m2")],
        [
            old := unit("old.service"),
            new_unit := unit("new.service", machine_id="m1", replaces=["old.service"]),
        ],
        {"old.service": "m1"},
    ),
    place(new_unit, "m1"),
    drop("old.service", "m1", unable("m1", "replaced by locally-scheduled Unit(new.service)")),
    place(old, "m2"),
)
case(
    "a cap of 0 is no cap",
    snapshot([capped("m1", 0)], [*two, hello]),
    place(two[0], "m1"),
    place(two[1], "m1"),
    place(hello, "m1"),
)


# -- cordons (fleetctl drain) --
def cordon(snap: ClusterSnapshot, *machine_ids: str) -> ClusterSnapshot:
    return dataclasses.replace(snap, cordoned=frozenset(MachineID(m) for m in machine_ids))


def drained(name: str, machine_id: str) -> Unschedule:
    return drop(name, machine_id, MACHINE_CORDONED.format(machine=machine_id))


case(
    "a cordoned machine gets no new unit",
    cordon(snapshot([M1, M2], [hello]), "m1"),
    place(hello, "m2"),
)
case(
    "drain: the cordoned machine's units move to the least loaded others",
    cordon(
        snapshot([M1, M2, M3], [*two, hello], {"a.service": "m1", "b.service": "m1", "hello.service": "m2"}),
        "m1",
    ),
    drained("a.service", "m1"),
    drained("b.service", "m1"),
    place(two[0], "m3"),
    place(two[1], "m2"),
)
pinned = unit("pinned.service", machine_id="m1")
follower = unit("follower.service", peers=["pinned.service"])
case(
    "drain: a unit pinned with MachineID stays, and so does its MachineOf follower",
    cordon(snapshot([M1, M2], [pinned, follower, hello],
                    {"pinned.service": "m1", "follower.service": "m1", "hello.service": "m1"}), "m1"),
    drained("hello.service", "m1"),
    place(hello, "m2"),
)
leader_unit = unit("lead.service")
tail = unit("tail.service", peers=["lead.service"])
case(
    "drain: a movable unit's MachineOf follower moves with it",
    cordon(snapshot([M1, M2], [leader_unit, tail], {"lead.service": "m1", "tail.service": "m1"}), "m1"),
    drained("lead.service", "m1"),
    drop("tail.service", "m1", unable("m1", "required peer Unit(lead.service) is not scheduled locally")),
    place(leader_unit, "m2"),
    place(tail, "m2"),
)
case(
    "drain respects constraints: a unit no other machine can run is unscheduled and waits",
    cordon(snapshot([machine("m1", role="db"), M2], [db := unit("db.service", metadata={"role": ["db"]})],
                    {"db.service": "m1"}), "m1"),
    drained("db.service", "m1"),
)
case(
    "drain respects conflicts and caps on the other machines",
    cordon(snapshot([M1, capped("m2", 1), M3],
                    [c0 := unit("c0.service", conflicts=["c*"]), c1 := unit("c1.service", conflicts=["c*"]),
                     filler := unit("filler.service")],
                    {"c0.service": "m1", "c1.service": "m3", "filler.service": "m2"}), "m1"),
    drained("c0.service", "m1"),
)
case(
    "a cordon of a machine not in the cluster changes nothing",
    cordon(snapshot([M1], [hello], {"hello.service": "m1"}), "m9"),
)
case(
    "uncordoned (no cordon): units stay where they are, nothing moves back",
    snapshot([M1, M2], [hello], {"hello.service": "m2"}),
)


@pytest.mark.parametrize(("snap", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_plan(snap: ClusterSnapshot, expected: list[Action]) -> None:
    plan = plan_cluster(snap)
    assert plan.revision == snap.revision
    assert list(plan.actions) == expected
    assert plan_cluster(apply(snap, plan)).actions == ()


UNPLACEABLE_CASES = [
    ("no machine has the metadata", snapshot([M1], [unit("a.service", metadata={"role": ["nonesuch"]})]),
     {"a.service": "no machine has the metadata role=nonesuch"}),
    ("the MachineID names an absent machine", snapshot([M1], [unit("a.service", machine_id="m9")]),
     {"a.service": "the machine named by MachineID (m9) is not in the cluster"}),
    ("the MachineOf peer is not scheduled", snapshot([M1], [unit("a.service", peers=["nope.service"])]),
     {"a.service": "its MachineOf peer nope.service is not scheduled"}),
    ("no machines at all", snapshot([], [hello]), {"hello.service": "no machine is in the cluster"}),
    ("conflicts on every machine: the least loaded candidate says why",
     snapshot([M1], [hello, unit("b.service", conflicts=["hello.*"])], {"hello.service": "m1"}),
     {"b.service": "no machine can run it; the least loaded candidate (m1): found conflict with"
                   " locally-scheduled Unit(hello.service)"}),
    ("every machine is at its unit cap",
     snapshot([capped("m1", 1), capped("m2", 1)], [hello, unit("w.service"), unit("b.service")],
              {"hello.service": "m1", "w.service": "m2"}),
     {"b.service": "every machine able to run it is at its unit cap"}),
    ("the cap reason is the engine's when the machines able to run it are all full",
     snapshot([capped("m1", 1), capped("m2", 2, role="db"), machine("m3", role="db")],
              [hello, unit("x.service", metadata={"role": ["web"]}), unit("y.service", machine_id="m1")],
              {"hello.service": "m1"}),
     {"x.service": "no machine has the metadata role=web", "y.service": "every machine able to run it is at"
                                                                          " its unit cap"}),
    ("every machine able to run it is cordoned",
     cordon(snapshot([M1, M2], [hello]), "m1", "m2"),
     {"hello.service": "every machine able to run it is cordoned"}),
    ("a pinned unit whose machine is cordoned",
     cordon(snapshot([M1, M2], [unit("p.service", machine_id="m1")]), "m1"),
     {"p.service": "every machine able to run it is cordoned"}),
    ("cordoned or full",
     cordon(snapshot([M1, capped("m2", 1)], [hello, unit("b.service")], {"hello.service": "m2"}), "m1"),
     {"b.service": "every machine able to run it is cordoned or at its unit cap"}),
    ("placed, global and inactive units are not listed",
     snapshot([M1], [hello, unit("g.service", is_global=True), unit("i.service", INACTIVE)]), {}),
]


@pytest.mark.parametrize(("snap", "expected"), [c[1:] for c in UNPLACEABLE_CASES],
                         ids=[c[0] for c in UNPLACEABLE_CASES])
def test_units_no_machine_can_run_come_with_why(snap: ClusterSnapshot, expected: dict[str, str]) -> None:
    assert dict(plan_cluster(snap).unplaceable) == expected


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (plan.UNPLACEABLE_PEER.format(peer="db.service"), "peer"),
        (plan.UNPLACEABLE_NO_MACHINES, "no_machines"),
        (plan.UNPLACEABLE_MACHINE_ID.format(machine="abc"), "machine_id"),
        (plan.UNPLACEABLE_METADATA.format(metadata="role=db"), "metadata"),
        (plan.UNPLACEABLE_REFUSED.format(machine="abc", reason="x"), "refused"),
        (plan.UNPLACEABLE_MOVES, "moves"),
        (plan.UNPLACEABLE_CAP, "cap"),
        (plan.UNPLACEABLE_CORDONED, "cordoned"),
        (plan.UNPLACEABLE_FULL_OR_CORDONED, "cap_or_cordoned"),
        ("something else", "other"),
    ],
)
def test_every_unplaceable_reason_has_a_bounded_metric_label(reason: str, kind: str) -> None:
    assert plan.reason_kind(reason) == kind
    assert kind in (*plan.REASON_KINDS, "other")
