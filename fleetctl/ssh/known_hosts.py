"""known_hosts: parse OpenSSH-style known_hosts text and check a presented host key (pure: no I/O).

Format: one ``patterns key-type base64-key [comment]`` per line; ``#`` comments and blank lines are skipped.
``patterns`` is a comma list of host patterns with ``*`` and ``?`` wildcards and ``!`` negation, or one hashed
host ``|1|base64-salt|base64-HMAC-SHA1``. A host on a port other than 22 is written ``[host]:port``.
``@revoked patterns key-type key`` lines are enforced as OpenSSH does: a host presenting a revoked key is
refused even when another line would accept it. ``@cert-authority`` lines are not supported: they are skipped
with a warning, as is every line that cannot be parsed (bad base64, non-ASCII bytes, ...): one bad line never
makes the whole file unusable. The tunnel does the file I/O; this module only turns text into decisions and
messages.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from dataclasses import dataclass

__all__ = [
    "HostKeyCheck",
    "KnownHostEntry",
    "KnownHosts",
    "algorithm_name",
    "appended_text",
    "changed_host_warning",
    "check_host_key",
    "format_entry",
    "host_string",
    "known_key_types",
    "match_host",
    "md5_fingerprint",
    "parse_known_hosts",
    "permanently_added_message",
    "revoked_host_warning",
    "sha256_fingerprint",
    "unknown_host_question",
]

_HASH_MAGIC = "|1|"
_DEFAULT_SSH_PORT = 22


class HostKeyCheck(enum.Enum):
    """The verdict on a presented host key."""

    MATCH = "match"  # some line for this host carries exactly this key
    MISMATCH = "mismatch"  # lines exist for this host, none with this key: the key changed
    UNKNOWN = "unknown"  # no line names this host
    REVOKED = "revoked"  # an @revoked line for this host carries exactly this key: refuse whatever else says


@dataclass(frozen=True, slots=True)
class KnownHostEntry:
    """One usable known_hosts line: host patterns (or one hashed host), key type and raw key blob."""

    patterns: tuple[str, ...]  # empty for a hashed entry
    hashed: tuple[bytes, bytes] | None  # (salt, HMAC-SHA1 digest) of a hashed host
    key_type: str
    key: bytes
    line: int
    revoked: bool = False  # an ``@revoked`` line: this key must never be accepted for these hosts

    def names(self, host: str) -> bool:
        """True when this entry is about ``host`` (a string made by ``host_string``)."""
        if self.hashed is not None:
            salt, digest = self.hashed
            mine = hmac.new(salt, host.encode(), hashlib.sha1).digest()
            return hmac.compare_digest(mine, digest)
        return match_host(self.patterns, host)


@dataclass(frozen=True, slots=True)
class KnownHosts:
    """A parsed known_hosts file: its usable entries and one warning per skipped line."""

    entries: tuple[KnownHostEntry, ...]
    warnings: tuple[str, ...]


def host_string(host: str, port: int) -> str:
    """The name a host is filed under: ``host`` on port 22 (or 0), else ``[host]:port``; IPv6 bracketed."""
    bare = host.removeprefix("[").removesuffix("]")
    if port in (0, _DEFAULT_SSH_PORT):
        return f"[{bare}]" if ":" in bare else bare
    return f"[{bare}]:{port}"


def _wildcard(pattern: str, text: str) -> bool:
    """OpenSSH wildcard match: ``*`` any run of characters (possibly empty), ``?`` exactly one."""
    p = t = 0
    star_p, star_t = -1, 0
    while t < len(text):
        if p < len(pattern) and pattern[p] in ("?", text[t]):
            p += 1
            t += 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_t = p, t
            p += 1
        elif star_p >= 0:
            p = star_p + 1
            star_t += 1
            t = star_t
        else:
            return False
    while p < len(pattern) and pattern[p] == "*":
        p += 1
    return p == len(pattern)


def match_host(patterns: tuple[str, ...], host: str) -> bool:
    """True when a positive pattern matches ``host`` and no negated (``!``) one does; case-insensitive."""
    host = host.lower()
    positive = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern[1:] if negated else pattern
        if _wildcard(body.lower(), host):
            if negated:
                return False
            positive = True
    return positive


def _parse_hashed(field: str) -> tuple[bytes, bytes] | None:
    parts = field[len(_HASH_MAGIC) :].split("|")
    if len(parts) != 2:
        return None
    try:
        salt = base64.b64decode(parts[0], validate=True)
        digest = base64.b64decode(parts[1], validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        return None
    if len(digest) != hashlib.sha1().digest_size:
        return None
    return salt, digest


def _parse_line(text: str, number: int, source: str) -> KnownHostEntry | str | None:
    """One line -> an entry, a warning (str) for a skipped line, or None for a blank/comment line."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return None
    fields = stripped.split()
    where = f"{source}:{number}"
    revoked = fields[0] == "@revoked"
    if revoked:
        fields = fields[1:]
    elif fields[0].startswith("@"):
        return f"{where}: skipping line with unsupported marker {_visible(fields[0])}"
    if len(fields) < 3:
        return f"{where}: skipping malformed line (expected: hosts key-type key)"
    hosts, key_type, key_text = fields[0], fields[1], fields[2]
    try:
        key = base64.b64decode(key_text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text (undecodable bytes read as U+FFFD)
        return f"{where}: skipping line with an invalid base64 key"
    if _blob_type(key) != key_type:
        return f"{where}: skipping line whose key does not match its type {_visible(key_type)}"
    if hosts.startswith("|"):
        hashed = _parse_hashed(hosts) if hosts.startswith(_HASH_MAGIC) else None
        if hashed is None:
            return f"{where}: skipping line with an unsupported hashed host"
        return KnownHostEntry((), hashed, key_type, key, number, revoked)
    patterns = tuple(p for p in hosts.split(",") if p)
    if not patterns:
        return f"{where}: skipping line without host patterns"
    return KnownHostEntry(patterns, None, key_type, key, number, revoked)


def _visible(text: str) -> str:
    """``text`` for a warning: quoted with escapes when it holds anything but printable ASCII."""
    return text if text.isascii() and text.isprintable() else ascii(text)


def _blob_type(blob: bytes) -> str | None:
    """The key type named inside an SSH public-key blob (its first length-prefixed string)."""
    if len(blob) < 4:
        return None
    size = int.from_bytes(blob[:4], "big")
    if size > len(blob) - 4:
        return None
    try:
        return blob[4 : 4 + size].decode("ascii")
    except UnicodeDecodeError:
        return None


def parse_known_hosts(text: str, source: str = "known_hosts") -> KnownHosts:
    """Parse known_hosts text; ``source`` names the file in warnings."""
    entries: list[KnownHostEntry] = []
    warnings: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        parsed = _parse_line(line, number, source)
        if isinstance(parsed, KnownHostEntry):
            entries.append(parsed)
        elif parsed is not None:
            warnings.append(parsed)
    return KnownHosts(tuple(entries), tuple(warnings))


def check_host_key(known: KnownHosts, host: str, key_type: str, key: bytes) -> HostKeyCheck:
    """REVOKED if an ``@revoked`` line for ``host`` carries ``key``; else accept ``key`` if any line for
    ``host`` carries it; MISMATCH if lines exist but none does."""
    named = [entry for entry in known.entries if entry.names(host)]
    if any(entry.revoked and entry.key_type == key_type and entry.key == key for entry in named):
        return HostKeyCheck.REVOKED
    named = [entry for entry in named if not entry.revoked]
    if not named:
        return HostKeyCheck.UNKNOWN
    if any(entry.key_type == key_type and entry.key == key for entry in named):
        return HostKeyCheck.MATCH
    return HostKeyCheck.MISMATCH


def known_key_types(known: KnownHosts, host: str) -> tuple[str, ...]:
    """The key types on file for ``host``, in file order without repeats."""
    seen: dict[str, None] = {}
    for entry in known.entries:
        if not entry.revoked and entry.names(host):
            seen.setdefault(entry.key_type, None)
    return tuple(seen)


def format_entry(host: str, key_type: str, key: bytes) -> str:
    """A known_hosts line (with its newline) for ``host``."""
    return f"{host} {key_type} {base64.b64encode(key).decode('ascii')}\n"


def appended_text(existing: str, host: str, key_type: str, key: bytes) -> str:
    """What to append to a file holding ``existing`` so it gains a line for ``host`` on a line of its own."""
    prefix = "\n" if existing and not existing.endswith("\n") else ""
    return prefix + format_entry(host, key_type, key)


def md5_fingerprint(key: bytes) -> str:
    """The legacy MD5 fingerprint ``aa:bb:...`` the original prints."""
    digest = hashlib.md5(key, usedforsecurity=False).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def sha256_fingerprint(key: bytes) -> str:
    """OpenSSH's modern fingerprint ``SHA256:<unpadded base64>``."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key).digest()).decode("ascii").rstrip("=")


def algorithm_name(key_type: str) -> str:
    """RSA, DSA, ECDSA, or the raw key type (as the original names algorithms in its messages)."""
    if key_type == "ssh-rsa":
        return "RSA"
    if key_type == "ssh-dss":
        return "DSA"
    if key_type.startswith("ecdsa-sha2-"):
        return "ECDSA"
    return key_type


def unknown_host_question(host: str, key_type: str, key: bytes) -> str:
    """The prompt for a host not on file (three lines, the last without a newline)."""
    return (
        f"The authenticity of host '{host}' can't be established.\n"
        f"{algorithm_name(key_type)} key fingerprint is {md5_fingerprint(key)}.\n"
        "Are you sure you want to continue connecting (yes/no)? "
    )


def permanently_added_message(host: str, key_type: str) -> str:
    return f"Warning: Permanently added '{host}' ({algorithm_name(key_type)}) to the list of known hosts."


def revoked_host_warning(host: str, key_type: str, key: bytes, known_hosts_file: str) -> str:
    """The block printed when a host presents a key marked ``@revoked`` (as OpenSSH words it)."""
    return "\n".join(
        (
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
            "@       WARNING: REVOKED HOST KEY DETECTED!               @",
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
            f"The {algorithm_name(key_type)} host key for {host} is marked as revoked in {known_hosts_file}.",
            "This could mean that a stolen key is being used to impersonate this host.",
            f"The fingerprint of the revoked key is {sha256_fingerprint(key)}.",
            "Host key verification failed.",
        )
    )


def changed_host_warning(host: str, key_type: str, key: bytes, known_hosts_file: str) -> str:
    """The loud block printed when a host presents a key other than the one on file."""
    return "\n".join(
        (
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
            "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @",
            "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@",
            "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!",
            "Someone could be eavesdropping on you right now (man-in-the-middle attack)!",
            "It is also possible that a host key has just been changed.",
            f"The fingerprint for the {algorithm_name(key_type)} key sent by the remote host {host} is",
            f"{md5_fingerprint(key)} ({sha256_fingerprint(key)}).",
            "Please contact your system administrator.",
            f"Add correct host key in {known_hosts_file} to get rid of this message.",
            f"Host key for {host} has changed and you have requested strict checking.",
            "Host key verification failed.",
        )
    )
