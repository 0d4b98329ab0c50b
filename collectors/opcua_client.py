"""Opening an asyncua client for a gateway: security policy, server trust check, user.

With a secure policy the server's certificate is taken from its endpoint list and checked
against the gateway's `trust_dir` (validity period, application URI, presence in the
folder) BEFORE a secure channel is opened; a server whose certificate is not there is
refused with UntrustedServer. The same validator runs again at CreateSession, where
asyncua also checks that the session's certificate is the endpoint's.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import Client, ua
from asyncua.crypto import uacrypto
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.ua.uaerrors import UaError
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from dcim.collectors.opcua_nodes import status_name
from dcim.collectors.opcua_pki import save_rejected, thumbprint

from dcim.config.site import OpcuaGateway

log = logging.getLogger(__name__)

SERVER_CHECKS = (CertificateValidatorOptions.TIME_RANGE | CertificateValidatorOptions.URI
                 | CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.REVOKED
                 | CertificateValidatorOptions.PEER_SERVER)
DEFAULT_APPLICATION_URI = "urn:dcim:collector:opcua"
POLICIES = {"Basic256Sha256": SecurityPolicyBasic256Sha256}
MODES = {"Sign": ua.MessageSecurityMode.Sign,
         "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt}

LostCallback = Callable[[Exception], Coroutine[Any, Any, None]]


class UntrustedServer(Exception):
    """The server's certificate is not in the trust folder (or is invalid): not connected."""


class ChannelRefused(UaError):
    """The server refused OpenSecureChannel: most often it does not trust our certificate."""


@dataclass(frozen=True, slots=True)
class ClientSettings:
    """Everything needed to open a client, checked once when the collector is built."""

    endpoint: str
    timeout_s: float
    policy: str
    mode: str
    certificate: Path | None
    private_key: Path | None
    trust_dir: Path | None
    username: str | None
    password: str | None

    @classmethod
    def from_gateway(cls, gateway: OpcuaGateway) -> ClientSettings:
        """Settings of a gateway; ValueError names a missing file or password variable."""
        sec = gateway.security
        where = f"gateway {gateway.id}: security"
        password = None
        if sec.password_env:
            password = os.environ.get(sec.password_env)
            if password is None:
                raise ValueError(f"{where}.password_env: environment variable "
                                 f"{sec.password_env} is not set")
        elif sec.username:
            raise ValueError(f"{where}: username {sec.username!r} needs password_env")
        paths: dict[str, Path | None] = {}
        for name in ("certificate", "private_key", "trust_dir"):
            value = getattr(sec, name)
            paths[name] = Path(value) if value else None
            if value and not Path(value).exists():
                raise ValueError(f"{where}.{name}: {value} does not exist")
        return cls(gateway.endpoint, gateway.timeout_s, sec.policy, sec.mode,
                   paths["certificate"], paths["private_key"], paths["trust_dir"],
                   sec.username, password)


def insecure_settings(gateway: OpcuaGateway) -> list[str]:
    """Warnings about a gateway's security, logged at every start of its collector."""
    sec = gateway.security
    if sec.policy != "None":
        return []
    out = [f"OPC UA gateway {gateway.id} uses security policy None: its data can be read and "
           "forged by anyone on the network path; use Basic256Sha256 with SignAndEncrypt"]
    if sec.insecure_password:
        out.append(f"OPC UA gateway {gateway.id} sends its user password in clear "
                   "(allow_insecure_password is set)")
    return out


async def server_validator(trust_dir: Path) -> CertificateValidator:
    """A validator that accepts only server certificates in trust_dir (or signed by a CA there)."""
    store = TrustStore([trust_dir], [])
    try:
        await store.load()
    except ValueError:  # an empty folder: the empty store trusts nobody, which is right
        log.warning("trust folder holds no certificates: every server is refused",
                    extra={"trust_dir": str(trust_dir)})
    return CertificateValidator(SERVER_CHECKS, store)


def _describe(cert: x509.Certificate) -> str:
    thumbprint = hashlib.sha1(cert.public_bytes(Encoding.DER),
                              usedforsecurity=False).hexdigest()
    return f"{cert.subject.rfc4514_string()} (SHA-1 {thumbprint})"


