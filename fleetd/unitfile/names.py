"""Unit names: validation, template/instance parsing and fleetctl's argument mangling (pure)."""

from __future__ import annotations

import string
from dataclasses import dataclass

from fleetd.errors import UnitNameError
from fleetd.unitfile.parser import go_quote

__all__ = [
    "MAX_NAME_LENGTH",
    "RECOGNIZED_TYPES",
    "TEMPLATE_TYPES",
    "UNIT_TYPES",
    "UnitNameInfo",
    "base_name",
    "is_recognized_type",
    "mangle",
    "template_of",
    "validate_unit_name",
]

MAX_NAME_LENGTH = 256  # bytes of UTF-8, as the original counts them
DEFAULT_TYPE = "service"

UNIT_TYPES = frozenset({
    "automount", "busname", "device", "mount", "path", "scope", "service", "slice", "snapshot", "socket",
    "swap", "target", "timer",
})
TEMPLATE_TYPES = frozenset({"path", "service", "socket", "target", "timer"})
# The types fleetctl leaves alone when mangling an argument (note: not .target).
RECOGNIZED_TYPES = frozenset({"service", "socket", "timer", "path", "device", "mount", "automount"})

_VALID_CHARS = frozenset(string.ascii_letters + string.digits + ":-_.\\@")


def validate_unit_name(name: str) -> None:
    """Raise UnitNameError with the original's message for the first problem of ``name``.

    Checks run in the original's order: empty, length, type suffix, template type, characters, "@".
    """
    if not name:
        raise UnitNameError("unit name cannot be empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_LENGTH:
        raise UnitNameError(f"unit name exceeds maximum length ({MAX_NAME_LENGTH})")
    dot = name.rfind(".")
    if dot < 0:
        raise UnitNameError('unit name must contain "."')
    if dot == len(name) - 1:
        raise UnitNameError('unit name cannot end in "."')
    suffix = name[dot + 1 :]
    if suffix not in UNIT_TYPES:
        raise UnitNameError(f"invalid unit type: {go_quote(suffix)}")
    if "@" in name and suffix not in TEMPLATE_TYPES:
        raise UnitNameError(f"invalid unit type for template: {go_quote(suffix)}")
    stem = name[:dot]
    if not _VALID_CHARS.issuperset(stem):  # one set check; the loop only to name the first bad character
        for char in stem:
            if char not in _VALID_CHARS:
                raise UnitNameError(f"invalid character {_quote_char(char)} in unit name")
    if name.startswith("@"):
        raise UnitNameError('unit name cannot start in "@"')


@dataclass(frozen=True, slots=True)
class UnitNameInfo:
    """The parts of a unit name: ``foo@bar.service`` -> name ``foo@bar``, prefix ``foo``,
    template ``foo@.service``, instance ``bar``, suffix ``.service``."""

    full_name: str
    name: str  # everything before the last "."
    suffix: str  # from the last "." on, dot included
    prefix: str  # before the first "@" of ``name``, or all of ``name``
    template: str  # ``prefix@suffix`` when ``name`` has an "@", else ''
    instance: str  # after the first "@" of ``name``, else ''

    @classmethod
    def parse(cls, full_name: str) -> UnitNameInfo | None:
        """Split a unit name; None when it has no "." (no type suffix)."""
        dot = full_name.rfind(".")
        if dot < 0:
            return None
        name, suffix = full_name[:dot], full_name[dot:]
        prefix, at, instance = name.partition("@")
        template = f"{prefix}@{suffix}" if at else ""
        return cls(full_name, name, suffix, prefix, template, instance)

    @property
    def is_template(self) -> bool:
        return bool(self.template) and not self.instance

    @property
    def is_instance(self) -> bool:
        return bool(self.template) and bool(self.instance)


def template_of(name: str) -> str | None:
    """The template of an instance (``foo@1.service`` -> ``foo@.service``); None for other names."""
    info = UnitNameInfo.parse(name)
    return info.template if info is not None and info.is_instance else None


def is_recognized_type(name: str) -> bool:
    """True when ``name`` ends in a type fleetctl accepts without appending ``.service``."""
    base = base_name(name)
    dot = base.rfind(".")
    return dot >= 0 and base[dot + 1 :] in RECOGNIZED_TYPES


def mangle(arg: str) -> str:
    """fleetctl's name mangling: the argument's base name, plus ``.service`` unless of a recognized type.

    ``foo`` -> ``foo.service``; ``foo.1`` -> ``foo.1.service``; ``foo/bar.socket`` -> ``bar.socket``;
    ``x.target`` -> ``x.target.service`` (a quirk kept from the original).
    """
    base = base_name(arg)
    return base if is_recognized_type(base) else f"{base}.{DEFAULT_TYPE}"


def base_name(path: str) -> str:
    """The last element of a slash-separated path, as Go's path.Base computes it ("" -> ".", "/" -> "/")."""
    if not path:
        return "."
    stripped = path.rstrip("/")
    if not stripped:
        return "/"
    return stripped.rsplit("/", 1)[-1]


def _quote_char(char: str) -> str:
    """Go's %q for a rune: ``'x'``."""
    escaped = "\\'" if char == "'" else go_quote(char)[1:-1].replace('\\"', '"')
    return f"'{escaped}'"
