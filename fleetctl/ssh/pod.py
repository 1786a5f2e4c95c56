"""``fleetctl ssh --pod UNIT``: which pod a unit runs, and the command that opens a shell in it (on its
machine).

A pod is a service whose ExecStart runs ``systemd-nspawn`` (deploy/examples/app-pod@.service,
boot-pod@.service). Its name in machined is the ``--machine=``/``-M`` of that command line, with the unit's
specifiers expanded (``--machine=app-%i`` in ``app-pod@1.service`` is ``app-1``); without one, systemd-nspawn
names the machine after its ``--directory=``/``--image=`` (last path component, ``.raw`` dropped), and so
does this. Two kinds, told apart by ``--boot``/``-b``:

- a booted pod runs its own systemd: ``machinectl shell NAME`` opens a login shell, and a command runs as
  ``systemd-run --machine=NAME --pipe --wait``, which passes the command's output and exit status back
  (``machinectl shell NAME CMD`` without a terminal drops both);
- an application pod (``--as-pid2`` or a plain command) has no systemd and no bus, so ``machinectl shell``
  refuses it ("There is no system bus in container"): the shell is ``nsenter --all`` into the namespaces of
  its leader, which ``machinectl show --property=Leader`` names.

``pod_of_unit`` and ``pod_command`` are pure: unit text in, a shell command line (every word ``shlex.quote``d)
out; ``ssh_pod`` runs that line on the unit's machine through a ``Runner``.
"""

from __future__ import annotations

import enum
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from fleetctl.ssh.remote import Lookup, RemoteRefused, Runner, ssh_command_line
from fleetd.errors import UnitFileError
from fleetd.model import TargetState
from fleetd.unitfile.names import UnitNameInfo
from fleetd.unitfile.unit import UnitFile

__all__ = ["Pod", "PodKind", "pod_command", "pod_of_unit", "ssh_pod"]

NSPAWN = "systemd-nspawn"
POD_SHELL = "/bin/sh"
# systemd-nspawn options whose value may follow as the next word (long form without "=", or short form);
# every other option is a flag, so the first word that is no option and no such value is the pod's command.
_VALUE_LONG = frozenset({
    "--directory", "--template", "--image", "--oci-bundle", "--machine", "--uuid", "--slice", "--property",
    "--user", "--chdir", "--setenv", "--bind", "--bind-ro", "--tmpfs", "--overlay", "--overlay-ro",
    "--inaccessible", "--network-interface", "--network-macvlan", "--network-ipvlan", "--network-veth-extra",
    "--network-bridge", "--network-zone", "--network-namespace-path", "--port", "--selinux-context",
    "--selinux-apifs-context", "--capability", "--drop-capability", "--kill-signal", "--link-journal",
    "--register", "--personality", "--notify-ready", "--console", "--pivot-root", "--resolv-conf",
    "--timezone", "--rlimit", "--oom-score-adjust", "--cpu-affinity", "--hostname", "--no-new-privileges",
    "--system-call-filter", "--settings", "--root-hash", "--root-hash-sig", "--verity-data",
    "--load-credential", "--set-credential", "--bind-user", "--private-users-ownership",
})
_VALUE_SHORT = frozenset("DMiuEpSZL")
_SPECIFIER = re.compile(r"%(.)")
_MAX_NAME = 64  # machined's limit on machine names (they are host names)


class PodKind(enum.Enum):
    BOOTED = "booted"  # systemd-nspawn --boot: the pod runs its own systemd
    APPLICATION = "application"  # one program (--as-pid2 or as PID 1), no systemd inside


@dataclass(frozen=True, slots=True)
class Pod:
    """A unit's pod: its machine name in machined and its kind."""

    name: str
    kind: PodKind


@dataclass
class _Options:
    machine: str = ""
    directory: str = ""
    image: str = ""
    boot: bool = False

    def take(self, option: str, value: str) -> None:
        if option in {"--machine", "M"}:
            self.machine = value
        elif option in {"--directory", "D"}:
            self.directory = value
        elif option in {"--image", "i"}:
            self.image = value


def _strip_prefixes(word: str) -> str:
    """ExecStart's own prefixes (``-``, ``@``, ``:``, ``+``, ``!``) off the program path."""
    return word.lstrip("-@:+!")


def _short_cluster(cluster: str, rest: list[str], found: _Options) -> None:
    """``-bM name`` / ``-Mname`` / ``-b``: flags, then at most one option whose value ends the cluster."""
    for index, letter in enumerate(cluster):
        if letter == "b":
            found.boot = True
        elif letter in _VALUE_SHORT:
            value = cluster[index + 1:] or (rest.pop(0) if rest else "")
            found.take(letter, value)
            return


def _nspawn_options(argv: list[str]) -> _Options:
    found = _Options()
    rest = argv[1:]
    while rest:
        word = rest.pop(0)
        if word == "--" or not word.startswith("-") or word == "-":
            break
        if word.startswith("--"):
            option, equals, value = word.partition("=")
            if option == "--boot":
                found.boot = True
            elif not equals and option in _VALUE_LONG:
                value = rest.pop(0) if rest else ""
            found.take(option, value)
        else:
            _short_cluster(word[1:], rest, found)
    return found


