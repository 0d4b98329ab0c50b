"""`dcim pki client|trust` and the collector's trust check, against the secure BMS simulator.

The server offers only Basic256Sha256 SignAndEncrypt and trusts the client certificate that
`dcim pki client` made; the collector's client trusts the server only after `dcim pki trust`.
"""

from __future__ import annotations

import asyncio
import shutil
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from asyncua import ua
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID

from dcim.cli import main
from dcim.collectors.opcua_client import (
    ClientSettings, UntrustedServer, close_client, open_client,
)
from dcim.collectors.opcua_pki import fingerprint, rejected_dir, thumbprint
from dcim.config.site import OpcuaGateway
from dcim.simulators.opcua_security import ServerSecurity, make_test_pki
from dcim.simulators.opcua_server import OpcuaSimServer
from dcim.site import load_site

ROOT = Path(__file__).resolve().parents[1]
SITE = load_site(ROOT / "config" / "cyberport5.yaml")
GATEWAY = next(g for g in SITE.config.gateways if isinstance(g, OpcuaGateway) and g.id == "bms")
DEVICES = [d for d in SITE.devices.values() if d.gateway.id == "bms"][:3]
CLIENT_URI = "urn:dcim:test:discovery-client"

module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest.fixture(scope="module")
def client_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder `dcim pki client` wrote into."""
    folder = tmp_path_factory.mktemp("collector") / "pki"
    assert main(["pki", "client", "--uri", CLIENT_URI, "--dns", "localhost",
                 "--dns", "127.0.0.1", "-o", str(folder)]) == 0
    return folder


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory, client_pki: Path
                 ) -> AsyncIterator[OpcuaSimServer]:
    """A SignAndEncrypt-only server that trusts the client certificate made by dcim pki."""
    pki = make_test_pki(tmp_path_factory.mktemp("server"))
    shutil.copy(client_pki / "client_cert.der", pki.server_trust_dir / "dcim_client.der")
    security: ServerSecurity = pki.server_security(modes=("SignAndEncrypt",))
    server = OpcuaSimServer(GATEWAY, DEVICES, port=0, security=security)
    await server.start()
    yield server
    await server.stop()


def test_client_certificate_is_what_opc_ua_wants(client_pki: Path) -> None:
    der = client_pki / "client_cert.der"
    cert = x509.load_der_x509_certificate(der.read_bytes())
    pem = x509.load_pem_x509_certificate((client_pki / "client_cert.pem").read_bytes())
    assert pem == cert
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [CLIENT_URI]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and usage.data_encipherment
    assert usage.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    key = load_pem_private_key((client_pki / "client_key.pem").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048
    for name in ("client_cert.der", "client_cert.pem", "client_key.pem"):
        assert stat.S_IMODE((client_pki / name).stat().st_mode) == 0o600, name


def test_client_refuses_to_overwrite(client_pki: Path, capsys: pytest.CaptureFixture[str]
                                     ) -> None:
    assert main(["pki", "client", "--uri", CLIENT_URI, "-o", str(client_pki)]) == 1
    assert "exists" in capsys.readouterr().err


def _settings(server: OpcuaSimServer, client_pki: Path, trust_dir: Path) -> ClientSettings:
    return ClientSettings(server.endpoint, 4.0, "Basic256Sha256", "SignAndEncrypt",
                          client_pki / "client_cert.der", client_pki / "client_key.pem",
                          trust_dir, None, None)


async def _lost(_: Exception) -> None:
    return None


@module_loop
async def test_untrusted_server_is_refused_and_its_certificate_kept(
        secure: OpcuaSimServer, client_pki: Path, tmp_path: Path) -> None:
    trust_dir = tmp_path / "trusted"
    trust_dir.mkdir()
    with pytest.raises(UntrustedServer, match="saved as"):
        await open_client(_settings(secure, client_pki, trust_dir), on_lost=_lost)
    server_cert = x509.load_der_x509_certificate(secure.security.certificate.read_bytes())
    kept = rejected_dir(trust_dir) / f"{thumbprint(server_cert)}.der"
    assert kept.read_bytes() == secure.security.certificate.read_bytes()
    assert kept.parent == tmp_path / "rejected"


@module_loop
async def test_trust_without_confirmation_trusts_nothing(
        secure: OpcuaSimServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    trust_dir = tmp_path / "trusted"
    code = await asyncio.to_thread(main, ["pki", "trust", secure.endpoint,
                                          "--trust-dir", str(trust_dir)])
    assert code == 0
    assert not trust_dir.exists() or not any(trust_dir.iterdir())
    assert "not trusted" in capsys.readouterr().out


@module_loop
async def test_trust_yes_then_the_collector_connects_with_sign_and_encrypt(
        secure: OpcuaSimServer, client_pki: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    trust_dir = tmp_path / "trusted"
    code = await asyncio.to_thread(main, ["pki", "trust", secure.endpoint,
                                          "--trust-dir", str(trust_dir), "--yes"])
    assert code == 0
    out = capsys.readouterr().out
    server_der = secure.security.certificate.read_bytes()
    server_cert = x509.load_der_x509_certificate(server_der)
    assert fingerprint(server_cert, "sha256") in out and fingerprint(server_cert, "sha1") in out
    assert [p.read_bytes() for p in trust_dir.iterdir()] == [server_der]
    client = await open_client(_settings(secure, client_pki, trust_dir), on_lost=_lost)
    try:
        assert client.security_policy.Mode == ua.MessageSecurityMode.SignAndEncrypt
        node = client.get_node(secure.node_id(DEVICES[0].id, DEVICES[0].profile.points[0].name))
        name = await node.read_browse_name()  # a request over the encrypted session
        assert name.Name and name.NamespaceIndex == secure.namespace_index
    finally:
        await close_client(client, alive=True)


@module_loop
async def test_discover_opcua_over_sign_and_encrypt(
        secure: OpcuaSimServer, client_pki: Path, tmp_path: Path) -> None:
    trust_dir = tmp_path / "trusted"
    trust_dir.mkdir()
    shutil.copy(secure.security.certificate, trust_dir / "server.der")
    draft = tmp_path / "draft.yaml"
    code = await asyncio.to_thread(main, [
        "discover", "opcua", secure.endpoint, "--security", "SignAndEncrypt",
        "--certificate", str(client_pki / "client_cert.der"),
        "--private-key", str(client_pki / "client_key.pem"), "--trust-dir", str(trust_dir),
        "-o", str(draft)])
    assert code == 0
    text = draft.read_text()
    assert "mode: SignAndEncrypt" in text and f"trust_dir: {trust_dir}" in text
    assert len([line for line in text.splitlines() if "node_name:" in line]) == len(DEVICES)


@module_loop
@pytest.mark.parametrize(("answer", "trusted", "said"), [
    ("y\n", True, "trusted: "),
    ("n\n", False, "not trusted"),
    ("", False, "no answer on stdin"),
], ids=["yes", "no", "stdin-closed"])
async def test_trust_asks_on_stdin(secure: OpcuaSimServer, tmp_path: Path, answer: str,
                                   trusted: bool, said: str) -> None:
    trust_dir = tmp_path / "trusted"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import sys; from dcim.cli import main; sys.exit(main())",
        "pki", "trust", secure.endpoint, "--trust-dir", str(trust_dir),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(answer.encode()), 60)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "[y/N]" in text and said in text and "Traceback" not in text + err.decode()
    server_der = secure.security.certificate.read_bytes()
    kept = [p.read_bytes() for p in trust_dir.iterdir()] if trust_dir.exists() else []
    assert kept == ([server_der] if trusted else [])
