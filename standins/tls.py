"""Certificates for 127.0.0.1, so a stand-in can serve HTTPS on loopback: self-signed, or signed by a
private CA of the test's own."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LOOPBACK = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])


def _certificate(subject: str, key: Any, issuer: x509.Name | None, issuer_key: Any, *extensions: Any) -> Any:
    """A certificate valid for a day, signed by the issuer (itself when issuer is None); each extension is
    (extension, critical). Key identifiers always: Python 3.13 verifies strictly (VERIFY_X509_STRICT)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _server_context(cert: Any, key: Any, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return context


def self_signed(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """(the certificate file a client can trust, the server's SSL context); the key is beside the certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _certificate("127.0.0.1", key, None, key, (LOOPBACK, False), (x509.BasicConstraints(True, None), True))
    cert_file = directory / "standin-cert.pem"
    return cert_file, _server_context(cert, key, cert_file, directory / "standin-key.pem")


def certificate_authority(name: str = "Test CA") -> tuple[str, Any, Any]:
    """A private CA, as an enterprise runs for its own servers: (its certificate as PEM text, its key,
    its certificate)."""
    key = ec.generate_private_key(ec.SECP256R1())
    signs_certificates = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
    cert = _certificate(name, key, None, key, (x509.BasicConstraints(True, 0), True), (signs_certificates, True))
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key, cert


def signed_by(ca: tuple[str, Any, Any], directory: Path) -> ssl.SSLContext:
    """A server context for 127.0.0.1 whose certificate the CA signed."""
    _, ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    server_auth = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH])
    cert = _certificate(
        "bitbucket.internal.example", key, ca_cert.subject, ca_key,
        (LOOPBACK, False), (x509.BasicConstraints(False, None), True), (server_auth, False),
    )  # fmt: skip
    return _server_context(cert, key, directory / "server-cert.pem", directory / "server-key.pem")
