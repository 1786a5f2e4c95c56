"""The end-to-end cluster: a real etcd and N nspawn machines each running fleetd, driven by the real fleetctl.

Each machine gets ``/etc/fleet/fleet.conf`` and ``fleetd.service`` from ``devcluster.cluster.machine_files``
(deploy/cloud-config/worker.yaml rendered with the cluster's values, as ``python -m devcluster up`` does)
plus a short ``agent_ttl`` so failover tests are quick. The machines stay ``Machine`` objects here so tests
can run commands in them, stop or kill their fleetd, power them off and boot them again.

``FleetCluster.fleetctl(*args)`` runs ``.venv/bin/fleetctl`` as a user would (a subprocess, from the
fixtures directory) and returns ``(exit code, stdout, stderr)``.
"""

from __future__ import annotations

import contextlib
import os
import pty
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from devcluster.cluster import FLEET_VENV, FLEETCTL, machine_files, machine_roles, start_fleetd
from devcluster.etcd import EtcdCluster, EtcdServer, free_port
from devcluster.nspawn import CHECKOUT, Bind, Machine, boot_machines, client_key, write_known_hosts
from devcluster.proxy import EtcdProxy

__all__ = [
    "AGENT_TTL",
    "FIXTURES",
    "POLL",
    "FleetCluster",
    "Result",
    "boot_fleet_cluster",
    "eventually",
]

FIXTURES = Path(__file__).resolve().parent / "fixtures"
AGENT_TTL = 5.0
POLL = 0.25
NO_RESTART_DROPIN = "/run/systemd/system/fleetd.service.d/e2e-no-restart.conf"

Result = tuple[int, str, str]


T = TypeVar("T")


