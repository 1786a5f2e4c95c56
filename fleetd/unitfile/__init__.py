"""Unit files: lexing, the UnitFile value and its hash, unit names, and [X-Fleet] requirements (pure)."""

from __future__ import annotations

from fleetd.unitfile.body import MAX_BODY_BYTES, body_requirements, checked_unit_file
from fleetd.unitfile.names import (
    UnitNameInfo,
    is_recognized_type,
    mangle,
    template_of,
    validate_unit_name,
)
from fleetd.unitfile.parser import LINE_MAX, UnitOption, parse
from fleetd.unitfile.requirements import (
    VALID_KEYS,
    expand_specifiers,
    expanded_requirements,
    requirement_problems,
    requirements_for,
    unknown_key_warnings,
    unknown_keys,
    validate_requirements,
)
from fleetd.unitfile.unit import EMPTY_HASH, UnitFile, parse_hash, parse_multivalue, serialize

__all__ = [
    "EMPTY_HASH",
    "LINE_MAX",
    "MAX_BODY_BYTES",
    "VALID_KEYS",
    "UnitFile",
    "UnitNameInfo",
    "UnitOption",
    "body_requirements",
    "checked_unit_file",
    "expand_specifiers",
    "expanded_requirements",
    "is_recognized_type",
    "mangle",
    "parse",
    "parse_hash",
    "parse_multivalue",
    "requirement_problems",
    "requirements_for",
    "serialize",
    "template_of",
    "unknown_key_warnings",
    "unknown_keys",
    "validate_requirements",
    "validate_unit_name",
]