def _expand(value: str, unit: str) -> str:
    """The unit's specifiers in ``value``: %n %N %p %P %i %I and %%; any other is refused."""
    info = UnitNameInfo.parse(unit)
    if info is None:
        raise RemoteRefused(f"Unit {unit} has no type suffix: cannot tell its pod.")
    unescaped = re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), info.instance)
    table = {"n": info.full_name, "N": info.name, "p": info.prefix, "P": info.prefix, "i": info.instance,
             "I": unescaped.replace("-", "/"), "%": "%"}

    def one(match: re.Match[str]) -> str:
        letter = match.group(1)
        if letter not in table:
            raise RemoteRefused(
                f"Unit {unit}: cannot work out its pod's name from %{letter} in its systemd-nspawn line; "
                "give the pod a plain --machine= name."
            )
        return table[letter]

    return _SPECIFIER.sub(one, value)


def _default_name(found: _Options) -> str:
    """systemd-nspawn's own choice without --machine: the last component of the directory or image."""
    source = found.directory or found.image
    name = source.rstrip("/").rsplit("/", 1)[-1]
    return name.removesuffix(".raw") if found.image and not found.directory else name


def _nspawn_line(unit: str, body: str) -> list[str]:
    try:
        unit_file = UnitFile.from_text(body)
    except UnitFileError as exc:
        raise RemoteRefused(f"Unit {unit}: its unit file does not parse ({exc}).") from exc
    for option in unit_file.section_options("Service"):
        if option.name != "ExecStart":
            continue
        try:
            argv = shlex.split(option.value)
        except ValueError:
            continue
        if argv and _strip_prefixes(argv[0]).rsplit("/", 1)[-1] == NSPAWN:
            return argv
    raise RemoteRefused(
        f"Unit {unit} is not a pod: its ExecStart does not run {NSPAWN}; "
        f"fleetctl ssh {unit} opens a shell on its machine."
    )


def pod_of_unit(unit: str, body: str) -> Pod:
    """The pod that ``unit`` (with unit-file text ``body``) runs; RemoteRefused when it runs none or its
    machine name cannot be told."""
    found = _nspawn_options(_nspawn_line(unit, body))
    name = _expand(found.machine, unit) if found.machine else _expand(_default_name(found), unit)
    if not name or name in {".", ".."}:
        raise RemoteRefused(
            f"Unit {unit}: its {NSPAWN} line has no --machine= name (and no directory or image to take one "
            "from); give the pod one with --machine=."
        )
    if len(name) > _MAX_NAME or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise RemoteRefused(f"Unit {unit}: {name!r} is not a machine name machined accepts.")
    return Pod(name, PodKind.BOOTED if found.boot else PodKind.APPLICATION)


def pod_command(pod: Pod, command: str) -> str:
    """The shell command line, run on the pod's machine, that opens a shell in the pod (``command`` empty:
    interactive) or runs ``command`` there with the pod's own /bin/sh."""
    name = shlex.quote(pod.name)
    shell = [POD_SHELL, "-c", command] if command else [POD_SHELL]
    if pod.kind is PodKind.BOOTED:
        if not command:
            return f"machinectl shell {name}"
        run = ["systemd-run", f"--machine={pod.name}", "--quiet", "--wait", "--pipe", "--collect", "--",
               *shell]
        return " ".join(shlex.quote(word) for word in run)
    enter = " ".join(shlex.quote(word) for word in shell)
    return (
        f"leader=$(machinectl show --property=Leader --value {name}) && "
        f'exec nsenter --target "$leader" --all -- {enter}'
    )


def ssh_pod(
    unit: str,
    body: str | None,
    words: Sequence[str],
    *,
    lookup: Lookup,
    runner: Runner,
    port: int,
    forward_agent: bool,
) -> int:
    """``fleetctl ssh --pod UNIT [COMMAND...]``: a shell in the unit's pod, or COMMAND (its words joined with
    spaces, as ``fleetctl ssh`` does) run by the pod's /bin/sh, on the machine that runs the unit."""
    location = lookup(unit)
    if location is None or body is None:
        raise RemoteRefused(f"Unit {unit} does not exist.")
    if location.is_global:
        raise RemoteRefused(
            f"Unit {unit} is global: pick its machine with fleetctl ssh MACHINE machinectl shell POD."
        )
    pod = pod_of_unit(unit, body)
    if location.state is not TargetState.LAUNCHED or location.machine is None:
        raise RemoteRefused(
            f"Unit {unit} is not running, so neither is its pod {pod.name}: fleetctl start it first."
        )
    line = pod_command(pod, ssh_command_line(words))
    if words:
        return runner.run_ssh(location.machine, [line], port, forward_agent)
    return runner.terminal(location.machine, line, port, forward_agent)
