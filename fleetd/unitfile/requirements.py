"""A unit's [X-Fleet] requirements: typed extraction, unknown keys and combination checks (pure).

Keys are case-sensitive. Deprecated aliases are merged with their modern key: ``X-ConditionMachineID`` and
``X-ConditionMachineBootID`` (MachineID), ``X-ConditionMachineOf`` (MachineOf), ``X-Conflicts`` (Conflicts),
``X-ConditionMachineMetadata`` (MachineMetadata). Before evaluation, ``%n %N %p %i`` in every value are
replaced, in that order, by the unit's full name, name without type, prefix and instance; a name without a
"." expands nothing (validation runs without a name, so it sees the raw values).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fleetd.errors import UnitFileError
from fleetd.glob import match as glob_match
from fleetd.glob import pattern_problem
from fleetd.model import Requirements
from fleetd.unitfile.names import UnitNameInfo
from fleetd.unitfile.parser import GO_SPACE, parse
from fleetd.unitfile.unit import FLEET_SECTION, UnitFile, parse_multivalue

__all__ = [
    "CONFLICT_KEYS",
    "MACHINE_ID_KEYS",
    "METADATA_KEYS",
    "PEER_KEYS",
    "VALID_KEYS",
    "expand_specifiers",
    "expanded_requirements",
    "health_check",
    "parse_multivalue",
    "requirement_problems",
    "requirements_for",
    "unknown_key_warnings",
    "unknown_keys",
    "validate_requirements",
]

MACHINE_ID_KEYS = ("MachineID", "X-ConditionMachineID", "X-ConditionMachineBootID")  # in precedence order
PEER_KEYS = frozenset({"MachineOf", "X-ConditionMachineOf"})
CONFLICT_KEYS = frozenset({"Conflicts", "X-Conflicts"})
METADATA_KEYS = frozenset({"MachineMetadata", "X-ConditionMachineMetadata"})
GLOBAL_KEY = "Global"
REPLACES_KEY = "Replaces"
RESCHEDULE_KEY = "Reschedule"  # "no" (the default: a failed unit stays where it failed) or "on-failure"
ATTEMPTS_KEY = "RescheduleAttempts"
BACKOFF_KEY = "RescheduleBackoff"
HEALTH_CHECK_KEY = "HealthCheck"  # a command fleetctl rolling-update runs on the unit's machine
RESCHEDULE_VALUES = ("no", "on-failure")
MAX_ATTEMPTS = 100
MAX_BACKOFF = 86400.0
VALID_KEYS = frozenset(
    {*MACHINE_ID_KEYS, *PEER_KEYS, *CONFLICT_KEYS, *METADATA_KEYS, GLOBAL_KEY, REPLACES_KEY, RESCHEDULE_KEY,
     ATTEMPTS_KEY, BACKOFF_KEY, HEALTH_CHECK_KEY}
)
TRUTHY = frozenset({"true", "yes", "1", "on", "t"})
MAX_VALUES = 256  # MachineOf peers, Conflicts or Replaces patterns per unit (each peer meets each pattern)


@dataclass(frozen=True, slots=True)
class _Value:
    key: str
    value: str
    line: int


def expand_specifiers(value: str, name: str) -> str:
    """Replace %n, %N, %p and %i (in that order, no %% escape) for unit ``name``; unchanged without a "."."""
    info = UnitNameInfo.parse(name)
    return value if info is None else _expand(value, info)


def _expand(value: str, info: UnitNameInfo) -> str:
    if "%" not in value:
        return value
    for spec, replacement in (("%n", info.full_name), ("%N", info.name), ("%p", info.prefix),
                              ("%i", info.instance)):
        value = value.replace(spec, replacement)
    return value


def _values(unit: UnitFile, name: str = "") -> Iterator[_Value]:
    """Every [X-Fleet] value in file order, quoted multi-values split, specifiers expanded for ``name``."""
    info = UnitNameInfo.parse(name)
    for option in unit.options:
        if option.section != FLEET_SECTION:
            continue
        for value in parse_multivalue(option.value):
            yield _Value(option.name, value if info is None else _expand(value, info), option.line)


def expanded_requirements(unit: UnitFile, name: str = "") -> dict[str, list[str]]:
    """The raw requirements map: every [X-Fleet] key (known or not) -> its expanded values in file order."""
    out: dict[str, list[str]] = {}
    for item in _values(unit, name):
        out.setdefault(item.key, []).append(item.value)
    return out


def requirements_for(unit: UnitFile, name: str) -> Requirements:
    """The typed requirements of ``unit`` submitted as ``name`` (specifiers expanded for that name)."""
    return _Extracted(list(_values(unit, name))).requirements()


def unknown_keys(unit: UnitFile) -> tuple[str, ...]:
    """[X-Fleet] keys fleet does not know, once each in order of first appearance."""
    seen: dict[str, None] = {}
    for option in unit.options:
        if option.section == FLEET_SECTION and option.name not in VALID_KEYS:
            seen.setdefault(option.name, None)
    return tuple(seen)


def unknown_key_warnings(unit: UnitFile, name: str) -> tuple[str, ...]:
    """The original's warning line for each unknown [X-Fleet] key."""
    return tuple(f'Unit {name}: unrecognized requirement in [X-Fleet] section: "{key}"'
                 for key in unknown_keys(unit))


