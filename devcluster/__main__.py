"""``python -m devcluster up [--machines N] [--etcd-members M] [--no-demo] | down | status``: the local
cluster and its demo.

``up`` starts etcd and N systemd-nspawn machines running fleetd (devcluster.cluster), then, unless
``--no-demo``, schedules the example units of ``deploy/examples`` with the real ``fleetctl`` and prints the
machines and units, followed by how to use fleetctl against the cluster and how to tear it down.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from devcluster.cluster import (
    FLEETCTL,
    ClusterError,
    ClusterState,
    bring_down,
    bring_up,
    fleetctl,
    load_state,
    running_pids,
    state_dir_of,
)
from devcluster.nspawn import CHECKOUT, MachineError

EXAMPLES = CHECKOUT / "deploy" / "examples"
HELLO_INSTANCES = 3
PODS = ("app-pod@1.service", "boot-pod@1.service", "podman-app@1.service")


def _show(state: ClusterState, *args: str, check: bool = True, ssh: bool = False) -> str:
    """Run fleetctl against the cluster from ``deploy/examples``, echo the command and its output;
    ``ssh``: with the cluster's SSH settings (for commands that run on a machine)."""
    print(f"$ fleetctl {shlex.join(args)}", flush=True)
    env = environment(state) if ssh else None
    result = fleetctl(state.endpoint, *args, cwd=EXAMPLES, timeout=180, env=env)
    output = (result.stdout + result.stderr).rstrip()
    if output:
        print(output, flush=True)
    if check and result.returncode != 0:
        raise ClusterError(f"fleetctl {shlex.join(args)} exited {result.returncode}")
    return result.stdout


def run_demo(state: ClusterState) -> None:
    count = len(state.machines)
    hellos = [f"hello@{n}.service" for n in range(1, min(HELLO_INSTANCES, count) + 1)]
    print(f"\n== scheduling the example units of {EXAMPLES.relative_to(CHECKOUT)}", flush=True)
    _show(state, "submit", *hellos)
    _show(state, "start", "hello@*")
    units = ["monitor.service", "web.service", "web-announce.service"]
    if any("role=db" in m.metadata for m in state.machines):
        units.append("db.service")
    _show(state, "start", *units)
    if any("role=pods" in m.metadata for m in state.machines):
        print("\n== pods on the role=pods machine (README: Pods)", flush=True)
        _show(state, "start", *PODS)
        _show(state, "ssh", PODS[0], "machinectl", "list", ssh=True)
        _show(state, "status", PODS[0], ssh=True)
        _show(state, "journal", "--lines", "3", PODS[0], ssh=True)
        _show(state, "ssh", "--pod", PODS[1], "hostname; systemctl is-system-running", ssh=True, check=False)
        _show(state, "status", PODS[2], ssh=True)
    print()
    _show(state, "list-machines")
    print()
    _show(state, "list-units")


def environment(state: ClusterState) -> dict[str, str]:
    """The FLEETCTL_* variables that point fleetctl at this cluster: etcd, and SSH to its machines."""
    return {
        "FLEETCTL_ENDPOINT": state.endpoint,
        "FLEETCTL_IDENTITY_FILE": str(state.key),
        "FLEETCTL_KNOWN_HOSTS_FILE": str(state.known_hosts),
        "FLEETCTL_SSH_USERNAME": "root",
    }


def usage(state: ClusterState) -> str:
    fleetctl_path = FLEETCTL.relative_to(CHECKOUT)
    first = state.machines[0]
    env = environment(state)
    return "\n".join([
        "",
        f"The cluster {state.name!r} is up: etcd at {state.endpoint}, machines "
        + ", ".join(f"{m.name} ({m.address})" for m in state.machines) + ".",
        "",
        "Use fleetctl from this host (in the checkout), with the cluster's settings in your shell:",
        f'    eval "$(scripts/demo env{_name_flag(state)})"',
        f"    {fleetctl_path} list-units",
        f"    {fleetctl_path} journal hello@1.service",
        f"    {fleetctl_path} ssh hello@1.service hostname",
        "",
        "or with every setting on the command line, through an SSH tunnel to a machine:",
        f"    {fleetctl_path} --tunnel {first.address} --identity-file {env['FLEETCTL_IDENTITY_FILE']} \\",
        f"        --known-hosts-file {env['FLEETCTL_KNOWN_HOSTS_FILE']} --ssh-username root list-machines",
        "",
        "Log in to a machine:",
        f"    ssh -i {state.key} -o UserKnownHostsFile={state.known_hosts} root@{first.address}",
        "",
        "Tear down (stops every process it started, by PID):",
        f"    scripts/demo down{_name_flag(state)}",
    ])


def _name_flag(state: ClusterState) -> str:
    return "" if state.name == "fleet" else f" --name {shlex.quote(state.name)}"


def cmd_env(args: argparse.Namespace) -> int:
    state = load_state(args.name)
    if state is None:
        print(f"Error: no cluster {args.name!r}; start one with scripts/demo", file=sys.stderr)
        return 1
    for name, value in environment(state).items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    state, created = bring_up(args.name, args.machines, etcd_members=args.etcd_members)
    if not created:
        print(f"== cluster {state.name!r} is already up ({len(state.machines)} machines); "
              "`scripts/demo down` first to recreate it")
        _show(state, "list-machines", check=False)
        print()
        _show(state, "list-units", check=False)
    elif not args.no_demo:
        run_demo(state)
    print(usage(state))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    if bring_down(args.name):
        print(f"== cluster {args.name!r} is down: every process stopped, {state_dir_of(args.name)} removed")
    else:
        print(f"== no cluster {args.name!r}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state = load_state(args.name)
    if state is None:
        print(f"no cluster {args.name!r}")
        return 1
    alive = set(running_pids(state))
    print(f"cluster {state.name!r} (state in {state.state_dir})")
    for endpoint, (pid, _) in zip(state.endpoint.split(","), state.etcd_processes, strict=False):
        print(f"etcd     {endpoint}  PID {pid}  {'running' if pid in alive else 'STOPPED'}")
    for m in state.machines:
        up = "running" if {m.nspawn_pid, m.leader_pid} <= alive else "STOPPED"
        print(f"{m.name:<8} {m.address:<12} {m.machine_id}  PID {m.nspawn_pid}  {up}  {m.metadata}")
    if any(pid in alive for pid, _ in state.etcd_processes):
        print()
        _show(state, "list-machines", check=False)
    healthy = len(alive) == len(state.etcd_processes) + 2 * len(state.machines)
    return 0 if healthy else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__.splitlines()[0])
    sub = top.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start etcd and N machines running fleetd, then run the demo")
    up.add_argument(
        "--machines", type=int, default=4, metavar="N",
        help="number of machines (default 4: web, web, pods, db)",
    )
    up.add_argument(
        "--etcd-members", type=int, default=1, metavar="M",
        help="etcd members (default 1; 3 runs a raft cluster on loopback, fleetd given every endpoint)",
    )
    up.add_argument("--no-demo", action="store_true", help="do not schedule the example units")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop everything the cluster started and remove its state")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="show the cluster's processes and machines")
    status.set_defaults(func=cmd_status)
    env = sub.add_parser("env", help="print export lines for FLEETCTL_* pointing at the cluster (eval them)")
    env.set_defaults(func=cmd_env)
    for command in (up, down, status, env):
        command.add_argument("--name", default="fleet", help="cluster name (default fleet)")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (ClusterError, MachineError, RuntimeError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
