"""The units directory on a real filesystem: atomic writes that never follow a symlink, no partial file left
after a failure, and a start that survives whatever it finds in the directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleetd.errors import SystemdError
from fleetd.model import UnitName
from fleetd.systemd.unitdir import UnitsDirectory, text_hash

WEB = UnitName("web.service")
TEXT = "[Service]\nExecStart=/bin/true\n"


def test_write_replaces_a_symlink_at_the_target_and_leaves_what_it_pointed_to(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    units = UnitsDirectory(tmp_path / "units")
    (units.path / WEB).symlink_to(victim)
    path = units.write(WEB, TEXT)
    assert not path.is_symlink() and path.read_text() == TEXT
    assert victim.read_text() == "precious"
    assert oct(path.stat().st_mode & 0o777) == "0o644"


def test_write_never_writes_through_a_symlink_at_the_partial_path(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    units = UnitsDirectory(tmp_path / "units")
    (units.path / f".{WEB}.partial").symlink_to(victim)
    units.write(WEB, TEXT)
    assert victim.read_text() == "precious"
    assert sorted(p.name for p in units.path.iterdir()) == [WEB]


def test_text_that_is_not_utf8_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    units = UnitsDirectory(tmp_path)
    with pytest.raises(SystemdError, match="not valid UTF-8"):
        units.write(WEB, "[Service]\nExecStart=/bin/\udcff\n")
    assert list(tmp_path.iterdir()) == []
    assert WEB not in units


def test_a_failed_replace_removes_the_partial_and_is_a_systemd_error(tmp_path: Path) -> None:
    units = UnitsDirectory(tmp_path)
    (tmp_path / WEB).mkdir()  # rename onto a directory fails
    (tmp_path / WEB / "x").write_text("x")
    with pytest.raises(SystemdError, match="cannot write"):
        units.write(WEB, TEXT)
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEB]
    with pytest.raises(SystemdError, match="cannot remove"):
        units.remove(WEB)


def test_start_survives_odd_names_content_and_entries(tmp_path: Path) -> None:
    (tmp_path / "good.service").write_text(TEXT)
    (tmp_path / "latin.service").write_bytes(b"[Service]\nExecStart=/bin/caf\xe9\n")
    os.mkdir(tmp_path / "dir.service")
    (tmp_path / "link.service").symlink_to(tmp_path / "good.service")
    (tmp_path / "fifo.service").touch()
    os.unlink(tmp_path / "fifo.service")
    os.mkfifo(tmp_path / "fifo.service")
    (tmp_path / os.fsdecode(b"caf\xe9.service")).write_text(TEXT)
    units = UnitsDirectory(tmp_path)
    hashes = units.hashes()
    assert sorted(hashes) == ["good.service", "latin.service"]
    assert hashes[UnitName("good.service")] == text_hash(TEXT)
    assert len(hashes[UnitName("latin.service")]) == 40
