"""Unit text -> a usable unit: the one policy for every unit body fleet accepts or reads back (pure).

A body is *usable* when it is at most ``MAX_BODY_BYTES`` of valid UTF-8, parses, and its ``[X-Fleet]``
options pass validation: exactly what ``fleetctl verify`` and ``submit`` accept. Bodies read back from the
registry go through the same check, because anyone with etcd access can write any bytes there:

- the engine neither places nor moves a unit whose body is not usable (it cannot honour constraints it
  cannot read); its existing schedule entries are left alone;
- an agent does not load a scheduled or global unit whose body is not usable;
- both report the body once (a WARNING naming the hash and the problem) and carry on.

Whatever the text, these functions raise ``UnitFileError`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetd.errors import FleetError, UnitFileError
from fleetd.model import Requirements, UnitName
from fleetd.unitfile.requirements import requirements_for, validate_requirements
from fleetd.unitfile.unit import UnitFile

__all__ = ["MAX_BODY_BYTES", "RequirementsFor", "body_requirements", "checked_unit_file"]

# etcd refuses requests over 1.5 MiB; a body must fit in one with its keys and the other ops of its Txn.
MAX_BODY_BYTES = 1024 * 1024

RequirementsFor = Callable[[UnitName], Requirements]


def checked_unit_file(text: str) -> UnitFile:
    """The unit file of ``text`` when it is usable; UnitFileError (with a line when known) otherwise."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise UnitFileError("not valid UTF-8 text", line) from None
    if len(data) > MAX_BODY_BYTES:
        raise UnitFileError(f"unit file is {len(data)} bytes; the limit is {MAX_BODY_BYTES} bytes (1 MiB)")
    try:
        unit_file = UnitFile.from_text(text)
        validate_requirements(unit_file)
    except UnitFileError:
        raise
    except (FleetError, ValueError, RecursionError, MemoryError) as exc:  # hostile text: never a crash
        raise UnitFileError(f"unit file cannot be read: {exc}") from None
    return unit_file


def body_requirements(text: str) -> RequirementsFor:
    """Check ``text`` once; the result gives each unit name its expanded requirements (UnitFileError
    when expanding them for that name fails)."""
    unit_file = checked_unit_file(text)

    def for_name(name: UnitName) -> Requirements:
        try:
            return requirements_for(unit_file, name)
        except UnitFileError:
            raise
        except (FleetError, ValueError, RecursionError) as exc:
            raise UnitFileError(f"[X-Fleet] requirements for {name} cannot be read: {exc}") from None

    return for_name
