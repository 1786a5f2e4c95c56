"""The pure core imports no I/O: no etcd, D-Bus, SSH, clock, logging, threads, sockets or os."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PURE = [
    "fleetd/model.py",
    "fleetd/errors.py",
    "fleetd/glob.py",
    "fleetd/metadata.py",
    "fleetd/unitfile",
    "fleetd/engine/placement.py",
    "fleetd/engine/plan.py",
    "fleetd/engine/unblocked.py",
    "fleetd/agent/plan.py",
    "fleetd/registry/keyspace.py",
    "fleetd/registry/records.py",
    "fleetctl/rollout.py",
    "fleetd/registry/snapshot.py",
    "fleetd/registry/kv.py",
    "fleetd/registry/txn.py",
    "fleetctl/output.py",
    "fleetctl/ssh/known_hosts.py",
]

FORBIDDEN = {
    "asyncio", "datetime", "grpc", "dbus_fast", "logging", "os", "paramiko", "random", "select",
    "shutil", "socket", "subprocess", "sys", "tempfile", "threading", "time", "pathlib", "io",
}


def _files() -> list[Path]:
    out: list[Path] = []
    for entry in PURE:
        path = ROOT / entry
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.exists() else [])
    return out


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_pure_fleet_module(name: str) -> bool:
    rel = name.replace(".", "/")
    return any(rel == p.removesuffix(".py") or rel.startswith(p + "/") for p in PURE)


@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_module_imports_no_io(path: Path) -> None:
    for name in _imports(path):
        top = name.split(".")[0]
        assert top not in FORBIDDEN, f"{path.name} imports {name}"
        if top in {"fleetd", "fleetctl"}:
            assert _is_pure_fleet_module(name), f"{path.name} imports the impure module {name}"


def test_the_pure_list_is_not_empty() -> None:
    assert len(_files()) >= 3


# Arrows run one way: the engine and the agent build on the registry, never the reverse (nor fleetctl).
LAYERS = {
    "fleetd/registry": ("fleetd.engine", "fleetd.agent", "fleetd.server", "fleetctl"),
    "fleetd/model.py": ("fleetd.engine", "fleetd.agent", "fleetd.registry", "fleetd.server", "fleetctl"),
}


def _all_imports(path: Path) -> set[str]:
    """Every module named by an import anywhere in the file (also inside functions or TYPE_CHECKING)."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize(
    ("path", "forbidden"),
    [
        (path, forbidden)
        for entry, forbidden in LAYERS.items()
        for path in (sorted((ROOT / entry).rglob("*.py")) if (ROOT / entry).is_dir() else [ROOT / entry])
    ],
    ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else "",
)
def test_lower_layers_do_not_import_higher_ones(path: Path, forbidden: tuple[str, ...]) -> None:
    for name in _all_imports(path):
        for layer in forbidden:
            assert name != layer and not name.startswith(layer + "."), f"{path.name} imports {name}"


def test_the_layered_list_is_not_empty() -> None:
    assert len(list((ROOT / "fleetd/registry").glob("*.py"))) >= 5
