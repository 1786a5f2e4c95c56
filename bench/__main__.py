"""``python -m bench [NAME ...] [--quick] [--write]``: run the benchmarks and report against the targets.

Without names every benchmark runs (about 19 minutes on 2 cores: the sum of ``bench.budgets.BUDGETS``,
each benchmark's estimated share, which the long ones also enforce by cutting their samples and saying so);
``--quick`` scales every size down for a smoke run (about 3 minutes). The full run writes the table to
docs/performance.md (``--write`` forces it, ``--no-write`` skips it). Benchmarks print rates and ratios;
nothing here is a test.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from bench import (
    engine_sweep,
    failover,
    failover_big,
    fanout,
    fleetctl_bench,
    fleetd_rss,
    footprint,
    herd,
    no_false_failover,
    start_latency,
    steady,
)
from bench.budgets import BUDGETS
from bench.report import Figure, render, write_report

ROOT = Path(__file__).resolve().parents[1]


def planner(quick: bool) -> list[Figure]:
    from bench import planner as p  # noqa: PLC0415

    units, machines, web = (2_000, 200, 1_000) if quick else (10_000, 1_000, 5_000)
    mixed_s, mixed_rate = p.rate(p.mixed(units, machines), units)
    _, plain_rate = p.rate(p.web(web, web, conflicts=False), web)
    _, conflict_rate = p.rate(p.web(web, web, conflicts=True), web)
    open_s, _ = p.rate(p.blocked(web, web, conflicts=False), web)
    blocked_s, _ = p.rate(p.blocked(web, web, conflicts=True), web)
    adversarial, open_rate, blocked_rate = open_s / blocked_s, web / open_s, web / blocked_s
    steady_s, _ = p.rate(p.placed(p.mixed(units, machines)), 0)
    ratio = conflict_rate / plain_rate
    print(
        f"planner: mixed {mixed_s:.3f}s; web {plain_rate:,.0f}/s; conflicts {conflict_rate:,.0f}/s",
        flush=True,
    )
    return [
        Figure(
            "planner",
            f"plan {units:,} units onto {machines:,} machines (half with MachineMetadata)",
            "<= 0.5 s",
            f"{mixed_s:.3f} s",
            mixed_s <= 0.5,
            f"{mixed_rate:,.0f} units/s",
        ),
        Figure(
            "planner",
            f"{web:,} web@N with Conflicts=web@* onto {web:,} machines: rate vs unconstrained",
            ">= 0.5",
            f"{ratio:.2f}",
            ratio >= 0.5,
            f"{conflict_rate:,.0f} vs {plain_rate:,.0f} units/s",
        ),
        Figure(
            "planner",
            f"adversarial Conflicts: {web:,} web@N with Conflicts=db@* onto {web:,} machines whose least"
            " loaded half each runs a db@N: rate vs the same without Conflicts",
            ">= 0.5",
            f"{adversarial:.2f}",
            adversarial >= 0.5,
            f"{blocked_rate:,.0f} vs {open_rate:,.0f} units/s, best of 5",
        ),
        Figure(
            "planner",
            f"steady state: re-plan {units:,} placed units (an idle engine pass)",
            "",
            f"{steady_s:.3f} s",
            None,
        ),
    ]


def registry(quick: bool) -> list[Figure]:
    import asyncio  # noqa: PLC0415

    from bench import registry as r  # noqa: PLC0415

    machines, units, idle = (100, 1_000, 10.0) if quick else (1_000, 10_000, 30.0)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        asyncio.run(r.bench(machines, units, idle))
    text = out.getvalue()
    print(text, end="", flush=True)
    scheduled = re.search(r"scheduled in ([\d.]+)s \(submit [\d.]+s; (\d+) placements/s", text)
    grew = re.search(r"revision grew by (\d+) over (\d+)s", text)
    if not (scheduled and grew):
        raise RuntimeError(f"bench.registry printed something unexpected:\n{text}")
    seconds, rate = float(scheduled[1]), int(scheduled[2])
    return [
        Figure(
            "registry",
            f"{units:,} units submitted and scheduled on {machines:,} machines (lease holders, one engine)",
            "<= 10 s",
            f"{seconds:.1f} s",
            seconds <= 10,
            f"{rate:,} placements/s",
        ),
        Figure(
            "registry",
            f"etcd revision growth of an idle {machines:,}-machine cluster over {grew[2]} s",
            "0",
            grew[1],
            grew[1] == "0",
        ),
    ]


def tunnel(quick: bool) -> list[Figure]:
    rounds = "5" if quick else "15"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.tunnel_bench", "--rounds", rounds],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
        check=False,
    )
    print(proc.stdout, end="", flush=True)
    found = re.search(r"tunnel overhead per command:\s+([-\d.]+) ms", proc.stdout)
    direct = re.search(r"direct:\s+([\d.]+) ms", proc.stdout)
    if proc.returncode != 0 or not found:
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return [
            Figure(
                "tunnel",
                "fleetctl command through the SSH tunnel vs direct",
                "<= +100 ms",
                "not measured",
                False,
                reason,
            )
        ]
    overhead = float(found[1])
    return [
        Figure(
            "tunnel",
            "fleetctl command (5 etcd reads) through the SSH tunnel vs direct",
            "<= +100 ms",
            f"+{overhead:.0f} ms",
            overhead <= 100,
            f"direct {direct[1] if direct else '?'} ms, median",
        )
    ]


BENCHES: dict[str, Callable[[bool], list[Figure]]] = {
    "planner": planner,
    "registry": registry,
    "tunnel": tunnel,
    "steady": steady.run,
    "start_latency": start_latency.run,
    "herd": herd.run,
    "fleetd_rss": fleetd_rss.run,
    "engine_sweep": engine_sweep.run,
    "fleetctl": fleetctl_bench.run,
    "failover": failover.run,
    "failover_big": failover_big.run,
    "no_false_failover": no_false_failover.run,
    "fanout": fanout.run,
    "footprint": footprint.run,
}


def _terminate(signum: int, _frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every etcd a benchmark started is stopped by its ``with`` block."""
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of: {', '.join(BENCHES)}")
    parser.add_argument("--quick", action="store_true", help="scaled-down sizes: a smoke run")
    parser.add_argument(
        "--write",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="write docs/performance.md (default: only for a full run of every benchmark)",
    )
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}")
    names = list(args.names or BENCHES)
    # The footprint gets its own machines: clearing the fan-out's global units off 5,000 machines first
    # would be a burst of its own.
    steps = [(name, BENCHES[name]) for name in names]
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    figures: list[Figure] = []
    for name, step in steps:
        print(f"== {name}", flush=True)
        began = time.monotonic()
        try:
            got = step(args.quick)
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            got = [
                Figure(name, "benchmark run", "completes", "failed", False, f"{type(exc).__name__}: {exc}")
            ]
        for figure in got:
            print(figure.line(), flush=True)
        took = time.monotonic() - began
        over = " (over its budget)" if not args.quick and took > BUDGETS[name] * 1.2 else ""
        print(f"== {name} took {took:.0f}s of a {BUDGETS[name]:.0f}s budget{over}", flush=True)
        figures += got
    seconds = time.monotonic() - started
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" {n}" for n in args.names)
    section = render(figures, command=command, seconds=seconds, notes=NOTES)
    print(section)
    write = args.write if args.write is not None else not args.quick and not args.names
    if write:
        write_report(section)
        print("written to docs/performance.md")
    return 0 if all(f.passed is not False for f in figures) else 1


