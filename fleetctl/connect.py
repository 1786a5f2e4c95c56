"""The production connector: global options -> a FleetClient on real etcd (through ``--tunnel`` when set).

The one place that wires fleetctl's parts to the registry adapter: the client (fleetctl.client) knows only a
Registry, and the SSH side (fleetctl.ssh) only endpoints. Imported lazily by ``context`` so that commands
that do not reach the cluster (``version``, ``help``) load neither gRPC nor paramiko.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fleetctl.client import FleetClient
from fleetd.registry.registry import Registry

if TYPE_CHECKING:  # context imports this module (lazily) as its default connector
    from fleetctl.context import GlobalOptions

__all__ = ["connect_etcd", "tunnel_channel_factory"]

DEFAULT_ETCD_PORT = 2379


def tunnel_channel_factory(
    originals: Mapping[str, str], ca_file: str, cert_file: str, key_file: str
) -> Callable[[str], Any]:
    """gRPC channels for tunnelled endpoints: ``originals`` maps each ``unix:`` endpoint of the tunnel to the
    etcd endpoint it reaches. An ``https://`` original keeps TLS end to end through the tunnel: the channel
    verifies etcd's certificate against the CA file for the original host name (and sends the original
    authority), and presents the client certificate; an ``http://`` original is a plain channel, as direct.

    gRPC is imported here, not in fleetd's adapter, because only the tunnel needs a TLS channel whose target
    (a unix socket) is not the name on the certificate.
    """
    import grpc  # noqa: PLC0415 (only commands that reach etcd load gRPC)
    import grpc.aio  # noqa: PLC0415

    from fleetd.registry.etcd import _CHANNEL_OPTIONS  # noqa: PLC0415 (the same keep-alives as direct)

    def make(endpoint: str) -> grpc.aio.Channel:
        url = urlsplit(originals.get(endpoint, ""))
        if url.scheme != "https":
            return grpc.aio.insecure_channel(endpoint, options=_CHANNEL_OPTIONS)
        host = url.hostname or ""
        authority = url.netloc.rpartition("@")[2] or f"{host}:{DEFAULT_ETCD_PORT}"
        ca, cert, key = (Path(path).read_bytes() if path else None for path in (ca_file, cert_file, key_file))
        creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
        options = [
            *_CHANNEL_OPTIONS,
            ("grpc.ssl_target_name_override", host),
            ("grpc.default_authority", authority),
        ]
        return grpc.aio.secure_channel(endpoint, creds, options=options)

    return make


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
        factory = None
        if options.tunnel:
            endpoints = stack.enter_context(_tunnel(options))
            factory = tunnel_channel_factory(
                _originals(endpoints, options.endpoints), options.ca_file, options.cert_file, options.key_file
            )
        kv = EtcdKV(
            list(endpoints),
            request_timeout=options.request_timeout,
            ca_file=options.ca_file or None,
            cert_file=options.cert_file or None,
            key_file=options.key_file or None,
            username=options.username or None,
            password=options.password or None,
            channel_factory=factory,
        )
        try:
            yield FleetClient(Registry(kv, options.etcd_key_prefix))
        finally:
            await kv.close()