def validate_requirements(unit: UnitFile, *, canonical_parses: bool = False) -> None:
    """Raise the first problem ``requirement_problems`` finds (the one the original reports)."""
    problems = requirement_problems(unit, canonical_parses=canonical_parses)
    if problems:
        raise problems[0]


def requirement_problems(unit: UnitFile, *, canonical_parses: bool = False) -> tuple[UnitFileError, ...]:
    """Every reason the [X-Fleet] options cannot be satisfied, in the original's check order.

    Malformed or over-limit Conflicts and Replaces globs come first (a check the original lacks: a glob is
    matched against every unit name on every engine pass). Each error carries the line of the option that
    completes the bad combination, when known. ``canonical_parses``: the caller has checked that the
    canonical form parses (``fleetd.unitfile.body`` does), so it is not parsed again here.
    """
    if not canonical_parses:
        try:
            parse(unit.canonical)
        except UnitFileError as err:
            return (UnitFileError(err.msg),)
    if all(option.section != FLEET_SECTION for option in unit.options):
        return ()  # every check below is of [X-Fleet] values
    found = _Extracted(list(_values(unit)))
    problems = [
        UnitFileError(f'{pattern.key} pattern "{_shortened(pattern.value)}" {problem}', pattern.line or None)
        for pattern in _unique(found.conflicts + found.replaces)
        if (problem := pattern_problem(pattern.value)) is not None
    ]
    peers = _unique(found.peers)
    counted = (("MachineOf peers", peers), ("Conflicts patterns", _unique(found.conflicts)),
               ("Replaces patterns", _unique(found.replaces)))
    for label, values in counted:
        if len(values) > MAX_VALUES:
            problems.append(UnitFileError(
                f"{len(values)} {label}; at most {MAX_VALUES} are allowed", values[MAX_VALUES].line or None))
    if any(len(values) > MAX_VALUES for _label, values in counted):
        return tuple(problems)  # every peer against every pattern would take too long: stop here
    for kind, patterns in (("conflict", counted[1][1]), ("replace", counted[2][1])):
        for peer in peers:
            for pattern in patterns:
                if glob_match(pattern.value, peer.value):
                    line = max(peer.line, pattern.line)
                    problems.append(UnitFileError(
                        f'unresolvable requirements: peer "{peer.value}" matches {kind} "{pattern.value}"',
                        line or None))
    kinds = [
        ("MachineID", found.machine_ids),
        ("Peers", found.peers),
        ("Conflicts", found.conflicts),
        ("Global", found.globals[-1:] if found.is_global() else []),
        ("Replaces", found.replaces),
    ]
    present = {label: values[0].line for label, values in kinds if values}
    for first, second in _EXCLUSIVE:
        if first in present and second in present:
            line = max(present[first], present[second])
            problems.append(UnitFileError(f"{first} cannot be used with {second}", line or None))
    problems.extend(_policy_problems(found, present))
    return tuple(problems)


def _policy_problems(found: _Extracted, present: dict[str, int]) -> list[UnitFileError]:
    """Reschedule=, RescheduleAttempts=, RescheduleBackoff= and HealthCheck= values (last one wins)."""
    problems: list[UnitFileError] = []
    for item in found.policy[RESCHEDULE_KEY][-1:]:
        if item.value not in RESCHEDULE_VALUES:
            problems.append(UnitFileError(
                f'Reschedule="{_shortened(item.value)}" is not valid; use Reschedule=on-failure or'
                " Reschedule=no", item.line or None))
        elif item.value == "on-failure":
            for label, why in (("MachineID", "its one machine"), ("Peers", "its MachineOf peer's machine"),
                               ("Global", "every machine")):
                if label in present:
                    key = "MachineOf" if label == "Peers" else label
                    problems.append(UnitFileError(
                        f"Reschedule=on-failure cannot be used with {key}: the unit runs only on {why}",
                        max(item.line, present[label]) or None))
    for item in found.policy[ATTEMPTS_KEY][-1:]:
        if _attempts(item.value) is None:
            problems.append(UnitFileError(
                f'RescheduleAttempts="{_shortened(item.value)}" must be a whole number from 1 to'
                f" {MAX_ATTEMPTS}",
                item.line or None))
    for item in found.policy[BACKOFF_KEY][-1:]:
        if _backoff(item.value) is None:
            problems.append(UnitFileError(
                f'RescheduleBackoff="{_shortened(item.value)}" must be seconds from 0 to {MAX_BACKOFF:g}',
                item.line or None))
    for item in found.policy[HEALTH_CHECK_KEY][-1:]:
        if not item.value.strip():
            problems.append(UnitFileError("HealthCheck= needs a command (run on the unit's machine; exit"
                                          " status 0 means healthy)", item.line or None))
    return problems


