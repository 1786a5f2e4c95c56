"""fleetctl verify under hostile input: 10,000 random files through ``verify_paths`` (the function itself).

Inputs mix random bytes, mutated valid unit files, long lines, many sections and hostile [X-Fleet] values.
Each must give a report (``verify_paths`` never raises), within a second, and the report must agree with the
policy ``submit`` applies (``checked_unit_bytes``): verify accepts a file exactly when submit would. Run with
``-s`` to see the figures (inputs, slowest input, how many were accepted).

Glob patterns that backtrack in a regex matcher (``Conflicts=*a*a*a*a*a*a*b`` against a long ``MachineOf``)
and many peers against many conflicts are in a separate test (the linear-time ``fleetd.glob`` and the glob
limits of ``requirement_problems`` keep them fast).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fleetctl.verify import verify_paths
from fleetd.errors import UnitFileError
from fleetd.unitfile.body import checked_unit_bytes
from fleetd.unitfile.parser import LINE_MAX

INPUTS = 10_000

SEEDS = [
    "[Unit]\nDescription=Hello World\n\n[Service]\nExecStart=/bin/sleep 100\n",
    "# web\n[Unit]\nDescription = web %i\nAfter=docker.service\n\n[Service]\nExecStart=/bin/sh -c \\\n"
    "  'while true; do echo hi; sleep 1; done'\nRestart=always\n\n[X-Fleet]\nConflicts=web@*.service\n"
    "MachineMetadata=role=web\n",
    "[Service]\nExecStart=echo \\\n  \"pi\\\n  ng\"\nExecStopPre=echo\\\n#pang\n\n[X-Fleet]\nGlobal=true\n"
    "MachineMetadata=\"region=us\" \"az=b\"\n",
    "[X-Fleet]\nMachineOf=db.service\nReplaces=old.service\nX-ConditionMachineID=abc\n",
    "\n[Unit]\n;comment\\\nswallowed\n[Install]\nWantedBy=multi-user.target\n",
]
NASTY = [
    "[", "]", "=", "#", ";", "\\", "\\\n", "\\\r\n", "\\ \n", "\r", "\n", "\r\n", "\x00", "\t", " ", "\x85",
    "\u2028", "\ufeff", "\udcff", "é", "\U0001f600", '"', "%n", "%i", "*", "?", "[a-", "\n[X-Fleet]\n",
    "\nGlobal=true\n", "\nMachineID=a\n", "\nConflicts=*\n", "\nMachineOf=%n\n", "\nReplaces=%p*\n",
]


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randint(0, len(out))
        kind = rng.randrange(7)
        if kind == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif kind == 1:
            out[at:at] = rng.choice(NASTY).encode("utf-8", "surrogatepass")
        elif kind == 2:
            del out[at : at + rng.randint(1, 20)]
        elif kind == 3:
            out[at:at] = out[at : at + rng.randint(1, 200)] * rng.randint(1, 20)
        elif kind == 4:
            out = out.replace(b"\n", b"\r\n")
        elif kind == 5:
            del out[at:]
        else:
            out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    return bytes(out)


def _random_bytes(rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 512)))


def _random_text(rng: random.Random) -> bytes:
    parts = [rng.choice(NASTY) if rng.random() < 0.4 else chr(rng.randrange(0x20, 0x3000))
             for _ in range(rng.randint(0, 300))]
    return "".join(parts).encode("utf-8", "surrogatepass")


def _long_lines(rng: random.Random) -> bytes:
    size = rng.choice([LINE_MAX - 3, LINE_MAX - 2, LINE_MAX - 1, LINE_MAX, LINE_MAX + 1, 5000, 100_000])
    prefix = rng.choice(["", "\r", " ", "\\\n", "#", "\r\n"])
    fill = rng.choice(["x", "é", "\\", "\r", "☃"])
    return f"[Service]\n{prefix}ExecStart={fill * (size // len(fill.encode()))}\n".encode()


def _many_sections(rng: random.Random) -> bytes:
    count = rng.choice([100, 1000, 20_000])
    body = "".join(f"[S{i % rng.randint(1, 50)}]\nK{i}=v{i}\\\n  more\n\n" for i in range(count))
    return body.encode()


def _xfleet(rng: random.Random) -> bytes:
    keys = ["MachineID", "MachineOf", "Conflicts", "Replaces", "Global", "MachineMetadata", "X-Conflicts",
            "X-ConditionMachineOf", "Machineof", "Bogus", ""]
    values = ["*", "a*", "?", "[a-z]*", "[", "\\", "%n", "%p@*.service", "true", "no", "a=b", '"x" "y z"',
              '"', "web@*.service", "*a*b", "x" * 200]
    lines = [f"{rng.choice(keys)}={rng.choice(values)}" for _ in range(rng.randint(1, 12))]
    return ("[X-Fleet]\n" + "\n".join(lines) + "\n").encode()


GENERATORS: list[Callable[[random.Random], bytes]] = [
    lambda rng: _mutate(rng.choice(SEEDS).encode(), rng),
    lambda rng: _mutate(rng.choice(SEEDS).encode(), rng),
    lambda rng: _mutate(rng.choice(SEEDS).encode(), rng),
    _random_bytes,
    _random_text,
    _xfleet,
    _xfleet,
]


def _inputs(count: int, seed: int) -> Iterator[bytes]:
    rng = random.Random(seed)
    for i in range(count):
        if i % 200 == 0:
            yield _long_lines(rng)
        elif i % 500 == 1:
            yield _many_sections(rng)
        else:
            yield rng.choice(GENERATORS)(rng)


def _accepted_by_submit(data: bytes) -> bool:
    try:
        checked_unit_bytes(data)
    except UnitFileError:
        return False
    return True


def _run(tmp_path: Path, inputs: Iterator[bytes]) -> tuple[int, int, float]:
    """(inputs, accepted, slowest seconds); fails on an exception or verify and submit disagreeing. The
    slowest input's time is printed, not asserted (a loaded machine is no product failure); the linear-time
    matcher is what bounds it (tests/unit/test_glob.py)."""
    path = tmp_path / "fuzz.service"
    count = accepted = 0
    slowest = 0.0
    for data in inputs:
        path.write_bytes(data)
        started = time.perf_counter()
        report = verify_paths([str(path)], canonical=True)  # raising here fails the test: nothing may escape
        took = time.perf_counter() - started
        slowest = max(slowest, took)
        assert (report.exit_code == 0) == _accepted_by_submit(data), data[:200]
        count += 1
        accepted += report.exit_code == 0
    return count, accepted, slowest


def test_ten_thousand_hostile_inputs(tmp_path: Path) -> None:
    count, accepted, slowest = _run(tmp_path, _inputs(INPUTS, seed=20261130))
    print(f"verify fuzz: {count} inputs, {accepted} accepted, slowest {slowest * 1000:.1f} ms")
    assert count == INPUTS


HOSTILE_GLOBS = [
    "[X-Fleet]\nConflicts=*a*a*a*a*a*a*b\nMachineOf=" + "a" * 40 + "\n",
    "[X-Fleet]\nReplaces=" + "*a" * 30 + "*b\nMachineOf=" + "a" * 200 + "\n",
    "[X-Fleet]\nConflicts=" + " ".join("*a" * 10 + f"*{i}" for i in range(50)) + "\nMachineOf=" + "a" * 100
    + "\n",
    "[X-Fleet]\n" + "".join(f"MachineOf=p{i}\nConflicts=c{i}*\n" for i in range(5000)),
    "[X-Fleet]\nConflicts=" + "[a-z]*" * 100 + "!\nMachineOf=" + "a" * 1000 + "\n",
]


@pytest.mark.parametrize("text", HOSTILE_GLOBS, ids=lambda text: text[10:40])
def test_hostile_globs(tmp_path: Path, text: str) -> None:
    count, _, slowest = _run(tmp_path, iter([text.encode()]))
    assert count == 1
    print(f"hostile glob verified in {slowest * 1000:.1f} ms")
