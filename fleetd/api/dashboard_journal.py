"""fleetd's journal source for the dashboard: the journal of a unit on this machine, read with journalctl.

A unit on another machine is answered with where to look instead: fleetd does not reach into other machines
(``fleetctl dashboard`` reads any unit's journal over SSH, as ``fleetctl journal`` does).
"""

from __future__ import annotations

import asyncio
import contextlib

from fleetd.api.dashboard import Journal, JournalSource
from fleetd.api.dashboard_feed import DashboardFeed
from fleetd.model import UnitName

__all__ = ["JOURNALCTL_TIMEOUT", "local_journal"]

JOURNALCTL_TIMEOUT = 10.0


def local_journal(feed: DashboardFeed, machine_id: str) -> JournalSource:
    async def source(name: str, lines: int) -> Journal:
        async with feed.hold():
            unit = feed.view.unit_json(UnitName(name))
        if unit is None:
            return Journal(message=f"unit {name} does not exist")
        if unit.get("global") or unit.get("machine") != machine_id:
            return Journal(
                message="this fleetd shows the journals of its own machine's units only: use `fleetctl"
                f" dashboard` or `fleetctl journal {name}`"
            )
        return await _journalctl(name, lines)

    return source


async def _journalctl(name: str, lines: int) -> Journal:
    argv = ("journalctl", f"--unit={name}", "--no-pager", "-n", str(lines), "--output=short")
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        return Journal(message=f"cannot run journalctl: {exc.strerror or exc}")
    try:
        async with asyncio.timeout(JOURNALCTL_TIMEOUT):
            out, err = await process.communicate()
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()
        return Journal(message=f"journalctl did not answer within {JOURNALCTL_TIMEOUT:g}s")
    if process.returncode:
        return Journal(message=f"journalctl failed: {err.decode(errors='replace').strip()}")
    return Journal(lines=tuple(out.decode(errors="replace").splitlines()))