def eventually(probe: Callable[[], T], done: Callable[[T], bool], timeout: float, what: str) -> T:
    """Call ``probe`` every POLL seconds until ``done(value)``; AssertionError naming ``what`` and the last
    value when ``timeout`` runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(POLL)


@dataclass
class FleetCluster:
    etcd: EtcdServer | EtcdCluster  # ``etcd.endpoint``: every member's URL, comma-separated
    machines: tuple[Machine, ...]
    metadata: dict[str, str]  # machine name -> metadata text
    state_dir: Path
    key: Path  # SSH client key authorized for root on every machine
    known_hosts: Path  # every machine's host key
    base_env: dict[str, str] = field(default_factory=dict)

    # -- fleetctl ------------------------------------------------------------------------------------------

    def ssh_flags(self) -> list[str]:
        return [
            "--ssh-username", "root", "--identity-file", str(self.key),
            "--known-hosts-file", str(self.known_hosts),
        ]

    def base_argv(self, *, endpoint: bool = True, ssh: bool = True) -> list[str]:
        """fleetctl with ``--endpoint`` (unless ``endpoint=False``) and the cluster's SSH flags
        (``ssh=False``: only the user name)."""
        argv = [str(FLEETCTL), *(["--endpoint", self.etcd.endpoint] if endpoint else [])]
        return argv + (self.ssh_flags() if ssh else ["--ssh-username", "root"])

    def fleetctl(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        answer: str | None = None,
        endpoint: bool = True,
        ssh: bool = True,
        timeout: float = 120.0,
        cwd: Path = FIXTURES,
    ) -> Result:
        """Run fleetctl with ``--endpoint`` (unless ``endpoint=False``) and the cluster's SSH flags before
        ``args`` (``ssh=False`` leaves out the identity file and known hosts); ``answer`` is typed on
        a terminal given as stdin (for host-key prompts)."""
        argv = self.base_argv(endpoint=endpoint, ssh=ssh)
        full_env = {**self.base_env, **(env or {})}
        if answer is None:
            done = subprocess.run(
                [*argv, *args], input=input, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                env=full_env, check=False, stdin=None if input is not None else subprocess.DEVNULL,
            )
            return done.returncode, done.stdout, done.stderr
        master, slave = pty.openpty()
        try:
            os.write(master, answer.encode() + b"\n")  # waits in the terminal's line buffer for the prompt
            done = subprocess.run(
                [*argv, *args], stdin=slave, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                env=full_env, check=False,
            )
        finally:
            os.close(slave)
            os.close(master)
        return done.returncode, done.stdout, done.stderr

    def ok(self, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120.0) -> str:
        """fleetctl that must succeed; returns stdout."""
        code, out, err = self.fleetctl(*args, env=env, timeout=timeout)
        assert code == 0, f"fleetctl {' '.join(args)} exited {code}\nstdout: {out}\nstderr: {err}"
        return out

    def listed_machines(self) -> list[list[str]]:
        """Rows of ``list-machines --no-legend --full --fields machine,ip,metadata`` (empty on failure)."""
        code, out, _ = self.fleetctl(
            "list-machines", "--no-legend", "--full", "--fields", "machine,ip,metadata", timeout=30
        )
        return [line.split() for line in out.splitlines() if line.strip()] if code == 0 else []

    # -- machines ------------------------------------------------------------------------------------------

    def by_id(self, machine_id: str) -> Machine:
        for machine in self.machines:
            if machine.machine_id == machine_id or machine.machine_id.startswith(machine_id.rstrip(".")):
                return machine
        raise KeyError(machine_id)

    def start_fleetd(self, machine: Machine) -> None:
        start_fleetd(machine)

    def stop_fleetd(self, machine: Machine) -> None:
        machine.run(["systemctl", "stop", "fleetd.service"], check=True, timeout=120)

    def kill_fleetd(self, machine: Machine) -> None:
        """SIGKILL fleetd and keep it down (a runtime drop-in turns off Restart=always until restored)."""
        dropin = Path(f"/proc/{machine.leader}/root") / NO_RESTART_DROPIN.lstrip("/")
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text("[Service]\nRestart=no\n")
        machine.run(["systemctl", "daemon-reload"], check=True)
        pid = machine.run(["systemctl", "show", "-p", "MainPID", "--value", "fleetd.service"]).stdout.strip()
        assert pid.isdigit() and pid != "0", f"fleetd is not running on {machine.name}"
        machine.run(["kill", "-KILL", pid], check=True)

    def restore_fleetd(self, machine: Machine) -> None:
        """Undo ``kill_fleetd``/``stop_fleetd`` and start fleetd again."""
        dropin = Path(f"/proc/{machine.leader}/root") / NO_RESTART_DROPIN.lstrip("/")
        if dropin.exists():
            dropin.unlink()
            machine.run(["systemctl", "daemon-reload"], check=True)
        machine.run(["systemctl", "reset-failed", "fleetd.service"])
        self.start_fleetd(machine)

    def install_fleetd(self, machine: Machine) -> None:
        """fleet.conf and fleetd.service from worker.yaml (short agent_ttl), then start fleetd."""
        for path, file in machine_files(
            self.etcd.endpoint, self.metadata[machine.name], machine.address
        ).items():
            extra = f'agent_ttl="{AGENT_TTL:g}s"\nengine_reconcile_interval=1.0\n'
            text = file.content + extra if path.endswith("fleet.conf") else file.content
            machine.put_file(path, text, file.permissions)
        machine.run(["systemctl", "daemon-reload"], check=True)
        self.start_fleetd(machine)

    def set_config(self, machine: Machine, key: str, value: str) -> None:
        """Set one fleet.conf key in ``machine`` and ``systemctl reload`` fleetd (it keeps its lease and
        units)."""
        path = "/etc/fleet/fleet.conf"
        lines = machine.run(["cat", path], check=True).stdout.splitlines()
        kept = [line for line in lines if line.partition("=")[0].strip() != key]
        machine.put_file(path, "\n".join([*kept, f'{key}="{value}"']) + "\n", 0o600)
        machine.run(["systemctl", "reload", "fleetd.service"], check=True, timeout=60)

    @contextlib.contextmanager
    def partitionable(self, machine: Machine) -> Iterator[EtcdProxy]:
        """Run ``machine``'s fleetd through its own proxy to etcd (devcluster/proxy.py) that the caller
        can ``cut()`` and ``heal()``; afterwards the machine talks to etcd directly again and the proxy
        is stopped by PID, also on failure."""
        proxy = EtcdProxy(free_port(), self.etcd.endpoint.split(",")[0]).start()
        try:
            self.set_config(machine, "etcd_servers", proxy.endpoint)
            yield proxy
        finally:
            try:
                proxy.heal()
                self.set_config(machine, "etcd_servers", self.etcd.endpoint)
            finally:
                proxy.stop()

    def fleetd_active(self, machine: Machine) -> bool:
        return machine.run(["systemctl", "is-active", "fleetd.service"]).stdout.strip() == "active"

    def systemd_active(self, machine: Machine, unit: str) -> str:
        """``systemctl is-active UNIT`` inside the machine."""
        return machine.run(["systemctl", "is-active", unit]).stdout.strip()

    def journal(self, machine: Machine, *args: str) -> str:
        return machine.run(["journalctl", "--no-pager", "-o", "cat", *args], timeout=60).stdout

    def reboot(self, machine: Machine) -> None:
        """Power off cleanly and boot again with the same machine ID, then start fleetd."""
        machine.poweroff()
        machine.boot()
        self.start_fleetd(machine)

    def diagnose(self) -> str:
        """What a failed clean-up leaves to read: fleetctl's tables, and per machine whether it runs, its
        fleetd's state, the fleet units systemd has and the tail of fleetd's journal (each probe bounded)."""
        parts = []
        for args in (("list-machines", "--full"), ("list-unit-files", "--full"), ("list-units", "--full")):
            try:
                code, out, err = self.fleetctl(*args, timeout=30)
                parts.append(f"$ fleetctl {' '.join(args)} -> {code}\n{out}{err}")
            except subprocess.TimeoutExpired:
                parts.append(f"$ fleetctl {' '.join(args)}: timed out")
        for machine in self.machines:
            if not machine.running:
                parts.append(f"== {machine.name}: not running")
                continue
            parts.append(f"== {machine.name} ({machine.machine_id})")
            for cmd in (
                ["systemctl", "status", "--no-pager", "-n", "0", "fleetd.service"],
                ["systemctl", "list-units", "--all", "--no-pager", "--plain", "--no-legend", "*.service"],
                ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", "60", "-u", "fleetd.service"],
            ):
                try:
                    done = machine.run(cmd, timeout=20)
                    parts.append(f"$ {' '.join(cmd)} -> {done.returncode}\n{done.stdout}{done.stderr}")
                except Exception as exc:  # a diagnostic never hides the failure it explains
                    parts.append(f"$ {' '.join(cmd)}: {exc}")
        return "\n".join(parts)

    def destroy(self) -> None:
        try:
            for machine in self.machines:
                machine.destroy()
        finally:
            self.etcd.cleanup()


def boot_fleet_cluster(state_dir: Path, count: int = 3, etcd_members: int = 1) -> FleetCluster:
    """etcd (``etcd_members`` members) + ``count`` machines with fleetd, every etcd endpoint in their
    fleet.conf; waits until fleetctl lists every machine."""
    etcd: EtcdServer | EtcdCluster
    if etcd_members == 1:
        etcd = EtcdServer(data_dir=state_dir / "etcd")
    else:
        etcd = EtcdCluster(etcd_members, data_dir=state_dir / "etcd")
    try:
        etcd.start()
    except BaseException:
        etcd.cleanup()
        raise
    machines: Sequence[Machine] = ()
    try:
        prefix = f"e2e{uuid.uuid4().hex[:4]}m"
        venv = Bind(CHECKOUT / ".venv", FLEET_VENV)
        machines = boot_machines(count, state_dir, prefix=prefix, binds=(venv,))
        metadata = {
            m.name: f"role={role},hostname={m.name}"
            for m, role in zip(machines, machine_roles(count), strict=True)
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEETCTL_", "SSH_AUTH_SOCK"))}
        # every fleetctl here connects by itself: no session process outlives the command that started it
        env["FLEETCTL_TUNNEL_REUSE"] = "false"
        cluster = FleetCluster(
            etcd, tuple(machines), metadata, state_dir, client_key(state_dir),
            write_known_hosts(machines, state_dir / "known_hosts"), env,
        )
        for machine in machines:
            cluster.install_fleetd(machine)
        eventually(cluster.listed_machines, lambda rows: len(rows) == count, 60, f"{count} machines")
        return cluster
    except BaseException:
        with contextlib.suppress(Exception):
            for machine in machines:
                machine.destroy()
        etcd.cleanup()
        raise
