"""Local unit files -> usable unit files: the one reader for ``submit``, ``load``, ``start`` and ``verify``.

A path is read as bytes (regular files only, never more than the body limit) and judged by
``fleetd.unitfile.checked_unit_bytes``, the policy the engine and the agents apply to what is stored: so a
file ``verify`` accepts is exactly a file ``submit`` accepts. Every failure is a ``LocalUnitFileError``
whose message is one line, ``PATH: what is wrong`` or ``PATH:LINE: what is wrong`` (with what to do, where
the policy says it).
"""

from __future__ import annotations

import stat
from pathlib import Path

from fleetd.errors import FleetError, UnitFileError
from fleetd.unitfile.body import MAX_BODY_BYTES, check_body_size, checked_unit_bytes
from fleetd.unitfile.unit import UnitFile

__all__ = ["LocalUnitFileError", "read_unit_file"]


class LocalUnitFileError(FleetError):
    """A local unit file that cannot be used. ``data`` holds its bytes when it could be read (so that
    ``verify`` can list every problem, not only the first)."""

    def __init__(self, path: str, msg: str, line: int | None = None, data: bytes | None = None) -> None:
        self.path = path
        self.msg = msg
        self.line = line
        self.data = data
        super().__init__(f"{path}: {msg}" if line is None else f"{path}:{line}: {msg}")


def read_unit_file(path: str) -> UnitFile:
    """The usable unit file at ``path``; LocalUnitFileError otherwise."""
    data = _read_bytes(path)
    try:
        return checked_unit_bytes(data)
    except UnitFileError as exc:
        raise LocalUnitFileError(path, exc.msg, exc.line, data) from None


def _read_bytes(path: str) -> bytes:
    try:
        info = Path(path).stat()
        if stat.S_ISDIR(info.st_mode):
            raise LocalUnitFileError(path, "is a directory")
        if not stat.S_ISREG(info.st_mode):
            raise LocalUnitFileError(path, "not a regular file")
        check_body_size(info.st_size)
        with Path(path).open("rb") as handle:
            return handle.read(MAX_BODY_BYTES + 1)  # a file that grew since stat() is judged by the policy
    except UnitFileError as exc:
        raise LocalUnitFileError(path, exc.msg) from None
    except FileNotFoundError:
        raise LocalUnitFileError(path, "no such file") from None
    except IsADirectoryError:
        raise LocalUnitFileError(path, "is a directory") from None
    except PermissionError:
        raise LocalUnitFileError(path, "permission denied") from None
    except OSError as exc:
        raise LocalUnitFileError(path, f"cannot read: {exc.strerror or exc}") from None
