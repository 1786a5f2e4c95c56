"""How the etcd adapter maps grpc failures (one place: ``fleetd.registry.etcd._map_error``)."""

from __future__ import annotations

import grpc
import pytest

from fleetd.errors import RegistryError, RegistryUnavailable
from fleetd.registry.etcd import _map_error


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


@pytest.mark.parametrize(
    ("code", "details", "unavailable"),
    [
        (grpc.StatusCode.UNAVAILABLE, "connection refused", True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "deadline", True),
        # grpc's own error for a write on a stream whose connection broke: etcd never saw the request
        (grpc.StatusCode.INTERNAL, "Internal error from Core", True),
        (grpc.StatusCode.INTERNAL, "etcdserver: something etcd refused", False),
        (grpc.StatusCode.INVALID_ARGUMENT, "etcdserver: key is not provided", False),
    ],
)
def test_transport_failures_are_unavailability_and_etcd_refusals_are_not(
    code: grpc.StatusCode, details: str, unavailable: bool
) -> None:
    mapped = _map_error(_rpc_error(code, details), "http://127.0.0.1:2379")
    assert isinstance(mapped, RegistryError)
    assert isinstance(mapped, RegistryUnavailable) is unavailable
