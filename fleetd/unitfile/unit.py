"""The UnitFile value: options, canonical text and content hash (pure).

The canonical form is what fleet stores, prints (``fleetctl cat``) and writes to disk: sections in
order of first appearance (repeated sections merged), each as ``[Section]`` followed by its
``Name=Value`` lines in file order, one blank line between sections, nothing after the last option.
Comments, blank lines and empty sections are gone. The hash is the SHA-1 of the canonical form, so
two unit files "match" when their canonical forms are equal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from fleetd.errors import UnitFileError
from fleetd.unitfile.parser import UnitOption, parse

__all__ = [
    "EMPTY_HASH", "FLEET_SECTION", "SHORT_HASH_LENGTH", "UnitFile", "canonical_order", "parse_hash",
    "parse_multivalue", "serialize",
]

FLEET_SECTION = "X-Fleet"
SHORT_HASH_LENGTH = 7
EMPTY_HASH = hashlib.sha1(b"").hexdigest()

_HEX40 = re.compile(r"[0-9a-fA-F]{40}")


@dataclass(frozen=True, slots=True)
class UnitFile:
    """An immutable unit file; equality and hashing follow the options (section, name, value) in order."""

    options: tuple[UnitOption, ...] = ()
    canonical: str = field(init=False, repr=False, compare=False)
    hash: str = field(init=False, repr=False, compare=False)  # 40 lowercase hex: SHA-1 of ``canonical``

    def __post_init__(self) -> None:
        canonical = serialize(self.options)
        object.__setattr__(self, "canonical", canonical)
        object.__setattr__(self, "hash", hashlib.sha1(canonical.encode("utf-8", "surrogatepass")).hexdigest())

    @classmethod
    def from_text(cls, text: str) -> UnitFile:
        """Parse unit-file text; raises UnitFileError (with its line) on text the lexer rejects."""
        return cls(parse(text))

    @classmethod
    def from_options(cls, options: Iterable[tuple[str, str, str]]) -> UnitFile:
        """Build from (section, name, value) triples, e.g. as stored in the registry."""
        return cls(tuple(UnitOption(section, name, value) for section, name, value in options))

    @property
    def short_hash(self) -> str:
        return self.hash[:SHORT_HASH_LENGTH]

    @property
    def contents(self) -> dict[str, dict[str, list[str]]]:
        """A fresh map section -> name -> values in file order; quoted [X-Fleet] values are split."""
        out: dict[str, dict[str, list[str]]] = {}
        for option in self.options:
            values = out.setdefault(option.section, {}).setdefault(option.name, [])
            if option.section == FLEET_SECTION:
                values.extend(parse_multivalue(option.value))
            else:
                values.append(option.value)
        return out

    @property
    def description(self) -> str:
        """The first [Unit] Description, or '' when there is none."""
        for option in self.options:
            if option.section == "Unit" and option.name == "Description":
                return option.value
        return ""

    @property
    def has_install_section(self) -> bool:
        return any(option.section == "Install" for option in self.options)

    def section_options(self, section: str) -> tuple[UnitOption, ...]:
        return tuple(option for option in self.options if option.section == section)


def serialize(options: Iterable[UnitOption]) -> str:
    """The canonical text of ``options`` (see the module docstring); '' for no options."""
    grouped: dict[str, list[str]] = {}
    for option in options:
        grouped.setdefault(option.section, []).append(f"{option.name}={option.value}\n")
    return "\n".join(f"[{section}]\n{''.join(lines)}" for section, lines in grouped.items())


def canonical_order(options: Iterable[UnitOption]) -> tuple[UnitOption, ...]:
    """``options`` in the order ``serialize`` writes them (repeated sections merged): what parsing the
    canonical form gives back."""
    by_section: dict[str, list[UnitOption]] = {}
    for option in options:
        by_section.setdefault(option.section, []).append(option)
    return tuple(option for group in by_section.values() for option in group)


def parse_multivalue(value: str) -> list[str]:
    """Split a quoted [X-Fleet] value: ``"a" "b c"`` -> [a, b c].

    Only a value that starts and ends with ``"`` is split: quotes toggle quoting and are dropped,
    a space outside quotes ends a value (consecutive spaces give empty values), and backslash is
    not special. Anything else is one value, unchanged.
    """
    if not (value.startswith('"') and value.endswith('"')):
        return [value]
    values: list[str] = []
    current: list[str] = []
    quoted = False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == " " and not quoted:
            values.append("".join(current))
            current = []
        else:
            current.append(char)
    values.append("".join(current))
    return values


def parse_hash(text: str) -> str:
    """Validate a 40-hex-digit unit hash and return it lower-cased; raises UnitFileError otherwise."""
    if _HEX40.fullmatch(text) is None:
        raise UnitFileError(f"invalid unit hash {text!r}: expected 40 hexadecimal digits")
    return text.lower()
