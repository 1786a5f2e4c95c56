"""known_hosts parsing and matching: wildcards, negation, ports, hashed hosts, markers, verdicts, append."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from fleetctl.ssh import known_hosts as kh
from fleetctl.ssh.known_hosts import HostKeyCheck


def _blob(key_type: str, body: bytes) -> bytes:
    """A syntactically valid SSH public-key blob: the type as a length-prefixed string, then some bytes."""
    name = key_type.encode()
    return len(name).to_bytes(4, "big") + name + len(body).to_bytes(4, "big") + body


ED_A = _blob("ssh-ed25519", b"A" * 32)
ED_B = _blob("ssh-ed25519", b"B" * 32)
RSA_A = _blob("ssh-rsa", b"R" * 64)


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode()


def _hashed(host: str, salt: bytes = b"0123456789abcdefghij") -> str:
    digest = hmac.new(salt, host.encode(), hashlib.sha1).digest()
    return f"|1|{base64.b64encode(salt).decode()}|{base64.b64encode(digest).decode()}"


def _file(*lines: str) -> kh.KnownHosts:
    return kh.parse_known_hosts("\n".join(lines) + "\n", "kh")


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.0.0.1", 22, "10.0.0.1"),
        ("10.0.0.1", 0, "10.0.0.1"),
        ("10.0.0.1", 2222, "[10.0.0.1]:2222"),
        ("::1", 22, "[::1]"),
        ("::1", 2200, "[::1]:2200"),
        ("[::1]", 2200, "[::1]:2200"),
    ],
    ids=[
        "default port bare",
        "port 0 bare",
        "other port bracketed",
        "ipv6 bracketed",
        "ipv6 with port",
        "already bracketed",
    ],
)
def test_host_string(host: str, port: int, expected: str) -> None:
    assert kh.host_string(host, port) == expected


@pytest.mark.parametrize(
    ("patterns", "host", "expected"),
    [
        (("example.com",), "example.com", True),
        (("example.com",), "EXAMPLE.com", True),
        (("example.com",), "www.example.com", False),
        (("*.example.com",), "www.example.com", True),
        (("*.example.com",), "example.com", False),
        (("10.0.0.?",), "10.0.0.7", True),
        (("10.0.0.?",), "10.0.0.17", False),
        (("*",), "anything", True),
        (("a*b*c",), "aXXbYYc", True),
        (("a*b*c",), "aXXbYY", False),
        (("10.0.0.*", "!10.0.0.5"), "10.0.0.5", False),
        (("10.0.0.*", "!10.0.0.5"), "10.0.0.6", True),
        (("!10.0.0.5",), "10.0.0.6", False),
        (("[10.0.0.1]:2222",), "[10.0.0.1]:2222", True),
        (("10.0.0.1",), "[10.0.0.1]:2222", False),
        (("[10.0.0.1]:*",), "[10.0.0.1]:2222", True),
        (("other", "10.0.0.1"), "10.0.0.1", True),
    ],
    ids=[
        "exact",
        "case-insensitive",
        "exact is not a suffix",
        "star subdomain",
        "star needs something before dot",
        "question mark one char",
        "question mark not two",
        "lone star",
        "several stars",
        "several stars, tail missing",
        "negation wins over positive",
        "negation elsewhere",
        "only negations never match",
        "bracketed port",
        "bare name not for other port",
        "port wildcard",
        "comma list second",
    ],
)
def test_match_host(patterns: tuple[str, ...], host: str, expected: bool) -> None:
    assert kh.match_host(patterns, host) is expected


@pytest.mark.parametrize(
    ("lines", "host", "key_type", "key", "expected"),
    [
        ((f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}",), "10.0.0.1", "ssh-ed25519", ED_A, HostKeyCheck.MATCH),
        ((f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}",), "10.0.0.1", "ssh-ed25519", ED_B, HostKeyCheck.MISMATCH),
        ((f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}",), "10.0.0.2", "ssh-ed25519", ED_A, HostKeyCheck.UNKNOWN),
        ((f"10.0.0.1 ssh-rsa {_b64(RSA_A)}",), "10.0.0.1", "ssh-ed25519", ED_A, HostKeyCheck.MISMATCH),
        (
            (f"10.0.0.1 ssh-rsa {_b64(RSA_A)}", f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}"),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        (
            (f"10.0.0.1 ssh-ed25519 {_b64(ED_B)}", f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}"),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        ((f"10.0.0.* ssh-ed25519 {_b64(ED_A)}",), "10.0.0.9", "ssh-ed25519", ED_A, HostKeyCheck.MATCH),
        (
            (f"10.0.0.*,!10.0.0.9 ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.9",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.UNKNOWN,
        ),
        (
            (f"[10.0.0.1]:2222 ssh-ed25519 {_b64(ED_A)}",),
            "[10.0.0.1]:2222",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        (
            (f"[10.0.0.1]:2222 ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.UNKNOWN,
        ),
        (
            (f"{_hashed('10.0.0.1')} ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        (
            (f"{_hashed('10.0.0.1')} ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.1",
            "ssh-ed25519",
            ED_B,
            HostKeyCheck.MISMATCH,
        ),
        (
            (f"{_hashed('10.0.0.1')} ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.2",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.UNKNOWN,
        ),
        (
            (f"{_hashed('[10.0.0.1]:2222')} ssh-ed25519 {_b64(ED_A)}",),
            "[10.0.0.1]:2222",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        (
            (f"@cert-authority 10.0.0.1 ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.UNKNOWN,
        ),
        (
            (f"@revoked 10.0.0.1 ssh-ed25519 {_b64(ED_B)}", f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}"),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        (
            (f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}", f"@revoked 10.0.0.1 ssh-ed25519 {_b64(ED_A)}"),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.REVOKED,
        ),
        (
            (f"@revoked * ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.9",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.REVOKED,
        ),
        (
            (f"@revoked {_hashed('10.0.0.1')} ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.REVOKED,
        ),
        (
            (f"@revoked 10.0.0.1 ssh-ed25519 {_b64(ED_A)}",),
            "10.0.0.2",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.UNKNOWN,
        ),
        (
            (f"@revoked 10.0.0.1 ssh-ed25519 {_b64(ED_B)}",),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.UNKNOWN,
        ),
        (
            (f"10.0.0.1 ssh-ed25519 caf\u00e9{_b64(ED_B)}", f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}"),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        (
            ("# 10.0.0.1 ssh-ed25519 AAAA", "", f"10.0.0.1 ssh-ed25519 {_b64(ED_A)} a comment"),
            "10.0.0.1",
            "ssh-ed25519",
            ED_A,
            HostKeyCheck.MATCH,
        ),
        ((), "10.0.0.1", "ssh-ed25519", ED_A, HostKeyCheck.UNKNOWN),
    ],
    ids=[
        "same key matches",
        "other key is a mismatch",
        "other host unknown",
        "other type on file is a mismatch",
        "second line of the host matches",
        "any of several keys of one type",
        "wildcard line",
        "negated host unknown",
        "port entry matches",
        "port entry is not the default port",
        "hashed host matches",
        "hashed host mismatch",
        "hashed other host unknown",
        "hashed host with port",
        "cert-authority line skipped",
        "revoked other key, plain line used",
        "revoked key refused although a plain line accepts it",
        "revoked for every host",
        "revoked hashed host",
        "revoked for another host only",
        "revoked other key, host otherwise unknown",
        "non-ASCII key skipped, next line used",
        "comments, blanks, trailing comment",
        "empty file",
    ],
)
def test_check_host_key(
    lines: tuple[str, ...], host: str, key_type: str, key: bytes, expected: HostKeyCheck
) -> None:
    assert kh.check_host_key(_file(*lines), host, key_type, key) is expected


@pytest.mark.parametrize(
    ("line", "warning"),
    [
        (
            f"@cert-authority *.example.com ssh-ed25519 {_b64(ED_A)}",
            "kh:1: skipping line with unsupported marker @cert-authority",
        ),
        ("@revoked 10.0.0.1 ssh-ed25519", "kh:1: skipping malformed line (expected: hosts key-type key)"),
        ("@bogus\x1b[2J h ssh-ed25519 AAAA", "kh:1: skipping line with unsupported marker '@bogus\\x1b[2J'"),
        ("10.0.0.1 ssh-ed25519 AAAA\u00e9AAA", "kh:1: skipping line with an invalid base64 key"),
        ("10.0.0.1 ssh-ed25519 AAAA\ufffdAAA", "kh:1: skipping line with an invalid base64 key"),
        (f"|1|\u00e9|def ssh-ed25519 {_b64(ED_A)}", "kh:1: skipping line with an unsupported hashed host"),
        ("10.0.0.1 ssh-ed25519", "kh:1: skipping malformed line (expected: hosts key-type key)"),
        ("10.0.0.1 ssh-ed25519 not*base64", "kh:1: skipping line with an invalid base64 key"),
        (f"10.0.0.1 ssh-rsa {_b64(ED_A)}", "kh:1: skipping line whose key does not match its type ssh-rsa"),
        (f"|2|abc|def ssh-ed25519 {_b64(ED_A)}", "kh:1: skipping line with an unsupported hashed host"),
        (f"|1|!!|def ssh-ed25519 {_b64(ED_A)}", "kh:1: skipping line with an unsupported hashed host"),
        (f", ssh-ed25519 {_b64(ED_A)}", "kh:1: skipping line without host patterns"),
    ],
    ids=[
        "cert-authority marker",
        "revoked without a key",
        "unknown marker with an escape",
        "non-ASCII key",
        "undecodable byte in key",
        "non-ASCII hash salt",
        "too few fields",
        "bad base64",
        "type differs from blob",
        "unknown hash kind",
        "bad hash salt",
        "empty pattern list",
    ],
)
def test_skipped_lines_warn(line: str, warning: str) -> None:
    parsed = kh.parse_known_hosts(line + "\n", "kh")
    assert parsed.entries == ()
    assert parsed.warnings == (warning,)


def test_known_key_types_in_file_order_without_repeats() -> None:
    parsed = _file(
        f"10.0.0.1 ssh-rsa {_b64(RSA_A)}",
        f"10.0.0.* ssh-ed25519 {_b64(ED_A)}",
        f"10.0.0.1 ssh-ed25519 {_b64(ED_B)}",
        f"10.0.0.2 ssh-rsa {_b64(RSA_A)}",
    )
    assert kh.known_key_types(parsed, "10.0.0.1") == ("ssh-rsa", "ssh-ed25519")
    assert kh.known_key_types(parsed, "10.0.0.3") == ("ssh-ed25519",)
    assert kh.known_key_types(parsed, "192.168.0.1") == ()


@pytest.mark.parametrize(
    ("existing", "expected_prefix"),
    [("", ""), ("a ssh-ed25519 AAAA\n", ""), ("a ssh-ed25519 AAAA", "\n")],
    ids=["empty file", "file ending in newline", "file without final newline"],
)
def test_appended_text_is_one_parseable_line(existing: str, expected_prefix: str) -> None:
    text = kh.appended_text(existing, "[10.0.0.1]:2222", "ssh-ed25519", ED_A)
    assert text == f"{expected_prefix}[10.0.0.1]:2222 ssh-ed25519 {_b64(ED_A)}\n"
    reparsed = kh.parse_known_hosts(existing + text)
    assert kh.check_host_key(reparsed, "[10.0.0.1]:2222", "ssh-ed25519", ED_A) is HostKeyCheck.MATCH


def test_fingerprints_and_messages() -> None:
    md5 = hashlib.md5(ED_A).hexdigest()
    assert kh.md5_fingerprint(ED_A) == ":".join(md5[i : i + 2] for i in range(0, 32, 2))
    assert kh.sha256_fingerprint(ED_A).startswith("SHA256:")
    assert not kh.sha256_fingerprint(ED_A).endswith("=")
    question = kh.unknown_host_question("10.0.0.1", "ssh-rsa", RSA_A)
    assert question.splitlines() == [
        "The authenticity of host '10.0.0.1' can't be established.",
        f"RSA key fingerprint is {kh.md5_fingerprint(RSA_A)}.",
        "Are you sure you want to continue connecting (yes/no)? ",
    ]
    assert kh.permanently_added_message("10.0.0.1", "ecdsa-sha2-nistp256") == (
        "Warning: Permanently added '10.0.0.1' (ECDSA) to the list of known hosts."
    )
    assert kh.algorithm_name("ssh-ed25519") == "ssh-ed25519"
    warning = kh.changed_host_warning("10.0.0.1", "ssh-ed25519", ED_B, "/tmp/kh")
    assert "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @" in warning.splitlines()
    assert kh.md5_fingerprint(ED_B) in warning
    assert "Add correct host key in /tmp/kh to get rid of this message." in warning


def test_revoked_keys_are_not_offered_as_known_types() -> None:
    known = _file(f"@revoked 10.0.0.1 ssh-rsa {_b64(RSA_A)}", f"10.0.0.1 ssh-ed25519 {_b64(ED_A)}")
    assert kh.known_key_types(known, "10.0.0.1") == ("ssh-ed25519",)


def test_revoked_warning_names_host_file_and_fingerprint() -> None:
    text = kh.revoked_host_warning("10.0.0.1", "ssh-ed25519", ED_A, "/kh")
    assert "WARNING: REVOKED HOST KEY DETECTED!" in text
    assert "The ssh-ed25519 host key for 10.0.0.1 is marked as revoked in /kh." in text
    assert kh.sha256_fingerprint(ED_A) in text
