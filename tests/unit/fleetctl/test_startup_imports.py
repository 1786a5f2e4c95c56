"""fleetctl starts fast: SSH (paramiko), gRPC and D-Bus are imported only by the commands that use them;
and its modules import no circle."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


def test_importing_the_cli_loads_no_ssh_grpc_or_dbus() -> None:
    code = (
        "import sys, fleetctl.cli; "
        "print(' '.join(m for m in ('paramiko', 'grpc', 'dbus_fast') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


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
