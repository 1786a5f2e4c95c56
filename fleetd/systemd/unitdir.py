"""fleet's units directory: the canonical text of every unit fleet loaded into systemd, one file per unit.

Names are validated before they become paths. The directory is the agent's memory across restarts: at
start, every regular file with a valid unit name is fleet's, with the SHA-1 of its canonical form
(fleet writes canonical text only); a file that is not UTF-8 gets the SHA-1 of its bytes (so it matches no
unit and is replaced), and symlinks, other names and unreadable entries are left alone.

Writes go to ``.<name>.partial`` created afresh (never through a symlink), then replace the unit file
atomically (a rename replaces a symlink at the target instead of following it); on any failure the partial
is removed and the failure is a SystemdError.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from fleetd.errors import FleetError, SystemdError, UnitNameError
from fleetd.model import UnitName
from fleetd.unitfile.names import validate_unit_name
from fleetd.unitfile.unit import UnitFile

__all__ = ["DEFAULT_UNITS_DIRECTORY", "UnitsDirectory", "check_unit_name", "has_install_section", "text_hash"]

logger = logging.getLogger(__name__)

DEFAULT_UNITS_DIRECTORY = Path("/run/fleet/units")

_INSTALL = re.compile(r"^[ \t]*\[Install\][ \t]*$", re.MULTILINE)


def check_unit_name(name: str) -> UnitName:
    """Raise UnitNameError unless ``name`` is a valid unit name; the checked name."""
    validate_unit_name(name)
    return UnitName(name)


def text_hash(text: str) -> str:
    """The unit's hash: SHA-1 of its canonical form (of the raw text, for text that does not parse)."""
    try:
        return UnitFile.from_text(text).hash
    except (FleetError, ValueError, RecursionError):  # any text that does not parse, however hostile
        return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def has_install_section(text: str) -> bool:
    return _INSTALL.search(text) is not None


class UnitsDirectory:
    """The files in ``path`` and their hashes; ``path`` is created 0755 when absent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(mode=0o755, parents=True, exist_ok=True)
        self._hashes: dict[UnitName, str] = {}
        for entry in sorted(path.iterdir()):
            try:
                name = check_unit_name(entry.name)
            except UnitNameError:
                continue
            try:
                data = _read_regular(entry)
            except OSError as exc:
                logger.warning("units directory: ignoring %s: %s", entry, exc)
                continue
            if data is None:
                continue
            try:
                self._hashes[name] = text_hash(data.decode("utf-8"))
            except UnicodeDecodeError:
                self._hashes[name] = hashlib.sha1(data).hexdigest()

    def hashes(self) -> Mapping[UnitName, str]:
        return dict(self._hashes)

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    def file_of(self, name: str) -> Path:
        return self.path / check_unit_name(name)

    def write(self, name: UnitName, text: str) -> Path:
        """Write ``text`` (0644) atomically and record its hash; SystemdError (nothing written) when the
        text is not UTF-8 or the file cannot be written."""
        target = self.file_of(name)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:
            raise SystemdError(f"unit {name}: its text is not valid UTF-8; not written") from None
        partial = target.with_name(f".{target.name}.partial")
        try:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()  # a leftover of a crash; unlink removes a symlink, never its target
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                os.fchmod(fd, 0o644)  # whatever the umask
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(partial, target)
        except OSError as exc:
            with contextlib.suppress(OSError):
                partial.unlink()
            raise SystemdError(f"unit {name}: cannot write {target}: {exc}") from exc
        self._hashes[name] = text_hash(text)
        return target

    def remove(self, name: UnitName) -> None:
        """Delete the unit's file (absent is fine); SystemdError when it cannot be deleted."""
        path = self.file_of(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise SystemdError(f"unit {name}: cannot remove {path}: {exc}") from exc
        self._hashes.pop(name, None)


def _read_regular(path: Path) -> bytes | None:
    """The bytes of ``path`` when it is a regular file (opened without following a symlink), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # a symlink: not a file fleet wrote
            return None
        raise
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read()
