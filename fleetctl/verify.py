"""Offline unit-file checks for ``fleetctl verify [--canonical] FILE...`` (DESIGN.md §7 item 9).

For each file: the unit name (the file's base name) is validated, the text is lexed, and the [X-Fleet]
option combinations are checked. A valid file prints ``FILE: ok <short hash>`` (and, with
``--canonical``, its canonical text); each problem prints ``FILE:LINE: <error>`` (``FILE: <error>`` when
no line applies) on stderr. Unknown [X-Fleet] keys only warn. Files that cannot be read as UTF-8 text
get a one-line ``FILE: <what is wrong>``. The exit code is 0 only when every file is valid.
"""

from __future__ import annotations

import enum
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fleetd.errors import UnitFileError, UnitNameError
from fleetd.unitfile import UnitFile, requirement_problems, unknown_keys, validate_unit_name
from fleetd.unitfile.names import base_name
from fleetd.unitfile.unit import FLEET_SECTION

__all__ = ["MAX_FILE_SIZE", "OutputLine", "Stream", "VerifyReport", "verify_paths"]

MAX_FILE_SIZE = 1024 * 1024  # far above any real unit file, and above what the registry stores per value


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

    text, problem = _read_text(path)
    if text is None:
        return [err(problem)], False
    out: list[OutputLine] = []
    try:
        validate_unit_name(base_name(path))
    except UnitNameError as exc:
        out.append(err(str(exc)))
    try:
        unit = UnitFile.from_text(text)
    except UnitFileError as exc:
        out.append(err(exc.msg, exc.line))
        return out, False
    out.extend(err(p.msg, p.line) for p in requirement_problems(unit))
    ok = not out
    first_line: dict[str, int] = {}
    for option in unit.options:
        if option.section == FLEET_SECTION:
            first_line.setdefault(option.name, option.line)
    for key in unknown_keys(unit):
        out.append(err(f'warning: unrecognized requirement in [X-Fleet] section: "{key}"', first_line[key]))
    if not ok:
        return out, False
    out.append(OutputLine(Stream.STDOUT, f"{path}: ok {unit.short_hash}"))
    if canonical and unit.canonical:
        out.extend(OutputLine(Stream.STDOUT, line) for line in unit.canonical.removesuffix("\n").split("\n"))
    return out, True


def _read_text(path: str) -> tuple[str | None, str]:
    """The file's text, or (None, a short description of why it cannot be used)."""
    try:
        info = Path(path).stat()
        if stat.S_ISDIR(info.st_mode):
            return None, "is a directory"
        if not stat.S_ISREG(info.st_mode):
            return None, "not a regular file"
        if info.st_size > MAX_FILE_SIZE:
            return None, f"too large for a unit file ({info.st_size} bytes, limit {MAX_FILE_SIZE})"
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_FILE_SIZE + 1)
    except FileNotFoundError:
        return None, "no such file"
    except IsADirectoryError:
        return None, "is a directory"
    except PermissionError:
        return None, "permission denied"
    except OSError as exc:
        return None, f"cannot read: {exc.strerror or exc}"
    if b"\x00" in data:
        return None, "binary file (contains NUL bytes), not a unit file"
    try:
        return data.decode("utf-8"), ""
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return None, f"not UTF-8 text (invalid byte 0x{data[exc.start]:02x} on line {line})"