def _attempts(text: str) -> int | None:
    value = text.strip()
    if not value.isdecimal() or len(value) > 4 or not 1 <= int(value) <= MAX_ATTEMPTS:
        return None
    return int(value)


def _backoff(text: str) -> float | None:
    value = text.strip().removesuffix("s")
    if not value or len(value) > 16 or not all(c.isdigit() or c == "." for c in value):
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 <= seconds <= MAX_BACKOFF else None


def health_check(unit: UnitFile) -> str | None:
    """The unit's HealthCheck= command (the last one given), or None."""
    values = _Extracted(list(_values(unit))).policy[HEALTH_CHECK_KEY]
    return values[-1].value.strip() if values and values[-1].value.strip() else None


_EXCLUSIVE = (
    ("MachineID", "Peers"),
    ("MachineID", "Conflicts"),
    ("MachineID", "Global"),
    ("MachineID", "Replaces"),
    ("Global", "Peers"),
    ("Global", "Replaces"),
    ("Conflicts", "Replaces"),
)


class _Extracted:
    """The [X-Fleet] values sorted by meaning (still with their lines, for error messages)."""

    def __init__(self, values: list[_Value]) -> None:
        self.peers = [v for v in values if v.key in PEER_KEYS]
        self.conflicts = [
            _Value(v.key, pattern, v.line)
            for v in values if v.key in CONFLICT_KEYS
            for pattern in _fields(v.value)
        ]
        self.replaces = [v for v in values if v.key == REPLACES_KEY]
        self.globals = [v for v in values if v.key == GLOBAL_KEY]
        self.metadata = [v for v in values if v.key in METADATA_KEYS]
        self.policy = {
            key: [v for v in values if v.key == key]
            for key in (RESCHEDULE_KEY, ATTEMPTS_KEY, BACKOFF_KEY, HEALTH_CHECK_KEY)
        }
        self.machine_ids: list[_Value] = []
        for key in MACHINE_ID_KEYS:
            self.machine_ids = [v for v in values if v.key == key]
            if self.machine_ids:
                break

    def is_global(self) -> bool:
        return bool(self.globals) and self.globals[-1].value.lower() in TRUTHY

    def requirements(self) -> Requirements:
        allowed: dict[str, set[str]] = {}
        for item in self.metadata:
            parts = item.value.split("=")
            if len(parts) == 2 and parts[0] and parts[1]:
                allowed.setdefault(parts[0], set()).add(parts[1])
        return Requirements(
            machine_id=self.machine_ids[0].value if self.machine_ids else None,
            peers=tuple(v.value for v in self.peers),
            conflicts=tuple(v.value for v in self.conflicts),
            metadata={key: frozenset(values) for key, values in allowed.items()},
            is_global=self.is_global(),
            replaces=tuple(v.value for v in self.replaces),
            **self._reschedule(),
        )

    def _reschedule(self) -> dict[str, Any]:
        """The reschedule policy (values that do not validate fall back to the defaults)."""
        policy = self.policy[RESCHEDULE_KEY]
        if not policy or policy[-1].value != "on-failure":
            return {}
        out: dict[str, Any] = {"reschedule": True}
        attempts = self.policy[ATTEMPTS_KEY]
        if attempts and (count := _attempts(attempts[-1].value)) is not None:
            out["reschedule_attempts"] = count
        backoff = self.policy[BACKOFF_KEY]
        if backoff and (seconds := _backoff(backoff[-1].value)) is not None:
            out["reschedule_backoff"] = seconds
        return out


def _fields(value: str) -> list[str]:
    """Split on runs of whitespace, as Go's strings.Fields does."""
    out: list[str] = []
    current: list[str] = []
    for char in value:
        if char in GO_SPACE:
            if current:
                out.append("".join(current))
                current = []
        else:
            current.append(char)
    if current:
        out.append("".join(current))
    return out


def _shortened(value: str, limit: int = 64) -> str:
    return value if len(value) <= limit else value[:limit - 3] + "..."


def _unique(values: list[_Value]) -> list[_Value]:
    seen: dict[str, _Value] = {}
    for item in values:
        seen.setdefault(item.value, item)
    return list(seen.values())
