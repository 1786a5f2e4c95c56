"""The production connector: global options -> a FleetClient on real etcd (through ``--tunnel`` when set).

The one place that wires fleetctl's parts to the registry adapter: the client (fleetctl.client) knows only a
Registry, and the SSH side (fleetctl.ssh) only endpoints. Imported lazily by ``context`` so that commands
that do not reach the cluster (``version``, ``help``) load neither gRPC nor paramiko.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from typing import TYPE_CHECKING

from fleetctl.client import FleetClient
from fleetd.registry.registry import Registry

if TYPE_CHECKING:  # context imports this module (lazily) as its default connector
    from fleetctl.context import GlobalOptions

__all__ = ["connect_etcd"]


@contextmanager
def _tunnel(options: GlobalOptions) -> Iterator[tuple[str, ...]]:
    """``unix:`` endpoints through the tunnel: the reusable session's when allowed and usable, else this
    command's own SSH connection."""
    settings = options.ssh_settings(forward_agent=False)
    if options.tunnel_reuse:
        from fleetctl.ssh.reuse import shared_endpoints  # noqa: PLC0415

        idle = options.tunnel_idle
        with shared_endpoints(options.tunnel, options.endpoints, settings, idle=idle) as shared:
            if shared is not None:
                yield shared
                return
    from fleetctl.ssh.tunnel import tunneled_endpoints  # noqa: PLC0415 (paramiko only when tunnelling)

    with tunneled_endpoints(options.tunnel, options.endpoints, settings) as own:
        yield own


def _originals(forwarded: Sequence[str], endpoints: Sequence[str]) -> dict[str, str]:
    return dict(zip(forwarded, endpoints, strict=True))


@asynccontextmanager
async def connect_etcd(options: GlobalOptions) -> AsyncIterator[FleetClient]:
    """A client on real etcd at the global options' endpoints (TLS files and request timeout applied).

    With ``--tunnel`` every endpoint is reached through one SSH connection to the tunnel host (kept by a
    tunnel session for later commands unless ``--tunnel-reuse=false``), ``https://`` ones still over TLS
    with etcd's own name.
    """
    from fleetd.registry.etcd import EtcdKV  # noqa: PLC0415 (the gRPC import is slow; keep it lazy)

    with ExitStack() as stack:
        endpoints = options.endpoints
        forwarded: dict[str, str] = {}
        if options.tunnel:
            endpoints = stack.enter_context(_tunnel(options))
            forwarded = _originals(endpoints, options.endpoints)
        kv = EtcdKV(
            list(endpoints),
            request_timeout=options.request_timeout,
            ca_file=options.ca_file or None,
            cert_file=options.cert_file or None,
            key_file=options.key_file or None,
            username=options.username or None,
            password=options.password or None,
            forwarded=forwarded,
        )
        try:
            yield FleetClient(Registry(kv, options.etcd_key_prefix))
        finally:
            await kv.close()
