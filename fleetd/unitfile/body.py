"""Unit text -> a usable unit: the one policy for every unit body fleet accepts or reads back (pure).

A body is *usable* when it is at most ``MAX_BODY_BYTES`` of valid UTF-8 without NUL characters,
parses, has a canonical form that parses back to the same options (see ``parser``; otherwise its hash
would change once stored), and its ``[X-Fleet]`` options pass validation: exactly what ``fleetctl
verify``, ``submit``, ``load`` and ``start`` accept (local files come in as bytes: ``checked_unit_bytes``).
Bodies read back from the registry go through the same check, because anyone with etcd access can write
any bytes there:

- the engine neither places nor moves a unit whose body is not usable (it cannot honour constraints it
  cannot read); its existing schedule entries are left alone;
- an agent does not load a scheduled or global unit whose body is not usable;
- both report the body once (a WARNING naming the hash and the problem) and carry on.

Whatever the text, these functions raise ``UnitFileError`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetd.errors import FleetError, UnitFileError
from fleetd.model import NO_REQUIREMENTS, Requirements, UnitName
from fleetd.unitfile.parser import parse
from fleetd.unitfile.requirements import requirements_for, validate_requirements
from fleetd.unitfile.unit import FLEET_SECTION, UnitFile, canonical_order

__all__ = [
    "MAX_BODY_BYTES", "RequirementsFor", "body_requirements", "check_body_size", "checked_unit_bytes",
    "checked_unit_file", "decode_unit_text",
]

# etcd refuses requests over 1.5 MiB; a body must fit in one with its keys and the other ops of its Txn.
MAX_BODY_BYTES = 1024 * 1024

RequirementsFor = Callable[[UnitName], Requirements]


def decode_unit_text(data: bytes) -> str:
    """The text of a unit body given as bytes (e.g. a local file): at most ``MAX_BODY_BYTES`` of strict
    UTF-8; UnitFileError otherwise."""
    check_body_size(len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(data.count(b"\n", 0, exc.start) + 1) from None


def checked_unit_bytes(data: bytes) -> UnitFile:
    """``checked_unit_file`` of bytes: the one way a unit file read from disk becomes a UnitFile."""
    return checked_unit_file(decode_unit_text(data))


def checked_unit_file(text: str) -> UnitFile:
    """The unit file of ``text`` when it is usable; UnitFileError (with a line when known) otherwise."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise _not_utf8(text.count("\n", 0, exc.start) + 1) from None
    check_body_size(len(data))
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise UnitFileError(f"contains a NUL character (line {line}); a unit file is text: remove it")
    try:
        unit_file = UnitFile.from_text(text)
        _check_stable(unit_file, text)
        validate_requirements(unit_file, canonical_parses=True)
    except UnitFileError:
        raise
    except (FleetError, ValueError, RecursionError, MemoryError) as exc:  # hostile text: never a crash
        raise UnitFileError(f"unit file cannot be read: {exc}") from None
    return unit_file


def check_body_size(size: int) -> None:
    """UnitFileError when a body of ``size`` bytes is too large (lets a reader refuse before reading)."""
    if size > MAX_BODY_BYTES:
        raise UnitFileError(
            f"unit file is {size} bytes; the limit is {MAX_BODY_BYTES} bytes (1 MiB): make it smaller"
        )


def _not_utf8(line: int) -> UnitFileError:
    return UnitFileError(f"not valid UTF-8 text (line {line}); save it as UTF-8")


def _check_stable(unit_file: UnitFile, text: str) -> None:
    """The parser rejects what its canonical form cannot represent; this guards that promise, because a
    hash that changes once stored makes every agent reload the unit on every pass. A text that is its own
    canonical form (every body stored in the registry) parsed to ``unit_file`` already: no second parse."""
    expected = canonical_order(unit_file.options)
    if text == unit_file.canonical:
        again = unit_file.options
    else:
        try:
            again = parse(unit_file.canonical)
        except UnitFileError:
            again = ()
    if again != expected:
        line = next((o.line for o, a in zip(expected, again, strict=False) if o != a), expected[-1].line)
        raise UnitFileError("this option reads back differently once stored in canonical form; simplify"
                            " its value", line or None)


def body_requirements(text: str) -> RequirementsFor:
    """Check ``text`` once; the result gives each unit name its expanded requirements (UnitFileError
    when expanding them for that name fails).

    The result keeps only the [X-Fleet] options (the engine keeps one per body: at 100,000 bodies the
    whole parsed files were ~0.8 KB each), and without a specifier in them every name gets one shared
    ``Requirements`` (without [X-Fleet] options, the shared empty one)."""
    options = checked_unit_file(text).section_options(FLEET_SECTION)
    if not options:
        return _no_requirements
    fleet = UnitFile(options)
    if not any("%" in option.value for option in fleet.options):
        fixed = _requirements(fleet, UnitName(""))
        return lambda _name: fixed

    def for_name(name: UnitName) -> Requirements:
        return _requirements(fleet, name)

    return for_name


def _no_requirements(_name: UnitName) -> Requirements:
    return NO_REQUIREMENTS


def _requirements(fleet: UnitFile, name: UnitName) -> Requirements:
    try:
        return requirements_for(fleet, name)
    except UnitFileError:
        raise
    except (FleetError, ValueError, RecursionError) as exc:
        raise UnitFileError(f"[X-Fleet] requirements for {name} cannot be read: {exc}") from None
