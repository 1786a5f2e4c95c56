"""Offline unit-file checks for ``fleetctl verify [--canonical] FILE...`` (DESIGN.md §7 item 9).

For each file: the unit name (the file's base name) is validated, and the file is read and judged by
``fleetctl.unit_files.read_unit_file``, the one reader ``submit``, ``load`` and ``start`` use: a file is
accepted here exactly when they accept it (the name check only adds what they check on the argument).
A valid file prints ``FILE: ok <short hash>`` (and, with ``--canonical``, its canonical text); each
problem prints ``FILE:LINE: <error>`` (``FILE: <error>`` when no line applies) on stderr: the reader's
reason, or every [X-Fleet] problem when that is what it rejected. Unknown [X-Fleet] keys only warn. The
exit code is 0 only when every file is valid.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fleetctl.unit_files import LocalUnitFileError, read_unit_file
from fleetd.errors import FleetError, UnitFileError, UnitNameError
from fleetd.unitfile import UnitFile, requirement_problems, unknown_keys, validate_unit_name
from fleetd.unitfile.body import decode_unit_text
from fleetd.unitfile.names import base_name
from fleetd.unitfile.unit import FLEET_SECTION

__all__ = ["OutputLine", "Stream", "VerifyReport", "verify_paths"]


class Stream(enum.Enum):
    STDOUT = "stdout"
    STDERR = "stderr"


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One line of output (without its newline) and the stream it belongs on."""

    stream: Stream
    text: str

    @property
    def is_error(self) -> bool:
        return self.stream is Stream.STDERR

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class VerifyReport:
    lines: tuple[OutputLine, ...]
    exit_code: int

    @property
    def stdout(self) -> str:
        return "".join(f"{line.text}\n" for line in self.lines if not line.is_error)

    @property
    def stderr(self) -> str:
        return "".join(f"{line.text}\n" for line in self.lines if line.is_error)


def verify_paths(paths: Sequence[str], canonical: bool) -> VerifyReport:
    """Check every file in ``paths`` (in order) and collect the output and exit code."""
    lines: list[OutputLine] = []
    all_ok = True
    for path in paths:
        file_lines, ok = _verify_one(path, canonical)
        lines.extend(file_lines)
        all_ok = all_ok and ok
    return VerifyReport(tuple(lines), 0 if all_ok else 1)


def _verify_one(path: str, canonical: bool) -> tuple[list[OutputLine], bool]:
    def err(text: str, line: int | None = None) -> OutputLine:
        where = path if line is None else f"{path}:{line}"
        return OutputLine(Stream.STDERR, f"{where}: {text}")

    errors: list[OutputLine] = []
    try:
        validate_unit_name(base_name(path))
    except UnitNameError as exc:
        errors.append(err(str(exc)))
    try:
        unit = read_unit_file(path)  # accept or reject: the policy submit applies
    except LocalUnitFileError as exc:
        parsed = _parsed(exc.data)
        errors.extend(err(problem.msg, problem.line) for problem in _every_problem(exc, parsed))
        return errors + _unknown_key_warnings(parsed, err), False
    out = errors + _unknown_key_warnings(unit, err)
    if errors:
        return out, False
    out.append(OutputLine(Stream.STDOUT, f"{path}: ok {unit.short_hash}"))
    if canonical and unit.canonical:
        out.extend(OutputLine(Stream.STDOUT, line) for line in unit.canonical.removesuffix("\n").split("\n"))
    return out, True


def _parsed(data: bytes | None) -> UnitFile | None:
    """The options of a rejected file when it parses (to report all its problems), else None."""
    if data is None:
        return None
    try:
        return UnitFile.from_text(decode_unit_text(data))
    except (FleetError, ValueError, RecursionError, MemoryError):  # as checked_unit_file: never a crash
        return None


def _every_problem(exc: LocalUnitFileError, parsed: UnitFile | None) -> tuple[UnitFileError, ...]:
    """The policy's reason for rejecting the file; when that is an [X-Fleet] problem, every such problem."""
    reason = UnitFileError(exc.msg, exc.line)
    if parsed is not None:
        problems = requirement_problems(parsed)
        if problems and (problems[0].msg, problems[0].line) == (reason.msg, reason.line):
            return problems
    return (reason,)


def _unknown_key_warnings(unit: UnitFile | None, err: Callable[[str, int], OutputLine]) -> list[OutputLine]:
    if unit is None:
        return []
    first_line: dict[str, int] = {}
    for option in unit.options:
        if option.section == FLEET_SECTION:
            first_line.setdefault(option.name, option.line)
    return [err(f'warning: unrecognized requirement in [X-Fleet] section: "{key}"', first_line[key])
            for key in unknown_keys(unit)]