NOTES = (
    "Every simulated machine is what fleetd runs by default: the production agent"
    " (`fleetd.agent.agent.Agent`, with a fake systemd) and an engine candidate"
    " (`fleetd.engine.engine.Engine` as `bench.engines.SimEngine`, which only adds pass timing and lets a"
    " kill skip resignation), on real etcd clients (each its own leases, keep-alives and watches; agents"
    " share 4-16 gRPC channels and candidates as many others), in one Python process (the fan-out and the"
    " footprint: 2 worker processes, and the leading machine alone in a third, as a leader's fleetd is)."
    " Clocks stop when the state is listed through `Registry.list_unit_states`, what `fleetctl"
    " list-units` reads. Anchors (`bench.engines.MirroringEngine`) are the same workload with standby mirrors"
    " switched back on. `fleetd_rss` measures one real fleetd process (`fleetd.server.main`, fake systemd)"
    " beside a filled registry; `engine_sweep` times the leader's own passes, alone in its process. etcd is"
    " Debian's, on loopback, in a tmp dir. The development machine has 2 cores shared with other work, so"
    " the simulator and etcd compete for CPU: figures with a simulator CPU note are bounded by the"
    " simulator, not by etcd. Real-systemd start latencies come from the nspawn cluster (`start_latency`).",
)


if __name__ == "__main__":
    sys.exit(main())
