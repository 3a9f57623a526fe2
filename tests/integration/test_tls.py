"""gRPC over TLS: the embedded tritonserver with ``--grpc-use-ssl`` and the SDK with the CA.

The test makes its own CA, a server certificate for 127.0.0.1/localhost and a client
certificate (for mutual TLS) in a temporary folder; nothing leaves loopback.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from omniface.aio import AsyncClient
from omniface.client import Client
from omniface.errors import ServerUnavailable

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _key():
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, *, cert=None, key=None) -> Path:
    from cryptography.hazmat.primitives import serialization

    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return path


def _ca(name: str):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _leaf(ca_cert, ca_key, name: str, server: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(ca_key, hashes.SHA256()), key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    pytest.importorskip("cryptography", reason="the test makes its certificates with cryptography")
    folder = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key = _ca("omniface test CA")
    server_cert, server_key = _leaf(ca_cert, ca_key, "omniface test server", server=True)
    client_cert, client_key = _leaf(ca_cert, ca_key, "omniface test client", server=False)
    other_cert, _ = _ca("some other CA")
    return Pki(
        ca=_write(folder / "ca.pem", cert=ca_cert),
        server_cert=_write(folder / "server.pem", cert=server_cert),
        server_key=_write(folder / "server.key", key=server_key),
        client_cert=_write(folder / "client.pem", cert=client_cert),
        client_key=_write(folder / "client.key", key=client_key),
        other_ca=_write(folder / "other-ca.pem", cert=other_cert),
    )


def _tls_server(model_repository: Path, pki: Pki, folder: Path, mutual: bool):
    pytest.importorskip("pytriton", reason="the embedded server needs the 'serve' extra (nvidia-pytriton)")
    from omniface.server import EmbeddedServer, free_port

    flags = [
        "--grpc-use-ssl=true",
        f"--grpc-server-cert={pki.server_cert}",
        f"--grpc-server-key={pki.server_key}",
        f"--grpc-root-cert={pki.ca}",
    ]
    if mutual:
        flags.append("--grpc-use-ssl-mutual=true")
    return EmbeddedServer(
        model_repository=model_repository, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(),
        log_path=folder / "tritonserver.log", extra_args=flags,
    )


@pytest.fixture(scope="module")
def tls_server(model_repository: Path, pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    with _tls_server(model_repository, pki, tmp_path_factory.mktemp("tls"), mutual=False) as server:
        yield server


@pytest.fixture(scope="module")
def reference(triton_server, astronaut: np.ndarray):
    """The same frame through the plaintext server of the session."""
    with Client(triton_server.grpc_url, timeout=60.0) as client:
        return client.analyze(astronaut)


def test_tls_client_with_the_ca_gets_the_same_results(tls_server, pki: Pki, astronaut: np.ndarray, reference) -> None:
    with Client(tls_server.grpc_url, ssl=True, root_certificates=str(pki.ca), timeout=60.0) as client:
        assert client.is_ready()
        assert client.analyze(astronaut) == reference
    # the grpcs:// scheme turns TLS on by itself
    with Client(f"grpcs://localhost:{tls_server.grpc_port}", root_certificates=pki.ca, timeout=60.0) as client:
        assert client.analyze(astronaut) == reference


async def test_async_tls_client(tls_server, pki: Pki, astronaut: np.ndarray, reference) -> None:
    async with AsyncClient(tls_server.grpc_url, ssl=True, root_certificates=str(pki.ca), timeout=60.0) as client:
        assert await client.is_ready()
        assert await client.analyze(astronaut) == reference


def test_plaintext_client_is_refused(tls_server, astronaut: np.ndarray) -> None:
    with Client(tls_server.grpc_url, retries=0, timeout=10.0) as client:
        assert client.is_ready() is False
        with pytest.raises(ServerUnavailable, match="ssl"):
            client.analyze(astronaut)


@pytest.mark.parametrize("ca", ["system", "other"])
def test_untrusted_server_certificate_is_refused(tls_server, pki: Pki, astronaut: np.ndarray, ca: str) -> None:
    # the system CAs, or another CA, did not sign the test server's certificate
    root = None if ca == "system" else str(pki.other_ca)
    with Client(tls_server.grpc_url, ssl=True, root_certificates=root, retries=0, timeout=10.0) as client:
        assert client.is_ready() is False
        with pytest.raises(ServerUnavailable):
            client.analyze(astronaut)


def test_mutual_tls_needs_the_client_certificate(model_repository: Path, pki: Pki, astronaut: np.ndarray,
                                                 reference, tmp_path: Path) -> None:
    with _tls_server(model_repository, pki, tmp_path, mutual=True) as server:
        with Client(server.grpc_url, ssl=True, root_certificates=str(pki.ca), private_key=str(pki.client_key),
                    certificate_chain=str(pki.client_cert), timeout=60.0) as client:
            assert client.analyze(astronaut) == reference
        with Client(server.grpc_url, ssl=True, root_certificates=str(pki.ca), retries=0, timeout=10.0) as anonymous:
            with pytest.raises(ServerUnavailable):
                anonymous.analyze(astronaut)
        with Client(server.grpc_url, retries=0, timeout=10.0) as plaintext:
            with pytest.raises(ServerUnavailable):
                plaintext.analyze(astronaut)
