"""fleetctl as a user feels it: whole cold processes, median of N (default 10) after one warm-up each.

Rows: ``version`` and ``help`` (no cluster), ``list-machines`` direct against a loopback etcd, and
``list-machines --tunnel`` through a loopback sshd: with ``--tunnel-reuse=false`` (a new SSH connection per
command) and with the reusable tunnel session (the default; the warm-up leaves the session). Targets
(issue 17 item 11): version/help <= 80 ms, list-machines direct <= 200 ms, tunnel reuse <= direct + 30 ms.
A row whose flags this fleetctl does not know is skipped.

    .venv/bin/python bench/cli_startup.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devcluster.etcd import EtcdServer  # noqa: E402
from devcluster.sshd import SshAgent, SshServer  # noqa: E402

FLEETCTL = Path(sys.executable).parent / "fleetctl"
TARGETS_MS = {"version": 80.0, "help": 80.0, "list-machines direct": 200.0}
TUNNEL_EXTRA_MS = 30.0


def _median_ms(argv: Sequence[str], env: dict[str, str], rounds: int) -> float | None:
    """Median wall time of ``argv`` as a new process; None when it fails (e.g. an unknown flag)."""
    if subprocess.run(argv, env=env, capture_output=True, check=False).returncode != 0:  # warm-up
        return None
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _row(name: str, value: float | None, target: float | None, rounds: int) -> None:
    if value is None:
        print(f"{name:34s}  (skipped: not supported by this fleetctl)")
        return
    verdict = "" if target is None else f"target <= {target:.0f} ms {'OK' if value <= target else 'OVER'}"
    print(f"{name:34s} {value:7.1f} ms  (median of {rounds})  {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    rounds = parser.parse_args().rounds
    fleetctl = str(FLEETCTL)
    with tempfile.TemporaryDirectory(prefix="fleet-cli-bench-") as tmp_text:
        tmp = Path(tmp_text)
        runtime = tmp / "run"
        runtime.mkdir(mode=0o700)
        env = {
            **os.environ,
            "XDG_RUNTIME_DIR": str(runtime),  # the tunnel session's socket, away from the user's own
            "FLEETCTL_KNOWN_HOSTS_FILE": str(tmp / "known_hosts"),
            "FLEETCTL_STRICT_HOST_KEY_CHECKING": "false",
            "FLEETCTL_SSH_USERNAME": "root",
            "FLEETCTL_TUNNEL_IDLE": "5",  # the session ends soon after the benchmark
        }
        for name, argv in (("version", [fleetctl, "version"]), ("help", [fleetctl, "help"])):
            _row(name, _median_ms(argv, env, rounds), TARGETS_MS[name], rounds)
        with (
            SshAgent(tmp / "agent") as agent,
            SshServer(tmp / "sshd", [agent.public_key]) as sshd,
            EtcdServer() as etcd,
        ):
            env["SSH_AUTH_SOCK"] = agent.socket
            env["FLEETCTL_ENDPOINT"] = etcd.endpoint
            etcd.wait_healthy()
            tunnel = ["--tunnel", f"{sshd.host}:{sshd.port}"]
            direct = _median_ms([fleetctl, "list-machines"], env, rounds)
            _row("list-machines direct", direct, TARGETS_MS["list-machines direct"], rounds)
            fresh = _median_ms([fleetctl, "list-machines", *tunnel, "--tunnel-reuse=false"], env, rounds)
            if fresh is None:  # a fleetctl without the reusable session: every --tunnel command connects
                fresh = _median_ms([fleetctl, "list-machines", *tunnel], env, rounds)
                _row("list-machines --tunnel (connect)", fresh, None, rounds)
                return
            _row("list-machines --tunnel (connect)", fresh, None, rounds)
            reused = _median_ms([fleetctl, "list-machines", *tunnel], env, rounds)
            target = direct + TUNNEL_EXTRA_MS if direct is not None else None
            _row("list-machines --tunnel (reused)", reused, target, rounds)
            if reused is not None and direct is not None:
                print(f"{'tunnel (reused) over direct':34s} {reused - direct:+7.1f} ms")


if __name__ == "__main__":
    main()
