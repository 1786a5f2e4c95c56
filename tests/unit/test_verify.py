"""fleetctl verify: per-file results, problems with line numbers, unreadable inputs, canonical output."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from fleetctl.verify import Stream, verify_paths
from fleetd.unitfile.body import MAX_BODY_BYTES

GOOD = "# web\n[Unit]\nDescription = web\n\n[Service]\nExecStart=/bin/sleep 100\n"
GOOD_CANONICAL = "[Unit]\nDescription=web\n\n[Service]\nExecStart=/bin/sleep 100\n"


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


def test_a_valid_file_prints_ok_and_its_short_hash(tmp_path: Path) -> None:
    path = write(tmp_path, "sleep.service", "[Service]\nExecStart=/bin/sleep 100\n")
    report = verify_paths([path], canonical=False)
    assert report.exit_code == 0
    assert report.stdout == f"{path}: ok 1c6fb6f\n"
    assert report.stderr == ""


def test_canonical_prints_the_canonical_text_after_the_ok_line(tmp_path: Path) -> None:
    path = write(tmp_path, "web.service", GOOD)
    report = verify_paths([path], canonical=True)
    ok_line, _, body = report.stdout.partition("\n")
    assert ok_line.startswith(f"{path}: ok ")
    assert body == GOOD_CANONICAL
    assert report.exit_code == 0


def test_canonical_of_an_empty_unit_prints_only_the_ok_line(tmp_path: Path) -> None:
    path = write(tmp_path, "empty.service", "# nothing\n")
    report = verify_paths([path], canonical=True)
    assert report.stdout == f"{path}: ok da39a3e\n"


BROKEN = [
    pytest.param("x.service", "[Unit]\nDescription=x\n[Service]\nnonsense upon stilts\n",
                 ["{p}:4: unexpected newline encountered while parsing option name"],
                 id="parse error with its line"),
    pytest.param("x.service", "[Unit]\nA=b\n[Service\n", ["{p}:3: unable to find end of section"],
                 id="unterminated section header"),
    pytest.param("x.service", "[Unit]\nDescription=" + "x" * 3000 + "\n",
                 ["{p}:2: line too long (max 2048 bytes)"], id="too long line"),
    pytest.param("noext", "[Service]\nExecStart=/bin/true\n", ['{p}: unit name must contain "."'],
                 id="file name without a type is an invalid unit name"),
    pytest.param("bad@1.mount", "[Mount]\nWhat=x\n", ['{p}: invalid unit type for template: "mount"'],
                 id="template of a type that cannot be templated"),
    pytest.param("x.service", "[Unit]\nA=b\n\n[X-Fleet]\nGlobal=true\nMachineID=abc\n",
                 ["{p}:6: MachineID cannot be used with Global"], id="X-Fleet combination error at its line"),
    pytest.param("x.service", "[X-Fleet]\nConflicts=b*\nMachineOf=baz.service\n",
                 ['{p}:3: unresolvable requirements: peer "baz.service" matches conflict "b*"'],
                 id="peer matching a conflict"),
    pytest.param("x.txt", "[X-Fleet]\nMachineID=a\nReplaces=b*\n",
                 ['{p}: invalid unit type: "txt"', "{p}:3: MachineID cannot be used with Replaces"],
                 id="every problem of a file is listed"),
    pytest.param("x.txt", "[Unit]\nbroken\n",
                 ['{p}: invalid unit type: "txt"',
                  "{p}:2: unexpected newline encountered while parsing option name"],
                 id="name error and parse error together"),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN)
def test_broken_files(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = write(tmp_path, name, text)
    report = verify_paths([path], canonical=True)
    assert report.exit_code == 1
    assert report.stdout == ""
    assert report.stderr.splitlines() == [line.format(p=path) for line in expected]


def test_unknown_keys_warn_but_pass(tmp_path: Path) -> None:
    path = write(tmp_path, "x.service", "[X-Fleet]\nGlobal=true\nMachineof=x.service\n")
    report = verify_paths([path], canonical=False)
    assert report.exit_code == 0
    assert report.stderr == f'{path}:3: warning: unrecognized requirement in [X-Fleet] section: "Machineof"\n'
    assert report.stdout.startswith(f"{path}: ok ")


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.service")
    report = verify_paths([path], canonical=False)
    assert (report.exit_code, report.stderr) == (1, f"{path}: no such file\n")


def test_directory(tmp_path: Path) -> None:
    path = str(tmp_path / "dir.service")
    os.mkdir(path)
    report = verify_paths([path], canonical=False)
    assert (report.exit_code, report.stderr) == (1, f"{path}: is a directory\n")


def test_binary_with_nul_bytes(tmp_path: Path) -> None:
    path = write(tmp_path, "bin.service", b"\x7fELF\x02\x01\x00\x00[Service]\n")
    report = verify_paths([path], canonical=False)
    expected = f"{path}: contains a NUL character (line 1); a unit file is text: remove it\n"
    assert (report.exit_code, report.stderr) == (1, expected)


def test_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "latin1.service", "[Unit]\nDescription=caf\xe9\n".encode("latin-1"))
    report = verify_paths([path], canonical=False)
    expected = f"{path}: not valid UTF-8 text (line 2); save it as UTF-8\n"
    assert (report.exit_code, report.stderr) == (1, expected)


def test_too_large_a_file_is_not_read(tmp_path: Path) -> None:
    path = write(tmp_path, "big.service", "[Unit]\n" + "\n" * MAX_BODY_BYTES)
    report = verify_paths([path], canonical=False)
    size, limit = MAX_BODY_BYTES + 7, MAX_BODY_BYTES
    expected = f"{path}: unit file is {size} bytes; the limit is {limit} bytes (1 MiB): make it smaller\n"
    assert (report.exit_code, report.stderr) == (1, expected)


def test_every_xfleet_problem_is_listed_with_the_unknown_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "x.service", "[X-Fleet]\nMachineID=a\nGlobal=true\nReplaces=b\nBogus=1\n")
    report = verify_paths([path], canonical=False)
    assert report.stderr.splitlines() == [
        f"{path}:3: MachineID cannot be used with Global",
        f"{path}:4: MachineID cannot be used with Replaces",
        f"{path}:4: Global cannot be used with Replaces",
        f"{path}:5: warning: unrecognized requirement in [X-Fleet] section: \"Bogus\"",
    ]


def test_fifo_is_not_read(tmp_path: Path) -> None:
    path = str(tmp_path / "pipe.service")
    os.mkfifo(path)
    report = verify_paths([path], canonical=False)
    assert (report.exit_code, report.stderr) == (1, f"{path}: not a regular file\n")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files regardless of permissions")
def test_unreadable_file(tmp_path: Path) -> None:
    path = write(tmp_path, "secret.service", GOOD)
    os.chmod(path, 0)
    report = verify_paths([path], canonical=False)
    assert (report.exit_code, report.stderr) == (1, f"{path}: permission denied\n")


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        pytest.param(PermissionError(errno.EACCES, "Permission denied"), "permission denied",
                     id="permission denied"),
        pytest.param(OSError(errno.EIO, "Input/output error"), "cannot read: Input/output error",
                     id="I/O error"),
    ],
)
def test_read_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: OSError,
                                  expected: str) -> None:
    path = write(tmp_path, "a.service", GOOD)

    def failing_open(self: Path, *args: object, **kwargs: object) -> object:
        raise error

    monkeypatch.setattr(Path, "open", failing_open)
    report = verify_paths([path], canonical=False)
    assert (report.exit_code, report.stderr) == (1, f"{path}: {expected}\n")


def test_several_files_keep_order_and_fail_if_any_fails(tmp_path: Path) -> None:
    good = write(tmp_path, "a.service", GOOD)
    bad = write(tmp_path, "b.service", "[Unit]\nbroken\n")
    also_good = write(tmp_path, "c.service", "[Service]\nExecStart=/bin/sleep 100\n")
    report = verify_paths([good, bad, also_good], canonical=False)
    assert report.exit_code == 1
    assert [(line.stream, line.text.split(":")[0]) for line in report.lines] == [
        (Stream.STDOUT, good), (Stream.STDERR, bad), (Stream.STDOUT, also_good),
    ]


def test_lines_print_as_their_text(tmp_path: Path) -> None:
    path = write(tmp_path, "a.service", "[Service]\nExecStart=/bin/sleep 100\n")
    (line,) = verify_paths([path], canonical=False).lines
    assert str(line) == f"{path}: ok 1c6fb6f"
    assert not line.is_error
