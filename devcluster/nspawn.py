"""Real systemd machines for local clusters and tests, booted with systemd-nspawn (DESIGN.md §9).

Each machine boots the host OS as a throwaway container (``-D / --volatile=yes``): its own systemd, D-Bus
system bus, journal, machine ID and hostname, sharing the host network. It gets its own loopback address
127.0.0.N with an sshd on it (own host key, root login with a cluster key). The checkout, its venv and the
Python the venv points to are bound read-only at the same paths, so ``<checkout>/.venv/bin/fleetd`` runs
inside. Files (a fleet.conf, a unit file) can be put into a machine before or after boot.

Everything a machine creates lives in ``<state_dir>/machines/<name>/``; the PIDs of its processes are recorded
there so ``stop_leftovers`` can stop a cluster whose owner is gone, by PID.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from devcluster.addresses import CLAIMS_DIRECTORY, claim_address, hand_over, release_address
from devcluster.containers import containers_binds

__all__ = [
    "CHECKOUT",
    "OPERATOR",
    "Bind",
    "Machine",
    "MachineError",
    "boot_machines",
    "client_key",
    "stop_leftovers",
    "write_known_hosts",
]

CHECKOUT = Path(__file__).resolve().parent.parent
_HOST_KEY = "/etc/ssh/ssh_host_ed25519_key"
_AUTHORIZED_DIR = "/etc/fleet-ssh"
_PROPAGATE = Path("/run/systemd/nspawn/propagate")
_BOOTED = ("running", "degraded")
OPERATOR = "fleet-op"  # a non-root account on every machine, allowed `sudo journalctl` only
OPERATOR_UID = 4242
_POWEROFF = signal.SIGRTMIN + 4  # systemd as PID 1: SIGRTMIN+4 = poweroff


class MachineError(RuntimeError):
    """A machine failed to boot, run a command or stop."""


@dataclass(frozen=True, slots=True)
class Bind:
    """A host path bound into the machine at ``target`` (read-only unless ``writable``)."""

    source: Path
    target: str
    writable: bool = False

    def option(self) -> str:
        return f"--bind{'' if self.writable else '-ro'}={self.source}:{self.target}"


def python_binds(checkout: Path = CHECKOUT, venv: Path | None = None) -> tuple[Bind, ...]:
    """Read-only binds for the checkout, its venv and the Python installation the venv was made from."""
    venv = venv or checkout / ".venv"
    binds = [Bind(checkout, str(checkout))]
    if not venv.resolve().is_relative_to(checkout):
        binds.append(Bind(venv, str(venv)))
    home = ""
    cfg = venv / "pyvenv.cfg"
    if cfg.exists():
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                home = value.strip()
    if home:
        prefix = Path(home).resolve().parent
        if not prefix.is_relative_to("/usr"):
            binds.append(Bind(prefix, str(prefix)))
    return tuple(binds)


def client_key(state_dir: Path) -> Path:
    """The cluster's SSH client key (created once): ``<state_dir>/ssh/id_ed25519`` and ``.pub``."""
    key = state_dir / "ssh" / "id_ed25519"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _keygen(key, "fleet-devcluster")
    return key


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True, capture_output=True,
    )


