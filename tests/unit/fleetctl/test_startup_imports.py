"""fleetctl starts fast: SSH (paramiko), gRPC and D-Bus are imported only by the commands that use them;
its modules import no circle; and it ends fast (its objects frozen before the interpreter's teardown)."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from fleetctl.cli import COMMAND_MODULES


def test_importing_the_cli_loads_no_ssh_grpc_or_dbus() -> None:
    code = (
        "import sys, fleetctl.cli; "
        "print(' '.join(m for m in ('paramiko', 'grpc', 'dbus_fast') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


@pytest.mark.parametrize("command", ["version", "help"])
def test_version_and_help_load_no_command_module_client_or_asyncio(command: str) -> None:
    code = (
        "import sys\n"
        "from fleetctl.cli import main\n"
        "try:\n"
        f"    main([{command!r}])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('asyncio', 'fleetctl.client', 'fleetd.registry', 'fleetctl.commands.units',\n"
        "         'fleetctl.ssh.remote', 'fleetctl.ssh.tunnel')\n"
        "print(' '.join(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.strip() == ""


def test_the_command_list_matches_each_commands_own_help() -> None:
    for name, (module_name, short) in COMMAND_MODULES.items():
        module = importlib.import_module(module_name)
        command = {command.name: command for command in module.COMMANDS}[name]
        assert command.help is not None
        assert " ".join(command.help.split("\n\n")[0].split()) == short, name
    loaded = {
        command.name
        for module_name, _ in set(COMMAND_MODULES.values())
        for command in importlib.import_module(module_name).COMMANDS
    }
    assert loaded == set(COMMAND_MODULES)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """fleetctl modules ``path`` imports at run time (anywhere in it; not under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(sub)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for sub in ast.walk(node)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    return found


def test_fleetctl_modules_import_no_circle() -> None:
    root = Path(__file__).resolve().parents[3]
    paths = {
        ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (root / "fleetctl").rglob("*.py")
    }
    graph = {name: _imports(path, set(paths)) - {name} for name, path in paths.items()}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            current = todo.pop()
            if current == goal:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(graph[current])
        return False

    circles = sorted(f"{a} <-> {b}" for a in graph for b in graph[a] if reaches(b, a))
    assert circles == []


def test_list_units_loads_neither_ssh_nor_the_other_commands_nor_the_daemons_parts() -> None:
    """The path of a cold ``fleetctl list-units`` (here against a closed port: it reads nothing, but imports
    all it would): the list commands, the client and gRPC, and nothing it does not use."""
    code = (
        "import sys\n"
        "from fleetctl.cli import main\n"
        "try:\n"
        "    main(['--endpoint', 'http://127.0.0.1:1', '--request-timeout', '1', 'list-units'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert {"fleetctl.commands.list", "fleetd.registry.etcd", "grpc"} <= loaded, result.stderr
    unused = {
        "paramiko", "aiohttp", "prometheus_client", "dbus_fast", "fleetctl.ssh.config", "fleetctl.ssh.tunnel",
        "fleetctl.ssh.reuse", "fleetctl.ssh.remote", "fleetd.engine", "fleetd.agent", "fleetd.api",
        "fleetd.metrics", "fleetd.server", "fleetd.systemd", "fleetd.config", "fleetctl.ssh.session",
        "fleetctl.rollout", "fleetctl.verify",
        *{module for module, _ in COMMAND_MODULES.values()} - {"fleetctl.commands.list"},
    }  # fmt: skip
    assert sorted(loaded & unused) == []


def test_the_process_freezes_its_objects_before_the_interpreter_tears_them_down() -> None:
    code = (
        "import atexit, gc, sys\n"
        "from fleetctl.cli import main\n"
        "atexit.register(lambda: print(gc.get_freeze_count() > 0, file=sys.stderr))  # runs after main's\n"
        "print(gc.get_freeze_count() > 0, file=sys.stderr)\n"
        "main(['version'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.split() == ["False", "True"]
