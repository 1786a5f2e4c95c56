"""status, journal and ssh: find a unit's machine and run a command there (locally, over SSH, or through the
tunnel).

The cluster is read by the caller and handed in as a lookup callable (unit name -> ``UnitLocation``) and a
machine list, so these functions never talk to etcd. status and journal commands are argument vectors: run
locally they go to ``subprocess`` without a shell; sent over SSH every argument is ``shlex.quote``d, so no
unit name or argument can inject shell. ``fleetctl ssh``'s command is the user's own: its words are joined
with spaces for the remote shell to read (as fleet did), so ``fleetctl ssh m 'ls | wc -l'`` pipes there.
Refusals carry the reference's exact messages (spec §1.7) as ``RemoteRefused``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, BinaryIO, Protocol

from fleetctl.ssh.config import SSHSettings, split_host_port
from fleetctl.ssh.host_keys import Ask, Warn, ask_on_terminal, warn_on_stderr
from fleetd.errors import FleetError, TunnelError
from fleetd.model import MachineState, TargetState

if TYPE_CHECKING:
    from fleetctl.client import UnitLocation
    from fleetctl.ssh.tunnel import SSHConnection

__all__ = [
    "Lookup",
    "RemoteRefused",
    "Runner",
    "SSHRunner",
    "journal",
    "journal_command",
    "local_machine_id",
    "quote_command",
    "resolve_ssh_target",
    "ssh",
    "ssh_command_line",
    "status",
    "status_command",
]

MACHINE_ID_FILE = "/etc/machine-id"


class RemoteRefused(FleetError):
    """A refusal printed verbatim on stderr (the reference's message), with its exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


Lookup = Callable[[str], "UnitLocation | None"]


class Runner(Protocol):
    """Runs a command on a machine (the SSH runner below, or a fake in tests)."""

    def run(self, machine: MachineState, argv: Sequence[str], port: int) -> int: ...
    def shell(self, machine: MachineState, port: int, forward_agent: bool) -> int: ...
    def run_ssh(self, machine: MachineState, argv: Sequence[str], port: int, forward_agent: bool) -> int: ...
    def terminal(self, machine: MachineState, command: str, port: int, forward_agent: bool) -> int: ...


def quote_command(argv: Sequence[str]) -> str:
    """A shell command line that runs exactly ``argv`` (every word quoted when needed)."""
    return " ".join(shlex.quote(word) for word in argv)


def ssh_command_line(words: Sequence[str]) -> str:
    """``fleetctl ssh``'s remote command: the words joined with single spaces, unquoted, so the remote shell
    sees pipes, redirections and variables (``fleetctl ssh m 'journalctl | grep x'``), as fleet's did."""
    return " ".join(words)


# Registry names are input: a unit named ``-H.service`` must reach systemctl/journalctl as a name, never as an
# option. So the name follows ``--`` (systemctl) or is glued to its option (``--unit=NAME``), as is --output.
def status_command(unit: str) -> tuple[str, ...]:
    return ("systemctl", "status", "-l", "--", unit)


def journal_command(unit: str, lines: int, output: str, follow: bool, sudo: bool) -> tuple[str, ...]:
    argv: tuple[str, ...] = (
        "journalctl",
        f"--unit={unit}",
        "--no-pager",
        "-n",
        str(lines),
        f"--output={output}",
    )
    argv += ("-f",) if follow else ()
    return ("sudo", *argv) if sudo else argv


def local_machine_id(path: str = MACHINE_ID_FILE) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def status(
    units: Sequence[str], lookup: Lookup, runner: Runner, port: int, out: Callable[[str], None]
) -> int:
    """``systemctl status -l`` for each unit on its machine; stops at the first non-zero exit code."""
    for index, name in enumerate(units):
        location, machine = _placed(name, lookup, "status", "loaded", with_reason=True)
        if index:
            out("")
        if location.note:
            out(f"Unit {name}: {location.note}")
        code = runner.run(machine, status_command(location.name), port)
        if code:
            return code
    return 0


def journal(
    name: str, lookup: Lookup, runner: Runner, port: int, *, lines: int, output: str, follow: bool, sudo: bool
) -> int:
    """``journalctl`` for the unit on its machine; returns journalctl's exit code."""
    location, machine = _placed(name, lookup, "journal", "running", with_reason=False)
    return runner.run(machine, journal_command(location.name, lines, output, follow, sudo), port)


def _placed(
    name: str, lookup: Lookup, what: str, state: str, *, with_reason: bool
) -> tuple[UnitLocation, MachineState]:
    """A unit that runs on one machine, and that machine; RemoteRefused with fleet's line otherwise."""
    location = lookup(name)
    if location is None:
        raise RemoteRefused(f"Unit {name} does not exist.")
    if location.is_global:
        raise RemoteRefused(f"Unable to retrieve {what} of global unit {name}.")
    if location.state is TargetState.INACTIVE or location.machine is None:
        why = f" No machine can run it: {location.reason}" if with_reason and location.reason else ""
        raise RemoteRefused(f"Unit {name} does not appear to be {state}.{why}")
    return location, location.machine


def _machine_by_prefix(prefix: str, machines: Sequence[MachineState]) -> MachineState:
    found = [machine for machine in machines if machine.id.startswith(prefix)]
    if len(found) > 1:
        raise RemoteRefused("Unable to proceed: found more than one machine")
    if not found:
        raise RemoteRefused("Unable to proceed: machine does not exist")
    return found[0]


def _machine_of_unit(name: str, lookup: Lookup) -> MachineState | None:
    location = lookup(name)
    if location is None:
        raise RemoteRefused("Unable to proceed: unit does not exist")
    if location.is_global:
        raise RemoteRefused("Unable to proceed: global units unsupported")
    return location.machine if location.state is not TargetState.INACTIVE else None


def _no_address() -> RemoteRefused:
    return RemoteRefused("Could not determine address of machine.")


def resolve_ssh_target(
    target: str, machine: str, unit: str, machines: Sequence[MachineState], lookup: Lookup
) -> MachineState:
    """Where ``fleetctl ssh`` goes: by ``--machine`` ID prefix, by ``--unit``, or ``target`` as either."""
    if machine and unit:
        raise RemoteRefused("Both machine and unit flags provided, please specify only one.")
    if machine:
        found: MachineState | None = _machine_by_prefix(machine, machines)
    elif unit:
        found = _machine_of_unit(unit, lookup)
    else:
        if not target:
            raise RemoteRefused("Unable to proceed: provide a machine or unit")
        try:
            by_unit: MachineState | None = _machine_of_unit(target, lookup)
            unit_error = False
        except RemoteRefused:
            by_unit, unit_error = None, True
        try:
            by_machine: MachineState | None = _machine_by_prefix(target, machines)
            machine_error = False
        except RemoteRefused:
            by_machine, machine_error = None, True
        if unit_error and machine_error:
            raise RemoteRefused("Unable to proceed: could not find matching unit or machine")
        if by_unit is not None and by_machine is not None and by_unit.public_ip and by_machine.public_ip:
            raise RemoteRefused(
                f"Unable to proceed: ambiguous argument, both machine and unit found for `{target}`.\n"
                "Please use flag `--machine` or `--unit` to refine the search"
            )
        found = by_unit if by_unit is not None else by_machine
    if found is None or not found.public_ip:
        raise _no_address()
    return found


def ssh(
    target: str,
    command: Sequence[str],
    *,
    machine: str,
    unit: str,
    machines: Sequence[MachineState],
    lookup: Lookup,
    runner: Runner,
    port: int,
    forward_agent: bool,
) -> int:
    """``fleetctl ssh``: run ``command`` (its words joined with spaces, for the remote shell to read) on the
    target, or a shell when it is empty."""
    found = resolve_ssh_target(target, machine, unit, machines, lookup)
    if command:
        return runner.run_ssh(found, command, port, forward_agent)
    return runner.shell(found, port, forward_agent)


class SSHRunner:
    """Runs commands on machines: locally when it is this machine, else over SSH (through the tunnel if set).

    Connections are opened on first use and reused (one handshake per machine, one to the tunnel host);
    ``close()`` closes them all.
    """

    def __init__(
        self,
        settings: SSHSettings,
        tunnel_host: str = "",
        *,
        local_id: str | None = None,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        stdin: BinaryIO | None = None,
        ask: Ask = ask_on_terminal,
        warn: Warn = warn_on_stderr,
    ) -> None:
        self._settings = settings
        self._tunnel_host = tunnel_host
        self._local_id = local_id
        self._stdout = stdout
        self._stderr = stderr
        self._stdin = stdin  # forwarded to `fleetctl ssh` commands only
        self._ask = ask
        self._warn = warn
        self._bastion: SSHConnection | None = None
        self._connections: dict[tuple[str, int], SSHConnection] = {}

    def _connection(self, address: str, port: int) -> SSHConnection:
        from fleetctl.ssh import tunnel  # noqa: PLC0415 (paramiko only for commands that really use SSH)

        key = (address, port)
        if key in self._connections:
            return self._connections[key]
        if self._tunnel_host:
            if self._bastion is None:
                host, tunnel_port = split_host_port(self._tunnel_host)
                self._bastion = tunnel.connect(
                    host, tunnel_port, self._settings, ask=self._ask, warn=self._warn
                )
            connection = self._bastion.hop(address, port)
        else:
            connection = tunnel.connect(address, port, self._settings, ask=self._ask, warn=self._warn)
        self._connections[key] = connection
        return connection

    def _is_local(self, machine: MachineState) -> bool:
        return self._local_id is not None and machine.id == self._local_id

    def run(self, machine: MachineState, argv: Sequence[str], port: int) -> int:
        if self._is_local(machine):
            try:
                return subprocess.run(
                    list(argv), stdout=self._stdout, stderr=self._stderr, check=False
                ).returncode
            except OSError as exc:
                raise TunnelError(f"cannot run {argv[0]} locally: {exc.strerror or exc}") from exc
        return self._remote(machine, quote_command(argv), port, self._settings.forward_agent, None)

    def run_ssh(self, machine: MachineState, argv: Sequence[str], port: int, forward_agent: bool) -> int:
        return self._remote(machine, ssh_command_line(argv), port, forward_agent, self._stdin)

    def _remote(
        self,
        machine: MachineState,
        command: str,
        port: int,
        forward_agent: bool,
        stdin: BinaryIO | None,
    ) -> int:
        connection = self._connection(_address(machine), port)
        return connection.run(
            command,
            stdout=self._stdout,
            stderr=self._stderr,
            stdin=stdin,
            forward_agent=forward_agent,
        )

    def shell(self, machine: MachineState, port: int, forward_agent: bool) -> int:
        return self._connection(_address(machine), port).shell(forward_agent=forward_agent)

    def terminal(self, machine: MachineState, command: str, port: int, forward_agent: bool) -> int:
        """``command`` (a shell command line) wired to this terminal, as ``shell`` is."""
        return self._connection(_address(machine), port).shell(forward_agent=forward_agent, command=command)

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        if self._bastion is not None:
            self._bastion.close()
            self._bastion = None

    def __enter__(self) -> SSHRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _address(machine: MachineState) -> str:
    if not machine.public_ip:
        raise RemoteRefused("Could not determine address of machine.")
    return machine.public_ip
