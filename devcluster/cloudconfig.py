"""Render the cloud-config files of deploy/cloud-config and read back what they would write on a node."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

__all__ = ["CLOUD_CONFIG_DIR", "WrittenFile", "placeholders", "render", "written_files"]

CLOUD_CONFIG_DIR = Path(__file__).resolve().parents[1] / "deploy" / "cloud-config"
_PLACEHOLDER = re.compile(r"__[A-Z][A-Z_]*[A-Z]__")


@dataclass(frozen=True, slots=True)
class WrittenFile:
    path: str
    content: str
    permissions: int


def placeholders(text: str) -> frozenset[str]:
    """The ``__NAME__`` placeholders a cloud-config text still contains."""
    return frozenset(_PLACEHOLDER.findall(text))


def render(name: str, values: Mapping[str, str]) -> str:
    """The text of ``deploy/cloud-config/<name>`` with every placeholder replaced by ``values[NAME]``."""
    text = (CLOUD_CONFIG_DIR / name).read_text()
    missing = sorted(p.strip("_") for p in placeholders(text) - {f"__{k}__" for k in values})
    # Placeholders named only in comments need no value.
    needed = [m for m in missing if f"__{m}__" in _strip_comments(text)]
    if needed:
        raise ValueError(f"{name}: no value for placeholder(s) {', '.join(needed)}")
    for key, value in values.items():
        text = text.replace(f"__{key}__", value)
    return text


def written_files(rendered: str) -> dict[str, WrittenFile]:
    """The ``write_files`` entries of a rendered cloud-config, by path."""
    doc = yaml.safe_load(rendered)
    out: dict[str, WrittenFile] = {}
    for entry in doc.get("write_files", []):
        perms = int(str(entry.get("permissions", "0644")), 8)
        out[entry["path"]] = WrittenFile(entry["path"], entry.get("content", ""), perms)
    return out


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
