"""Ports for test servers: free, and outside the range outgoing connections take theirs from."""

from __future__ import annotations

import socket

import pytest

from devcluster.etcd import PORTS_FROM, EtcdServer, _ephemeral_low, free_port


def test_free_ports_are_bindable_and_below_the_ephemeral_range() -> None:
    low = _ephemeral_low()
    ports = [free_port() for _ in range(20)]
    assert all(PORTS_FROM <= port < low for port in ports), ports
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", ports[0]))


def test_an_etcd_that_exits_at_start_reports_its_exit() -> None:
    server = EtcdServer(binary="/bin/false")  # exits at once, as etcd does when its port is taken
    try:
        with pytest.raises(RuntimeError, match="etcd exited with 1"):
            server.start()
        assert server.pid is None
    finally:
        server.cleanup()
