"""`dcim validate` makes every check a start makes: a file that validates starts, and a file
that would not start fails both verbs the same way, at file:line: field, with no traceback.

Each case is a file a facility engineer had pass `validate` and then fail at `run`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pytest

from dcim.cli import main

HEAD = """\
site:
  id: s
  name: S{pue}
gateways:
  - {{id: meters, protocol: modbus_tcp, host: 127.0.0.1, port: 9}}
  - {{id: meters2, protocol: modbus_tcp, host: 127.0.0.1, port: 10}}
  - id: bms
    protocol: opcua
    endpoint: opc.tcp://127.0.0.1:9/bms
{bms}
profiles:
  meter:
    protocol: modbus
    device_type: meter
    points:
      - {{name: power_kw, table: holding, address: 0, type: float32, role: power_kw}}
  ahu:
    protocol: opcua
    device_type: crah
    points:
      - {{name: supply_temp_c, node: "nsu=urn:bms;s={{device}}.SupplyTemp"}}
{plant}devices:
  - {{id: M-UTIL-1, profile: meter, gateway: meters, unit_id: 1{m1}}}
  - {{id: M-UTIL-2, profile: meter, gateway: meters, unit_id: 2{m2}}}
  - {{id: AHU-1, profile: ahu, gateway: bms}}
"""
UTILITY = """\
electrical:
  - {id: UTIL-1, type: utility_feed, capacity_kw: 1000}
  - {id: UTIL-2, type: utility_feed, capacity_kw: 1000}
"""


def site_text(*, pue: str = "", bms: str = "", plant: str = "", m1: str = "",
              m2: str = "") -> str:
    """A small site file with the given pieces."""
    return HEAD.format(pue=pue, bms=bms, plant=plant, m1=m1, m2=m2)


def _key_files(folder: Path) -> dict[str, Path]:
    """A client key pair: a PEM key named client.key (as openssl names it) and a DER cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dcim")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(1).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    files = {"client.key": pem, "client.pem": pem, "client_der.key": der,
             "client.der": cert.public_bytes(serialization.Encoding.DER)}
    for file, data in files.items():
        (folder / file).write_bytes(data)
    (folder / "trusted").mkdir()
    return {name: folder / name for name in files} | {"trusted": folder / "trusted"}


def _secure(files: dict[str, Path], key: str) -> str:
    return (f"    security: {{policy: Basic256Sha256, mode: SignAndEncrypt, "
            f"certificate: {files['client.der']}, private_key: {files[key]}, "
            f"trust_dir: {files['trusted']}}}")


@dataclass
class Case:
    text: str
    marker: str  # text on the line the error must point at
    field: str
    message: str


def cases(files: dict[str, Path]) -> dict[str, Case]:
    """The broken files, by the bug they guard."""
    return {
        "utility-feeds-without-energy-meter": Case(
            site_text(pue="\n  pue: {it_boundary: it_input}", plant=UTILITY,
                      m1=", monitors: UTIL-1", m2=", monitors: UTIL-2"),
            "  pue:", "site.pue", "utility feeds without an energy meter: UTIL-1, UTIL-2"),
        "pem-key-named-client-key": Case(
            site_text(bms=_secure(files, "client.key")), "    security:",
            "gateways[2].security.private_key",
            "holds a PEM private key but the OPC UA library reads a file named *.key as DER"),
        "missing-password-env": Case(
            site_text(bms="    security: {username: dcim, password_env: DCIM_TEST_NO_SUCH_VAR, "
                          "allow_insecure_password: true}"),
            "    security:", "gateways[2].security.password_env",
            "environment variable DCIM_TEST_NO_SUCH_VAR is not set"),
        "username-outside-security": Case(
            site_text(bms="    username: dcim"), "    username: dcim", "gateways[2].username",
            "unknown field 'username'; it belongs under gateways[2].security"),
    }


def _line(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(marker))


@pytest.mark.parametrize("name", ["utility-feeds-without-energy-meter", "pem-key-named-client-key",
                                  "missing-password-env", "username-outside-security"])
@pytest.mark.parametrize("verb", ["validate", "run"])
def test_a_file_that_would_not_start_fails_validate_and_run_alike(
        name: str, verb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DCIM_TEST_NO_SUCH_VAR", raising=False)
    case = cases(_key_files(tmp_path))[name]
    path = tmp_path / "site.yaml"
    path.write_text(case.text)
    args = [verb, str(path)] + (["--seconds", "1", "--no-dashboard"] if verb == "run" else [])
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert f"{path}:{_line(case.text, case.marker)}: {case.field}: " in err, err
    assert case.message in err, err
    assert "Traceback" not in out + err
    assert "did you mean 'username'" not in err


@pytest.mark.parametrize("key", ["client.pem", "client_der.key"])
def test_a_key_whose_name_matches_its_format_validates(key: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    files = _key_files(tmp_path)
    path = tmp_path / "site.yaml"
    path.write_text(site_text(bms=_secure(files, key)))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_the_password_variable_set_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DCIM_TEST_NO_SUCH_VAR", "secret")
    path = tmp_path / "site.yaml"
    path.write_text(site_text(bms="    security: {username: dcim, password_env: "
                                  "DCIM_TEST_NO_SUCH_VAR, allow_insecure_password: true}"))
    assert main(["validate", str(path)]) == 0, capsys.readouterr().err


def test_unmetered_feeds_without_a_pue_section_only_withhold_pue(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site_text(plant=UTILITY, m1=", monitors: UTIL-1", m2=", monitors: UTIL-2"))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "pue: withheld: PUE needs facility and IT energy meters: utility feeds without an " \
           "energy meter: UTIL-1, UTIL-2" in out
    # no BMS point has a role: nothing for the detectors, said instead of an IndexError
    assert "anomalies: withheld: anomaly detection needs points with roles" in out


@pytest.mark.parametrize("loc, hint", [
    pytest.param(("gateways", 2, "opcua", "username"), "; it belongs under gateways[2].security",
                 id="opcua-security"),
    pytest.param(("gateways", 0, "modbus_tcp", "porrt"), "; did you mean 'port'?", id="typo"),
    pytest.param(("halls", 0, "feed_a"), "; it belongs under halls[0].rows", id="row-field"),
    pytest.param(("gateways", 0, "modbus_tcp", "zzz"), "", id="nothing-close"),
])
def test_unknown_field_hints(loc: tuple[str | int, ...], hint: str) -> None:
    from dcim.site.hints import unknown_field_hint

    assert unknown_field_hint(loc) == hint
