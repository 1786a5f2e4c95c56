"""Cold processes as an installed fleetctl runs them: with the project's bytecode compiled and used.

``pip install`` byte-compiles a package's modules, so an installed ``fleetctl`` loads ``.pyc`` files. A
checkout run with ``PYTHONDONTWRITEBYTECODE`` set (some shells and CI images set it) compiles every
project module from source in every new process: about 40 ms more per command, measured. Cold-process
benchmarks compile once with ``compileall`` and run their children without that variable.
"""

from __future__ import annotations

import compileall
import os
from pathlib import Path

__all__ = ["installed_env"]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fleetd", "fleetctl")


def installed_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """``base`` (default: this process's environment) for a child that uses compiled bytecode; compiles
    the project's packages first (quietly; up to date files are skipped)."""
    for package in PACKAGES:
        compileall.compile_dir(str(ROOT / package), quiet=1)
    env = dict(os.environ if base is None else base)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env
