"""The collector's OPC UA certificates: make the client's, inspect and trust a server's.

A client certificate is a self-signed application instance certificate as OPC 10000-6
6.2.2 describes it (asyncua's cert_gen builds it): 2048-bit RSA, SHA-256, the application
URI and the host's DNS names / IP addresses in SubjectAltName, key usage for signing and
encryption, extended key usage clientAuth. asyncua reads DER or PEM certificates and a PEM
key; both certificate forms are written. Private files are 0600.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua import Client
from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KEY_BITS = 2048  # what Basic256Sha256 requires (2048-4096); cert_gen makes 2048
DEFAULT_DAYS = 3 * 365


@dataclass(frozen=True, slots=True)
class ClientFiles:
    """Where `make_client_certificate` wrote the certificate (DER and PEM) and the key."""

    certificate_der: Path
    certificate_pem: Path
    private_key: Path
    application_uri: str


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only (0600), whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, 0o600)


def alt_names(uri: str, names: list[str]) -> list[x509.GeneralName]:
    """SubjectAltName entries: the application URI first, then each name as IP or DNS."""
    out: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_client_certificate(folder: Path, uri: str, names: list[str] | None = None, *,
                            common_name: str = "dcim collector", days: int = DEFAULT_DAYS,
                            overwrite: bool = False) -> ClientFiles:
    """Write client_cert.der, client_cert.pem and client_key.pem (0600) into folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = ClientFiles(folder / "client_cert.der", folder / "client_cert.pem",
                        folder / "client_key.pem", uri)
    existing = [p for p in (files.certificate_der, files.certificate_pem, files.private_key)
                if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} exists: keep it, or remove it to make a new one")
    names = names if names is not None else [socket.gethostname()]
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key, common_name, {"organizationName": "dcim"}, alt_names(uri, names),
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH], days=days)
    _write_private(files.private_key, cert_gen.dump_private_key_as_pem(key))
    _write_private(files.certificate_der, cert.public_bytes(Encoding.DER))
    _write_private(files.certificate_pem, cert.public_bytes(Encoding.PEM))
    return files


def thumbprint(cert: x509.Certificate) -> str:
    """The OPC UA thumbprint: SHA-1 of the DER, lower-case hex."""
    return hashlib.sha1(cert.public_bytes(Encoding.DER), usedforsecurity=False).hexdigest()


def fingerprint(cert: x509.Certificate, algorithm: str) -> str:
    """SHA-256 or SHA-1 fingerprint as colon-separated upper-case hex."""
    digest = hashlib.new(algorithm, cert.public_bytes(Encoding.DER), usedforsecurity=False)
    return ":".join(f"{b:02X}" for b in digest.digest())


def application_uris(cert: x509.Certificate) -> list[str]:
    """The URIs in the certificate's SubjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(san.value.get_values_for_type(x509.UniformResourceIdentifier))


def describe(cert: x509.Certificate) -> list[str]:
    """Lines a person checks before trusting a certificate."""
    return [
        f"subject:     {cert.subject.rfc4514_string()}",
        f"issuer:      {cert.issuer.rfc4514_string()}",
        f"valid:       {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z to "
        f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z",
        f"application: {', '.join(application_uris(cert)) or '(no URI in SubjectAltName)'}",
        f"SHA-256:     {fingerprint(cert, 'sha256')}",
        f"SHA-1:       {fingerprint(cert, 'sha1')}",
    ]


def file_name(cert: x509.Certificate) -> str:
    """A file name for a certificate: its common name (if any) and thumbprint."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if names else "server"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in cn)[:40]
    return f"{safe}_{thumbprint(cert)[:16]}.der"


def trust(cert: x509.Certificate, trust_dir: Path) -> Path:
    """Copy a certificate (DER) into the trust folder; its path (kept if already there)."""
    trust_dir.mkdir(parents=True, exist_ok=True)
    path = trust_dir / file_name(cert)
    path.write_bytes(cert.public_bytes(Encoding.DER))
    return path


def rejected_dir(trust_dir: Path) -> Path:
    """Where refused server certificates are kept for inspection: beside the trust folder."""
    return trust_dir.resolve().parent / "rejected"


def save_rejected(cert: x509.Certificate, trust_dir: Path) -> Path:
    """Keep a refused server certificate as <trust_dir>/../rejected/<thumbprint>.der."""
    folder = rejected_dir(trust_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{thumbprint(cert)}.der"
    if not path.exists():
        path.write_bytes(cert.public_bytes(Encoding.DER))
    return path


async def server_certificates(url: str, timeout_s: float = 4.0) -> list[x509.Certificate]:
    """The distinct certificates a server puts in its endpoints (GetEndpoints, no security)."""
    client = Client(url, timeout=timeout_s)
    endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), timeout_s * 2)
    out: dict[bytes, x509.Certificate] = {}
    for endpoint in endpoints:
        der = endpoint.ServerCertificate
        if der and der not in out:
            out[der] = x509.load_der_x509_certificate(der)
    return list(out.values())
