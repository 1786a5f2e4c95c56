"""The API's listener: sockets bound at start, the HTTP server (aiohttp) loaded at the first connection.

Run in a new interpreter: the test process has aiohttp loaded already."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fleetd.api.listen import SUN_PATH_MAX, bind_tcp, bind_unix

LAZY = r"""
import asyncio, os, sys
from fleetd.api.listen import ApiServer
from fleetd.registry.memory import MemoryKV
from fleetd.registry.registry import Registry

async def main(path):
    server = asyncio.create_task(
        ApiServer(Registry(MemoryKV(), "/fleet/"), socket_path=path, listen="", token_limit=100).run()
    )
    for _ in range(500):
        if os.path.exists(path):
            break
        await asyncio.sleep(0.01)
    print("before", "aiohttp" in sys.modules, "prometheus_client" in sys.modules)
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(b"GET /fleet/v1/machines HTTP/1.0\r\nHost: fleet\r\n\r\n")
    await writer.drain()
    print("status", (await asyncio.wait_for(reader.readline(), 30)).decode().strip())
    writer.close()
    print("after", "aiohttp" in sys.modules, "prometheus_client" in sys.modules)
    server.cancel()
    await asyncio.gather(server, return_exceptions=True)

asyncio.run(main(sys.argv[1]))
"""


def test_http_server_loads_at_the_first_connection(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", LAZY, str(tmp_path / "fleet.sock")],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert out.stdout.splitlines() == [
        "before False False",
        "status HTTP/1.0 200 OK",
        "after True False",  # the exposition library waits for a /metrics scrape
    ], out.stderr


def test_fleetd_imports_no_http_or_metrics_library() -> None:
    code = "import sys, fleetd.server; print(sorted({'aiohttp', 'prometheus_client'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def assert_serves_alone(sock: socket.socket, path: str) -> None:
    """``path`` accepts connections, has mode 0660, and no staging file is left beside it; closes ``sock``."""
    try:
        assert (Path(path).stat().st_mode & 0o777) == 0o660
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(path)
        probe.close()
        assert [p.name for p in Path(path).parent.iterdir()] == [Path(path).name]
    finally:
        sock.close()


def test_a_stale_socket_file_is_replaced_and_the_mode_is_0660(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.sock")
    bind_unix(path).close()  # left behind, as by a fleetd that was killed
    assert_serves_alone(bind_unix(path), path)


def test_the_socket_is_set_up_under_a_staging_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "fleet.sock")
    renamed: list[tuple[str, str]] = []
    real_rename = os.rename

    def rename(source: str, target: str) -> None:
        renamed.append((source, target))
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    assert_serves_alone(bind_unix(path), path)
    assert [(Path(source).parent, target) for source, target in renamed] == [(tmp_path, path)]


def test_a_path_with_no_room_for_a_staging_name_is_bound_in_place(tmp_path: Path) -> None:
    directory = tmp_path / ("d" * (SUN_PATH_MAX - 6 - len(str(tmp_path))))  # path fits, staging name not
    directory.mkdir()
    path = str(directory / "s")
    assert len(path) <= SUN_PATH_MAX < len(str(directory / f".{os.getpid():x}.sock~"))
    assert_serves_alone(bind_unix(path), path)


def test_a_file_that_is_not_a_socket_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "fleet.sock"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a socket"):
        bind_unix(str(path))
    assert path.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["fleet.sock"]


def test_a_taken_tcp_address_fails_at_start() -> None:
    first = socket.create_server(("127.0.0.1", 0))
    try:
        port = first.getsockname()[1]
        with pytest.raises(OSError):
            bind_tcp(f"127.0.0.1:{port}")
    finally:
        first.close()
