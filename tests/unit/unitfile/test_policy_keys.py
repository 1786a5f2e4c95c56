"""[X-Fleet] Reschedule=, RescheduleAttempts=, RescheduleBackoff= and HealthCheck=: values and checks."""

from __future__ import annotations

import re

import pytest

from fleetd.errors import UnitFileError
from fleetd.model import UnitName
from fleetd.unitfile.body import body_requirements, checked_unit_file
from fleetd.unitfile.requirements import health_check


def text(*fleet: str) -> str:
    return "[Service]\nExecStart=/bin/true\n\n[X-Fleet]\n" + "".join(line + "\n" for line in fleet)


@pytest.mark.parametrize(
    ("lines", "reschedule", "attempts", "backoff"),
    [
        ((), False, 3, 10.0),
        (("Reschedule=no",), False, 3, 10.0),
        (("Reschedule=on-failure",), True, 3, 10.0),
        (("Reschedule=on-failure", "RescheduleAttempts=5", "RescheduleBackoff=2.5"), True, 5, 2.5),
        (("Reschedule=on-failure", "RescheduleBackoff=30s"), True, 3, 30.0),
        (("RescheduleAttempts=5",), False, 3, 10.0),
    ],
    ids=["default", "no", "on-failure", "attempts and backoff", "backoff with s",
         "attempts alone: no policy"],
)
def test_policy_values(lines: tuple[str, ...], reschedule: bool, attempts: int, backoff: float) -> None:
    req = body_requirements(text(*lines))(UnitName("web.service"))
    got = (req.reschedule, req.reschedule_attempts, req.reschedule_backoff)
    assert got == (reschedule, attempts, backoff)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (("Reschedule=always",),
         'Reschedule="always" is not valid; use Reschedule=on-failure or Reschedule=no'),
        (("RescheduleAttempts=0",), 'RescheduleAttempts="0" must be a whole number from 1 to 100'),
        (("RescheduleAttempts=many",), 'RescheduleAttempts="many" must be a whole number from 1 to 100'),
        (("RescheduleBackoff=-1",), 'RescheduleBackoff="-1" must be seconds from 0 to 86400'),
        (("RescheduleBackoff=nan",), 'RescheduleBackoff="nan" must be seconds from 0 to 86400'),
        (("Reschedule=on-failure", "MachineID=abc"),
         "Reschedule=on-failure cannot be used with MachineID: the unit runs only on its one machine"),
        (("Reschedule=on-failure", "Global=true"),
         "Reschedule=on-failure cannot be used with Global: the unit runs only on every machine"),
        (("MachineOf=db.service", "Reschedule=on-failure"),
         "Reschedule=on-failure cannot be used with MachineOf: the unit runs only on its MachineOf peer's"
         " machine"),
        (("HealthCheck=  ",), "HealthCheck= needs a command"),
    ],
    ids=["bad policy", "zero attempts", "attempts not a number", "negative backoff", "nan backoff",
         "pinned", "global", "follower", "empty health check"],
)
def test_bad_values_are_refused_naming_the_key(lines: tuple[str, ...], message: str) -> None:
    with pytest.raises(UnitFileError, match=re.escape(message)):
        checked_unit_file(text(*lines))


def test_health_check_command() -> None:
    assert health_check(checked_unit_file(text("HealthCheck=curl -fs http://127.0.0.1:80/"))) == (
        "curl -fs http://127.0.0.1:80/"
    )
    assert health_check(checked_unit_file(text())) is None
