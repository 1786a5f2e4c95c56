"""fleet's units directory: the canonical text of every unit fleet loaded into systemd, one file per unit.

Names are validated before they become paths. The directory is the agent's memory across restarts: at
start, every file with a valid unit name is fleet's, with the SHA-1 of its canonical form
(fleet writes canonical text only).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from fleetd.errors import UnitFileError, UnitNameError
from fleetd.model import UnitName
from fleetd.unitfile.names import validate_unit_name
from fleetd.unitfile.unit import UnitFile

__all__ = ["DEFAULT_UNITS_DIRECTORY", "UnitsDirectory", "check_unit_name", "has_install_section", "text_hash"]

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
    except UnitFileError:
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
            if entry.is_file():
                self._hashes[name] = text_hash(entry.read_text(encoding="utf-8"))

    def hashes(self) -> Mapping[UnitName, str]:
        return dict(self._hashes)

    def __contains__(self, name: object) -> bool:
        return name in self._hashes

    def file_of(self, name: str) -> Path:
        return self.path / check_unit_name(name)

    def write(self, name: UnitName, text: str) -> Path:
        """Write ``text`` (0644) atomically and record its hash."""
        target = self.file_of(name)
        partial = target.with_name(f".{target.name}.partial")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(partial, 0o644)
        os.replace(partial, target)
        self._hashes[name] = text_hash(text)
        return target

    def remove(self, name: UnitName) -> None:
        self._hashes.pop(name, None)
        self.file_of(name).unlink(missing_ok=True)
