"""HostKeyGate: the file read once, one warning per unusable line, @revoked enforced, and `yes` required."""

from __future__ import annotations

import base64
import logging
from pathlib import Path

import pytest

from fleetctl.ssh import known_hosts as kh
from fleetctl.ssh.host_keys import HostKeyGate, ask_on_terminal
from fleetd.errors import TunnelError


def _blob(key_type: str, body: bytes) -> bytes:
    name = key_type.encode()
    return len(name).to_bytes(4, "big") + name + len(body).to_bytes(4, "big") + body


KEY = _blob("ssh-ed25519", b"K" * 32)
OTHER = _blob("ssh-ed25519", b"O" * 32)
LINE = f"10.0.0.1 ssh-ed25519 {base64.b64encode(KEY).decode()}\n"


class Terminal:
    def __init__(self, answer: str | None = None) -> None:
        self.answer = answer
        self.questions: list[str] = []
        self.warnings: list[str] = []

    def ask(self, question: str) -> str | None:
        self.questions.append(question)
        return self.answer

    def warn(self, text: str) -> None:
        self.warnings.append(text)


def _gate(path: Path, terminal: Terminal) -> HostKeyGate:
    return HostKeyGate("10.0.0.1", str(path), True, terminal.ask, terminal.warn)


def test_an_undecodable_line_is_skipped_with_one_warning_and_the_rest_still_works(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "known_hosts"
    path.write_bytes(
        b"10.0.0.1 ssh-ed25519 AAAA\xff\xfeAAAA\n10.0.0.2 ssh-ed25519 caf\xc3\xa9\n" + LINE.encode()
    )
    terminal = Terminal()
    with caplog.at_level(logging.WARNING, logger="fleetctl.ssh.host_keys"):
        gate = _gate(path, terminal)
    gate.check("ssh-ed25519", KEY)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}:1: skipping line with an invalid base64 key",
        f"{path}:2: skipping line with an invalid base64 key",
    ]
    assert terminal.questions == []


def test_a_revoked_key_is_refused_even_when_another_line_accepts_it(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(LINE + f"@revoked * ssh-ed25519 {base64.b64encode(KEY).decode()}\n")
    terminal = Terminal("yes")
    with pytest.raises(
        TunnelError, match=r"^host key verification failed: the key of 10\.0\.0\.1 is marked @revoked"
    ):
        _gate(path, terminal).check("ssh-ed25519", KEY)
    assert "REVOKED HOST KEY DETECTED" in terminal.warnings[0]
    assert terminal.questions == []


def test_a_revoked_key_of_an_unknown_host_is_refused_without_asking(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text(f"@revoked 10.0.0.1 ssh-ed25519 {base64.b64encode(KEY).decode()}\n")
    terminal = Terminal("yes")
    with pytest.raises(TunnelError, match="marked @revoked"):
        _gate(path, terminal).check("ssh-ed25519", KEY)
    assert terminal.questions == []
    assert path.read_text().count("\n") == 1  # nothing appended


@pytest.mark.parametrize("answer", ["yes", "YES", " yes\n"])
def test_yes_adds_the_host(tmp_path: Path, answer: str) -> None:
    path = tmp_path / "known_hosts"
    terminal = Terminal(answer)
    _gate(path, terminal).check("ssh-ed25519", KEY)
    assert path.read_text() == LINE
    assert terminal.warnings == [kh.permanently_added_message("10.0.0.1", "ssh-ed25519")]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ("no", r"unauthorized host 10\.0\.0\.1$"),
        ("y", r"unauthorized host 10\.0\.0\.1 \(answer 'y': type yes to trust the host\)$"),
        ("", r"\(answer '': type yes to trust the host\)$"),
        ("yes please", r"\(answer 'yes please': type yes"),
    ],
    ids=["no", "y is not yes", "empty", "yes and more"],
)
def test_anything_but_yes_refuses_the_host(tmp_path: Path, answer: str, message: str) -> None:
    path = tmp_path / "known_hosts"
    terminal = Terminal(answer)
    with pytest.raises(TunnelError, match=message):
        _gate(path, terminal).check("ssh-ed25519", OTHER)
    assert terminal.warnings == ["Host key verification failed."]
    assert not path.exists()


class _UndecodableTerminal:
    def isatty(self) -> bool:
        return True

    def readline(self) -> str:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def test_an_undecodable_answer_on_the_terminal_is_not_yes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("sys.stdin", _UndecodableTerminal())
    gate = HostKeyGate("10.0.0.1", str(tmp_path / "known_hosts"), True, ask_on_terminal, lambda _text: None)
    with pytest.raises(TunnelError, match="type yes to trust the host"):
        gate.check("ssh-ed25519", KEY)
    assert "Are you sure you want to continue connecting (yes/no)? " in capsys.readouterr().err