def _start_time(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (to tell a recorded process from a later one with its PID)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _same_process(pid: int, start: int | None) -> bool:
    """``pid`` still runs the recorded process (a zombie does not count)."""
    if start is None or _start_time(pid) != start:
        return False
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _operator_account(directory: Path) -> list[Bind]:
    """The host's accounts plus ``OPERATOR``, a plain user whose only privilege is running journalctl
    through sudo (a sudoers entry, and the host's PAM stack for sudo), as an operator's account would be."""
    directory.mkdir(mode=0o755)
    lines = Path("/etc/passwd").read_text().splitlines()
    taken = {int(fields[2]) for fields in (line.split(":") for line in lines) if len(fields) >= 7}
    uid = next(n for n in range(OPERATOR_UID, OPERATOR_UID + 1000) if n not in taken)
    entries = {
        "passwd": f"{OPERATOR}:x:{uid}:{uid}:fleet operator:/:/bin/sh\n",
        "group": f"{OPERATOR}:x:{uid}:\n",
        "shadow": f"{OPERATOR}:*:19000:0:99999:7:::\n",
    }
    binds = []
    for name, entry in entries.items():
        host = Path("/etc", name).read_text()
        copy = directory / name
        copy.write_text(host + ("" if host.endswith("\n") or not host else "\n") + entry)
        copy.chmod(0o640 if name == "shadow" else 0o644)
        binds.append(Bind(copy, f"/etc/{name}"))
    sudoers = directory / "sudoers"
    sudoers.write_text(
        "Defaults env_reset\n"
        "root ALL=(ALL:ALL) ALL\n"
        f"{OPERATOR} ALL=(root) NOPASSWD: /usr/bin/journalctl\n"
    )
    sudoers.chmod(0o440)
    binds.append(Bind(sudoers, "/etc/sudoers"))
    binds += [Bind(Path(p), p) for p in ("/etc/pam.d", "/etc/security") if Path(p).is_dir()]
    return binds


class Machine:
    """One systemd-nspawn machine. ``prepare`` happens in the constructor; then ``boot``/``poweroff`` any
    number of times (same machine ID each time), and ``destroy`` removes all it created."""

    def __init__(
        self,
        name: str,
        state_dir: Path,
        *,
        authorized_key: Path,  # the client's private key; its ``.pub`` is authorized for root
        machine_id: str | None = None,
        binds: Sequence[Bind] = (),
        address: str | None = None,
        claims: Path = CLAIMS_DIRECTORY,
    ) -> None:
        self.name = name
        self.client_key = authorized_key
        self.workdir = state_dir / "machines" / name
        self.machine_id = machine_id or uuid.uuid4().hex
        self._claims = claims
        self.address = address or claim_address(directory=claims)
        self._own_address = address is None
        self._binds = [*python_binds(), *binds]
        self._process: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # the systemd-nspawn process
        self.leader: int | None = None  # the machine's systemd (its PID 1), as seen from the host
        self._pid_namespace: int | None = None
        try:
            self._prepare(authorized_key)
        except BaseException:
            self.destroy()
            raise

    # -- preparation -----------------------------------------------------------------------------------------

    def _prepare(self, authorized_key: Path) -> None:
        if self.workdir.exists():
            raise MachineError(f"machine {self.name}: {self.workdir} exists (stop_leftovers cleans up)")
        ssh = self.workdir / "ssh"
        authorized = ssh / "authorized"
        # sshd reads authorized_keys as the user logging in (root or the operator): readable by all
        authorized.mkdir(parents=True, mode=0o755)
        authorized.chmod(0o755)  # mkdir's mode is masked by the umask
        (self.workdir / "machine-id").write_text(f"{self.machine_id}\n")
        _keygen(ssh / "host_key", f"root@{self.name}")
        shutil.copyfile(authorized_key.with_suffix(".pub"), authorized / "authorized_keys")
        (authorized / "authorized_keys").chmod(0o644)
        (ssh / "sshd_config").write_text(
            f"ListenAddress {self.address}\n"
            f"HostKey {_HOST_KEY}\n"
            f"AuthorizedKeysFile {_AUTHORIZED_DIR}/authorized_keys\n"
            "UsePAM no\n"
            "PermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "AcceptEnv LANG LC_*\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\n"
        )
        public = (ssh / "host_key.pub").read_text().split()
        self.known_hosts = self.workdir / "known_hosts"
        self.known_hosts.write_text(f"{self.address} {public[0]} {public[1]}\n")
        self._binds += [
            Bind(self.workdir / "machine-id", "/etc/machine-id"),
            *_operator_account(self.workdir / "accounts"),
            *(Bind(source, target) for source, target in containers_binds(self.workdir / "containers")),
            Bind(ssh / "sshd_config", "/etc/ssh/sshd_config"),
            Bind(ssh / "host_key", _HOST_KEY),
            Bind(ssh / "host_key.pub", f"{_HOST_KEY}.pub"),
            Bind(authorized, _AUTHORIZED_DIR),
        ]

    def put_file(self, path: str, text: str, mode: int = 0o644) -> None:
        """Put a file at ``path`` inside the machine, now if it is running and at every later boot."""
        if not path.startswith("/"):
            raise ValueError(f"not an absolute path: {path}")
        staged = self.workdir / "files" / path.lstrip("/")
        staged.parent.mkdir(parents=True, exist_ok=True)
        _write_with_mode(staged, text, mode)  # in place: a bound file keeps its inode
        bind = Bind(staged, path, writable=True)
        # A file put while running is not bound until the next boot: write it inside too, also when it
        # was put before (when the machine was booted with the bind, this writes the same inode again).
        if self.running:
            inside = Path(f"/proc/{self.leader}/root") / path.lstrip("/")
            inside.parent.mkdir(parents=True, exist_ok=True)
            _write_with_mode(inside, text, mode)
        if bind not in self._binds:
            self._binds.append(bind)

    # -- lifecycle -------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.pid is not None

    def command(self) -> list[str]:
        return [
            "systemd-nspawn", "-D", "/", "--volatile=yes", "--register=no", "--keep-unit",
            "-M", self.name, "-b", "--console=pipe", *(bind.option() for bind in self._binds),
        ]

    def boot(self, timeout: float = 90.0) -> None:
        """Boot and wait until systemd is up (``degraded`` is fine) and sshd listens on ``address``."""
        if self.running:
            raise MachineError(f"machine {self.name} is already running")
        deadline = time.monotonic() + timeout
        console = open(self.workdir / "console.log", "ab")  # noqa: SIM115 (outlives this call)
        try:
            self._process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            console.close()
        self.pid = self._process.pid
        try:
            self._record()
            if self._own_address:
                hand_over(self.address, self.pid, self._claims)
            self.leader = self._find_leader(deadline)
            self._pid_namespace = os.stat(f"/proc/{self.leader}/ns/pid").st_ino
            self._record()
            self._wait_booted(deadline)
            left = max(1.0, deadline - time.monotonic())
            self.run(["systemctl", "start", "ssh.service"], check=True, timeout=left)
        except BaseException:
            self.kill()
            raise

    def _find_leader(self, deadline: float) -> int:
        assert self.pid is not None
        while time.monotonic() < deadline:
            self._check_alive()
            for pid in _descendants(self.pid):
                if _is_namespace_init(pid):
                    return pid
            time.sleep(0.02)
        raise MachineError(f"machine {self.name}: no container init appeared")

    def _wait_booted(self, deadline: float) -> None:
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            result = self.run(["systemctl", "is-system-running"], timeout=10)
            state = result.stdout.strip()
            if state in _BOOTED:
                return
            time.sleep(0.1)
        raise MachineError(f"machine {self.name}: not booted in time (state {state or 'unknown'})")

    def _check_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            tail = (self.workdir / "console.log").read_text(errors="replace")[-2000:]
            code = self._process.returncode
            raise MachineError(f"machine {self.name}: systemd-nspawn exited {code}: {tail}")

    def run(
        self,
        cmd: Sequence[str],
        *,
        check: bool = False,
        input: str | None = None,
        timeout: float | None = 60.0,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``cmd`` inside the machine (nsenter into its mount, UTS, IPC and PID namespaces)."""
        if self.leader is None:
            raise MachineError(f"machine {self.name} is not running")
        # nsenter --wd resolves the directory before entering the mount namespace; chdir inside instead.
        wd = ["env", f"--chdir={cwd}"] if cwd else []
        argv = ["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-p", "--", *wd, *cmd]
        try:
            return subprocess.run(
                argv, input=input, capture_output=True, text=True, timeout=timeout, check=check,
                env=None if env is None else dict(env),
            )
        except subprocess.CalledProcessError as exc:
            raise MachineError(
                f"machine {self.name}: {' '.join(cmd)} exited {exc.returncode}: {exc.stderr.strip()}"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise MachineError(f"machine {self.name}: {' '.join(cmd)} timed out after {timeout}s") from exc

    def processes(self) -> list[int]:
        """Host PIDs of every process in the machine's PID namespace."""
        if self._pid_namespace is None:
            return []
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.stat(entry / "ns" / "pid").st_ino == self._pid_namespace:
                        found.append(int(entry.name))
        return found

    def poweroff(self, timeout: float = 30.0) -> None:
        """Clean shutdown (systemd stops every unit), then wait for nspawn to exit; kill after ``timeout``."""
        if not self.running:
            return
        if self.leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, _POWEROFF)
        if not self._wait_exit(timeout):
            self.kill()
            return
        self._stopped()

    def kill(self) -> None:
        """Stop at once: SIGKILL to the machine's PID 1 ends its whole PID namespace; then nspawn."""
        if self.leader is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.leader, signal.SIGKILL)
        if self.pid is not None and not self._wait_exit(10.0):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            self._wait_exit(10.0)
        self._stopped()

    def _wait_exit(self, timeout: float) -> bool:
        if self._process is None:
            return True
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        return True

    def _stopped(self) -> None:
        self._process = None
        self.pid = self.leader = None
        self._pid_namespace = None
        with contextlib.suppress(OSError):
            (_PROPAGATE / self.name).rmdir()
        with contextlib.suppress(FileNotFoundError):
            (self.workdir / "pids.json").unlink()

    def destroy(self) -> None:
        """Stop if running and remove everything this machine created (its directory, its address claim)."""
        try:
            self.kill()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if self._own_address:
                release_address(self.address, self._claims)

    def _record(self) -> None:
        pids = {
            name: {"pid": pid, "start": _start_time(pid)}
            for name, pid in (("nspawn", self.pid), ("leader", self.leader))
            if pid is not None
        }
        (self.workdir / "pids.json").write_text(json.dumps({"name": self.name, "pids": pids}))

    # -- ssh -------------------------------------------------------------------------------------------------

    def ssh_command(self, *cmd: str, key: Path | None = None) -> list[str]:
        """An ``ssh root@<address> CMD`` command line with strict host-key checking against this machine."""
        return [
            "ssh", "-F", "/dev/null", "-i", str(key or self.client_key),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            f"root@{self.address}", *cmd,
        ]


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = (task / "children").read_text().split()
                found += [int(c) for c in children]
                todo += [int(c) for c in children]
    return found


