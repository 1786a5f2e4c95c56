"""An https:// etcd through ``--tunnel``: TLS end to end with etcd's own name, client certificate included.

A test CA signs etcd's server certificate (for IP 127.0.0.1 only, so the tunnel's unix-socket target would
not match it without the original name) and a client certificate; etcd requires client certificates.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster.etcd import EtcdServer
from devcluster.sshd import SshServer
from fleetctl.connect import connect_etcd
from fleetctl.context import GlobalOptions
from fleetd.errors import RegistryUnavailable
from fleetd.model import MachineID, MachineState


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.write_bytes(pem)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _make_ca(directory: Path, common: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(_name(common))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert, _write_cert(cert, directory / f"{common}.pem")


def _issue(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, directory: Path, common: str, server: bool
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(san, critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return _write_cert(cert, directory / f"{common}.pem"), _write_key(key, directory / f"{common}.key")


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    ca_key, ca, ca_path = _make_ca(directory, "fleet-test-ca")
    server_cert, server_key = _issue(ca_key, ca, directory, "etcd", server=True)
    client_cert, client_key = _issue(ca_key, ca, directory, "fleetctl", server=False)
    return Pki(ca_path, server_cert, server_key, client_cert, client_key)


@pytest.fixture
def tls_etcd(pki: Pki) -> Iterator[str]:
    """A single etcd serving clients on https://127.0.0.1:PORT only, requiring client certificates."""
    server = EtcdServer()
    url = f"https://{server.host}:{server.client_port}"
    server.extra_args = (
        "--listen-client-urls", url,
        "--advertise-client-urls", url,
        "--cert-file", str(pki.server_cert),
        "--key-file", str(pki.server_key),
        "--trusted-ca-file", str(pki.ca),
        "--client-cert-auth",
    )  # fmt: skip
    server.launch()
    try:
        yield url
    finally:
        server.cleanup()


def _options(url: str, sshd: SshServer, tmp_path: Path, pki: Pki, **overrides: object) -> GlobalOptions:
    values: dict[str, object] = {
        "endpoints": (url,),
        "tunnel": f"{sshd.host}:{sshd.port}",
        "ca_file": str(pki.ca),
        "cert_file": str(pki.client_cert),
        "key_file": str(pki.client_key),
        "known_hosts_file": str(tmp_path / "known_hosts"),
        "strict_host_key_checking": False,
        "ssh_username": "root",
        "request_timeout": 2.0,
        "tunnel_idle": 1.0,
    }
    values.update(overrides)
    return GlobalOptions(**values)  # type: ignore[arg-type]


async def _register_and_list(options: GlobalOptions, deadline: float) -> tuple[MachineState, ...]:
    """Register one machine and list the machines, retrying while etcd starts."""
    machine = MachineState(MachineID("7" * 32), "10.0.0.7", {"role": "tls"})
    while True:
        try:
            async with connect_etcd(options) as client:
                lease = await client.registry.kv.grant(30)
                await client.registry.register_machine(machine, lease)
                return await client.machines()
        except RegistryUnavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


@pytest.fixture(autouse=True)
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Tunnel sessions (short idle time in these tests) put their sockets here."""
    with tempfile.TemporaryDirectory(prefix="fc-run-") as name:
        monkeypatch.setenv("XDG_RUNTIME_DIR", name)
        yield Path(name)


@pytest.mark.parametrize("reuse", [False, True], ids=["own connection", "tunnel session"])
def test_https_etcd_through_the_tunnel_keeps_tls_with_the_original_name(
    tmp_path: Path, sshd: SshServer, pki: Pki, tls_etcd: str, reuse: bool
) -> None:
    options = _options(tls_etcd, sshd, tmp_path, pki, tunnel_reuse=reuse)
    machines = asyncio.run(_register_and_list(options, time.monotonic() + 20))
    assert [(m.id, m.public_ip) for m in machines] == [("7" * 32, "10.0.0.7")]


def test_tunnel_refuses_an_etcd_certificate_from_another_ca(
    tmp_path: Path, sshd: SshServer, pki: Pki, tls_etcd: str
) -> None:
    asyncio.run(_register_and_list(_options(tls_etcd, sshd, tmp_path, pki), time.monotonic() + 20))  # up
    _, _, other_ca = _make_ca(tmp_path, "another-ca")
    options = _options(tls_etcd, sshd, tmp_path, pki, ca_file=str(other_ca))

    async def list_machines() -> None:
        async with connect_etcd(options) as client:
            await client.machines()

    with pytest.raises(RegistryUnavailable):
        asyncio.run(list_machines())
