"""Certificates and security settings of the OPC UA simulator, and a PKI for tests.

The server offers Basic256Sha256 Sign and/or SignAndEncrypt with its own certificate and
accepts a client certificate only if it is in the server's trust folder (asyncua accepts
any certificate unless a validator is set). Certificates are DER, keys PEM.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import shutil
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from asyncua import ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server.user_managers import UserManager
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

log = logging.getLogger(__name__)
SERVER_APP_URI = "urn:dcim:simulator:opcua"
TEST_CLIENT_APP_URI = "urn:dcim:test:opcua-client"
SecureMode = Literal["Sign", "SignAndEncrypt"]
# Time, application URI in the SAN, and presence in the trust folder (or signed by a CA there).
VALIDATION = (CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
              | CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.REVOKED)
_SUBJECT = {"organizationName": "dcim", "countryName": "HK"}


@dataclass(frozen=True, slots=True)
class ServerSecurity:
    """What the simulator offers: secure modes, its certificate, whom it trusts, users."""

    certificate: Path
    private_key: Path
    trust_dir: Path
    modes: tuple[SecureMode, ...] = ("SignAndEncrypt",)
    # Also offer NoSecurity. asyncua checks any certificate a client sends, even on a None
    # channel, so a None client presenting an untrusted certificate is refused as well.
    allow_none: bool = False
    users: Mapping[str, str] | None = field(default=None, repr=False)
    application_uri: str = SERVER_APP_URI

    def policies(self) -> list[ua.SecurityPolicyType]:
        """The asyncua endpoint policies to offer."""
        out = [ua.SecurityPolicyType.NoSecurity] if self.allow_none else []
        if "Sign" in self.modes:
            out.append(ua.SecurityPolicyType.Basic256Sha256_Sign)
        if "SignAndEncrypt" in self.modes:
            out.append(ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt)
        return out

    @classmethod
    async def in_folder(cls, folder: Path, trust_dir: Path | None = None,
                        **options: Any) -> ServerSecurity:
        """Security with a server certificate generated into folder (kept if still valid)."""
        folder.mkdir(parents=True, exist_ok=True)
        uri = options.get("application_uri", SERVER_APP_URI)
        cert, key = folder / "server_cert.der", folder / "server_key.pem"
        await cert_gen.setup_self_signed_certificate(
            key, cert, uri, socket.gethostname(), [ExtendedKeyUsageOID.SERVER_AUTH],
            {**_SUBJECT, "commonName": "dcim BMS simulator"})
        trust = trust_dir or folder / "trusted"
        trust.mkdir(parents=True, exist_ok=True)
        return cls(certificate=cert, private_key=key, trust_dir=trust, **options)


async def certificate_validator(trust_dir: Path, *, peer: Literal["client", "server"] = "client"
                                ) -> CertificateValidator:
    """A validator that rejects certificates not in trust_dir (for a server or a client)."""
    store = TrustStore([trust_dir], [])
    try:
        await store.load()
    except ValueError:  # no certificate in the folder: the empty store trusts nobody
        log.warning("trust folder %s holds no certificates: every peer is rejected", trust_dir)
    role = CertificateValidatorOptions.PEER_CLIENT if peer == "client" \
        else CertificateValidatorOptions.PEER_SERVER
    return CertificateValidator(VALIDATION | role, store)


class PasswordUserManager(UserManager):
    """Username/password check (constant-time); anonymous and unknown users are refused."""

    def __init__(self, users: Mapping[str, str]) -> None:
        self._users = dict(users)

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None,
                 certificate: Any = None) -> User | None:
        """The user if the password matches, else None (the server answers BadUserAccessDenied)."""
        expected = self._users.get(username or "")
        if expected is None or password is None:
            return None
        if not hmac.compare_digest(expected.encode(), password.encode()):
            return None
        return User(role=UserRole.User, name=username)


@dataclass(frozen=True, slots=True)
class CertPair:
    """A certificate (DER, or PEM when asked) and its private key (PEM)."""

    certificate: Path
    private_key: Path
    application_uri: str


def issue_certificate(folder: Path, name: str, application_uri: str, *,
                      server: bool = False, pem: bool = False) -> CertPair:
    """Write a self-signed application certificate and key (asyncua cert_gen) to folder."""
    folder.mkdir(parents=True, exist_ok=True)
    key = cert_gen.generate_private_key()
    alt_names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri), x509.DNSName(socket.gethostname()),
        x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    use = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = cert_gen.generate_self_signed_app_certificate(
        key, name, _SUBJECT, alt_names, extended=[use], days=365)
    cert_path = folder / f"{name}_cert.{'pem' if pem else 'der'}"
    cert_path.write_bytes(cert.public_bytes(Encoding.PEM if pem else Encoding.DER))
    key_path = folder / f"{name}_key.pem"
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return CertPair(cert_path, key_path, application_uri)


@dataclass(frozen=True, slots=True)
class TestPki:
    """Server and client certificates for tests: one client trusted, one not."""

    __test__ = False  # not a pytest test class

    server: CertPair
    client: CertPair
    untrusted: CertPair
    server_trust_dir: Path  # client certificates the server trusts
    client_trust_dir: Path  # server certificates the clients trust

    def server_security(self, **options: Any) -> ServerSecurity:
        """ServerSecurity over this PKI (options: modes, allow_none, users)."""
        return ServerSecurity(certificate=self.server.certificate,
                              private_key=self.server.private_key,
                              trust_dir=self.server_trust_dir,
                              application_uri=self.server.application_uri, **options)

    def trust_client(self, certificate: Path) -> None:
        """Add a client certificate to the server's trust folder (before the server starts)."""
        shutil.copy(certificate, self.server_trust_dir / certificate.name)


def make_test_pki(folder: Path) -> TestPki:
    """Generate a server, a trusted client and an untrusted client certificate in folder."""
    folder = Path(folder)
    server = issue_certificate(folder / "server", "server", SERVER_APP_URI, server=True)
    client = issue_certificate(folder / "client", "client", TEST_CLIENT_APP_URI)
    untrusted = issue_certificate(folder / "untrusted", "untrusted", TEST_CLIENT_APP_URI)
    server_trust, client_trust = folder / "server_trusts", folder / "client_trusts"
    server_trust.mkdir(parents=True, exist_ok=True)
    client_trust.mkdir(parents=True, exist_ok=True)
    shutil.copy(client.certificate, server_trust / client.certificate.name)
    shutil.copy(server.certificate, client_trust / server.certificate.name)
    return TestPki(server, client, untrusted, server_trust, client_trust)
