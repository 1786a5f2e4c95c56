"""Failure markers, reschedule records and rollouts: round trips and what a bad record is told by."""

from __future__ import annotations

import pytest

from fleetd.model import MachineID, Rescheduled, UnitName
from fleetd.registry import records
from fleetd.registry.keyspace import BadRecord, Keyspace

H1, H2 = "a" * 40, "b" * 40
KEYS = Keyspace("/p")


def test_round_trips() -> None:
    assert records.decode_failed("k", records.encode_failed(H1)) == H1
    done = Rescheduled(H1, 2, 1700000000.5, (MachineID("m1"), MachineID("m2")), "moved")
    assert records.decode_rescheduled("k", records.encode_rescheduled(done)) == done
    rollout = records.Rollout(
        UnitName("web@.service"), H2, "[Service]\n", (UnitName("web@1.service"),),
        {UnitName("web@1.service"): H1}, {H1: "[Service]\nold\n"}, 2, "rolling-back", "web@1 failed",
    )
    key = KEYS.rollout("web@.service")
    assert KEYS.rollout_name(key) == "web@.service"
    assert records.decode_rollout(key, records.encode_rollout(rollout)) == rollout
    assert KEYS.parse_failed(KEYS.failed_unit("web@1.service", "m1")) == ("web@1.service", "m1")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('{"hash":"x","attempts":1,"last":0,"machines":[],"reason":""}', "field 'hash' is not 40"),
        (f'{{"hash":"{H1}","attempts":-1,"last":0,"machines":[],"reason":""}}', "field 'attempts'"),
        (f'{{"hash":"{H1}","attempts":1,"last":1e400,"machines":[],"reason":""}}', "field 'last'"),
        (f'{{"hash":"{H1}","attempts":1,"last":0,"machines":["a/b"],"reason":""}}', "invalid machine id"),
        (f'{{"hash":"{H1}","attempts":true,"last":0,"machines":[],"reason":""}}', "field 'attempts'"),
    ],
)
def test_bad_reschedule_records_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(BadRecord, match=problem):
        records.decode_rescheduled("/p/reschedules/a.service", text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[]", "expected a JSON object"),
        (f'{{"hash":"{H1}","body":"","units":"x","old":{{}},"old_bodies":{{}},"max_unavailable":1,'
         '"phase":"rolling"}', "field 'units'"),
        (f'{{"hash":"{H1}","body":"","units":[],"old":{{}},"old_bodies":{{}},"max_unavailable":0,'
         '"phase":"rolling"}', "field 'max_unavailable'"),
        (f'{{"hash":"{H1}","body":"","units":[],"old":{{}},"old_bodies":{{}},"max_unavailable":1,'
         '"phase":"paused"}', "field 'phase'"),
        (f'{{"hash":"{H1}","body":"","units":["../x"],"old":{{}},"old_bodies":{{}},"max_unavailable":1,'
         '"phase":"rolling"}', "invalid unit name"),
        (f'{{"hash":"{H1}","body":"","units":[],"old":{{"a.service":"zz"}},"old_bodies":{{}},'
         '"max_unavailable":1,"phase":"rolling"}', "an old hash"),
    ],
)
def test_bad_rollouts_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(BadRecord, match=problem):
        records.decode_rollout("/p/rollouts/web@.service", text)