def _application_uri(cert: x509.Certificate) -> str:
    """The client's application URI must be the one in its certificate's SubjectAltName."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return DEFAULT_APPLICATION_URI
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else DEFAULT_APPLICATION_URI


async def _secure(client: Client, settings: ClientSettings) -> None:
    """Check the server certificate against the trust folder, then set the policy."""
    assert settings.certificate and settings.private_key and settings.trust_dir
    policy, mode = POLICIES[settings.policy], MODES[settings.mode]
    client.application_uri = _application_uri(
        await uacrypto.load_certificate(str(settings.certificate)))
    endpoints = await client.connect_and_get_server_endpoints()
    try:
        endpoint = Client.find_endpoint(endpoints, mode, policy.URI)
    except UaError as exc:
        raise UaError(f"{settings.endpoint} offers no {settings.policy} {settings.mode} "
                      "endpoint") from exc
    server_cert = uacrypto.x509_from_der(endpoint.ServerCertificate)
    if server_cert is None:
        raise UntrustedServer(f"{settings.endpoint} sent no certificate with its endpoint")
    validator = await server_validator(settings.trust_dir)
    try:
        await validator(server_cert, endpoint.Server)
    except ua.UaError as exc:  # ServiceError carries the status (BadCertificateUntrusted ...)
        code = getattr(exc, "code", ua.StatusCodes.BadCertificateInvalid)
        kept = ""
        try:  # kept for inspection (`dcim pki trust` shows the same fingerprints)
            kept = f" (saved as {save_rejected(server_cert, settings.trust_dir)})"
        except OSError:
            log.debug("cannot save the rejected certificate", exc_info=True)
        raise UntrustedServer(
            f"server certificate {_describe(server_cert)} of {settings.endpoint} refused: "
            f"{status_name(code)}{kept}; add it to {settings.trust_dir} if it is the right "
            "server") from exc
    await client.set_security(policy, str(settings.certificate), str(settings.private_key),
                              server_certificate=uacrypto.der_from_x509(server_cert), mode=mode)
    client.certificate_validator = validator


def _refused_channel(settings: ClientSettings) -> str:
    """What to do when the server answers OpenSecureChannel with an error asyncua cannot read
    (node-opcua does so for a client certificate it does not trust)."""
    text = f"{settings.endpoint} refused to open a {settings.policy} {settings.mode} channel"
    if settings.certificate is None:
        return text
    try:
        data = settings.certificate.read_bytes()
        cert = x509.load_pem_x509_certificate(data) if data.startswith(b"-----") \
            else x509.load_der_x509_certificate(data)
        which = f"{settings.certificate} (SHA-1 {thumbprint(cert)})"
    except (OSError, ValueError):
        which = str(settings.certificate)
    return (f"{text}: most often the server does not trust this client's certificate "
            f"{which}; have its administrator trust it (node-opcua servers keep refused "
            "client certificates in their PKI folder's rejected/, to move to trusted/certs/)")


async def open_client(settings: ClientSettings, *, on_lost: LostCallback,
                      watchdog_s: float = 1.0, session_timeout_s: float = 60.0) -> Client:
    """A connected client (asyncua's own auto-reconnect off: the collector owns reconnects)."""
    client = Client(settings.endpoint, timeout=settings.timeout_s,
                    watchdog_intervall=watchdog_s, auto_reconnect=False)
    client.name = client.description = "dcim OPC UA collector"
    client.session_timeout = int(session_timeout_s * 1000)
    if settings.username:
        client.set_user(settings.username)
        client.set_password(settings.password or "")
    budget = settings.timeout_s * 3  # endpoints, channel, session: a few round trips
    try:
        if settings.policy != "None":
            await asyncio.wait_for(_secure(client, settings), budget)
        client.connection_lost_callback = on_lost
        try:
            await asyncio.wait_for(client.connect(), budget)
        except AssertionError as exc:  # asyncua's reading of a refused OpenSecureChannel
            raise ChannelRefused(_refused_channel(settings)) from exc
    except BaseException:
        await close_client(client, alive=False)
        raise
    return client


async def close_client(client: Client, *, alive: bool, timeout_s: float = 1.0) -> None:
    """Close the session (deleting its subscriptions) if reachable, else just drop the socket."""
    client.connection_lost_callback = None
    try:
        # close_session stops asyncua's supervisor and watchdog tasks in any case.
        await asyncio.wait_for(client.close_session(), timeout_s)
    except (TimeoutError, Exception):
        log.debug("close_session failed", exc_info=True)
    if alive:
        try:
            await asyncio.wait_for(client.close_secure_channel(), timeout_s)
        except (TimeoutError, Exception):
            log.debug("close_secure_channel failed", exc_info=True)
    client.disconnect_socket()
