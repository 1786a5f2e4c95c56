"""fleetctl starts fast: SSH (paramiko), gRPC and D-Bus are imported only by the commands that use them."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_cli_loads_no_ssh_grpc_or_dbus() -> None:
    code = (
        "import sys, fleetctl.cli; "
        "print(' '.join(m for m in ('paramiko', 'grpc', 'dbus_fast') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