def _is_namespace_init(pid: int) -> bool:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                ids = line.split()[1:]
                return len(ids) > 1 and ids[-1] == "1"
    return False


def boot_machines(
    count: int,
    state_dir: Path,
    *,
    prefix: str = "fleet",
    binds: Sequence[Bind] = (),
    timeout: float = 120.0,
) -> list[Machine]:
    """Prepare and boot ``count`` machines named ``<prefix>1..N`` in parallel; on any failure none is left."""
    key = client_key(state_dir)
    machines: list[Machine] = []
    try:
        for index in range(1, count + 1):
            machines.append(Machine(f"{prefix}{index}", state_dir, authorized_key=key, binds=binds))
        with ThreadPoolExecutor(max_workers=count) as pool:
            for future in [pool.submit(m.boot, timeout) for m in machines]:
                future.result()
    except BaseException:
        for machine in machines:
            machine.destroy()
        raise
    return machines


def _write_with_mode(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` (truncated in place) with ``mode`` set before any byte is written, so a
    0600 file (fleet.conf may hold etcd_password) is never readable by others, not even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(fd, mode)
        handle.write(text)


def write_known_hosts(machines: Sequence[Machine], path: Path) -> Path:
    """One known_hosts file for every machine (e.g. for fleetctl --tunnel with strict checking)."""
    path.write_text("".join(m.known_hosts.read_text() for m in machines))
    return path


def stop_leftovers(state_dir: Path, claims: Path = CLAIMS_DIRECTORY) -> list[str]:
    """Kill, by recorded PID, every machine under ``state_dir`` and remove its files; returns their names."""
    stopped = []
    machines = state_dir / "machines"
    for workdir in sorted(machines.iterdir()) if machines.is_dir() else []:
        record = workdir / "pids.json"
        if record.exists():
            pids = json.loads(record.read_text())["pids"]
            # The machine's PID 1 first: that ends its PID namespace and nspawn then exits by itself.
            for role in ("leader", "nspawn"):
                entry = pids.get(role)
                if entry and _same_process(entry["pid"], entry["start"]):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(entry["pid"], signal.SIGKILL)
                    _wait_gone(entry["pid"], entry["start"], 10.0)
        address = _address_of(workdir)
        if address:
            release_address(address, claims)
        with contextlib.suppress(OSError):
            (_PROPAGATE / workdir.name).rmdir()
        shutil.rmtree(workdir, ignore_errors=True)
        stopped.append(workdir.name)
    return stopped


def _wait_gone(pid: int, start: int | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _same_process(pid, start) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.05)


def _address_of(workdir: Path) -> str | None:
    with contextlib.suppress(OSError, IndexError):
        return (workdir / "known_hosts").read_text().split()[0]
    return None
