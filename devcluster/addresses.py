"""Loopback addresses (127.0.0.N) for local machines, claimed through files so clusters never share one.

Linux routes all of 127.0.0.0/8 to the loopback device, so any 127.0.0.N can be bound without configuration.
A claim is a file named after the address that holds the PID of its owner; a claim whose owner is gone is
stale and is taken over.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

__all__ = ["CLAIMS_DIRECTORY", "claim_address", "hand_over", "release_address"]

CLAIMS_DIRECTORY = Path("/run/fleet-devcluster/addresses")
FIRST, LAST = 10, 250


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claim_address(owner: int | None = None, directory: Path = CLAIMS_DIRECTORY) -> str:
    """Claim a free 127.0.0.N for ``owner`` (default: this process) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    pid = os.getpid() if owner is None else owner
    for n in range(FIRST, LAST + 1):
        address = f"127.0.0.{n}"
        claim = directory / address
        for _attempt in range(2):
            try:
                fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if _stale(claim):
                    with contextlib.suppress(FileNotFoundError):
                        claim.unlink()
                    continue
                break
            with os.fdopen(fd, "w") as out:
                out.write(f"{pid}\n")
            return address
    raise RuntimeError(f"no free loopback address in 127.0.0.{FIRST}-{LAST} (claims in {directory})")


def _stale(claim: Path) -> bool:
    try:
        text = claim.read_text().strip()
    except FileNotFoundError:
        return False
    return not text.isdigit() or not _alive(int(text))


def hand_over(address: str, owner: int, directory: Path = CLAIMS_DIRECTORY) -> None:
    """Make ``owner`` (e.g. the machine's nspawn process) the holder of a claim this process made."""
    (directory / address).write_text(f"{owner}\n")


def release_address(address: str, directory: Path = CLAIMS_DIRECTORY) -> None:
    with contextlib.suppress(FileNotFoundError):
        (directory / address).unlink()
