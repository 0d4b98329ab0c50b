"""Secrets never cross the wire in clear by accident: config errors, a named opt-in, warnings.

An OPC UA user password under security policy None and an SMTP login without STARTTLS are
refused by `dcim validate` and at load, naming the file, the field and the fix; with the opt-in
(`allow_insecure_password: true`) they load and are logged at WARNING at every start. Every
OPC UA gateway without security is logged at WARNING at start, once per gateway.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dcim.cli import main
from dcim.collectors.opcua import OpcuaCollector
from dcim.config.notifications import NotificationsConfig
from dcim.config.site import OpcuaGateway, OpcuaSecurity
from dcim.notify.notifier import Notifier
from dcim.site import ConfigError, load_site, parse_site

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "config" / "cyberport5.yaml").read_text(encoding="utf-8")
BMS = "  endpoint: opc.tcp://127.0.0.1:14840/dcim/bms\n"
OPCUA_USER = BMS + "  security:\n    username: dcim\n    password_env: DCIM_BMS_PASSWORD\n"
MAIL = """notifications:
  channels:
    mail:
      kind: email
      host: smtp.example.com
      port: {port}
      from: dcim@example.com
      to: [noc@example.com]
      username: dcim
      password_env: DCIM_SMTP_PASSWORD
{extra}"""

CASES = [
    pytest.param(TEXT.replace(BMS, OPCUA_USER, 1), "gateways[2].security",
                 ["username under security policy None", "would cross the network in clear",
                  "Basic256Sha256 with mode SignAndEncrypt", "allow_insecure_password: true"],
                 id="opcua-user-policy-none"),
    pytest.param(TEXT.replace(BMS, BMS + "  security:\n    password_env: DCIM_BMS_PASSWORD\n", 1),
                 "gateways[2].security", ["password_env under security policy None"],
                 id="opcua-password-only"),
    pytest.param(TEXT + MAIL.format(port=25, extra=""), "notifications.channels.mail",
                 ["username without starttls", "in clear", "starttls: true",
                  "allow_insecure_password: true"], id="smtp-login-without-tls"),
    pytest.param(TEXT + MAIL.format(port=587, extra="      starttls: false\n"),
                 "notifications.channels.mail", ["username without starttls"],
                 id="smtp-starttls-off"),
]


@pytest.mark.parametrize(("text", "where", "parts"), CASES)
def test_a_password_in_clear_is_a_config_error(text: str, where: str, parts: list[str],
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_site(path)
    [issue] = info.value.issues
    assert issue.file == str(path) and issue.line is not None
    message = str(issue)
    assert f"{path}:{issue.line}: {where}" in message
    for part in parts:
        assert part in message, message
    assert main(["validate", str(path)]) == 1
    assert where in capsys.readouterr().err


@pytest.mark.parametrize("text", [
    pytest.param(TEXT.replace(BMS, OPCUA_USER + "    allow_insecure_password: true\n", 1),
                 id="opcua"),
    pytest.param(TEXT + MAIL.format(port=25, extra="      allow_insecure_password: true\n"),
                 id="smtp"),
    pytest.param(TEXT + MAIL.format(port=587, extra="      starttls: true\n"), id="smtp-tls"),
])
def test_the_named_opt_in_loads(text: str) -> None:
    parse_site(text, "site.yaml")


def _gateway(**security: object) -> OpcuaGateway:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    bms = next(g for g in site.config.gateways if isinstance(g, OpcuaGateway))
    # a port nobody listens on: the start is what is tested, not the connection
    return bms.model_copy(update={"endpoint": "opc.tcp://127.0.0.1:9/dcim/bms",
                                  "security": OpcuaSecurity(**security)})  # type: ignore[arg-type]


class NoSink:
    def add(self, samples: object) -> None:
        """Drop them."""


@pytest.mark.parametrize(("security", "expected"), [
    pytest.param({}, ["uses security policy None: its data can be read and forged"],
                 id="policy-none"),
    pytest.param({"username": "dcim", "password_env": "DCIM_TEST_BMS_PASSWORD",
                  "allow_insecure_password": True},
                 ["uses security policy None: its data can be read and forged",
                  "sends its user password in clear"], id="password-allowed-in-clear"),
])
async def test_opcua_start_warns_once_per_gateway(security: dict[str, object],
                                                 expected: list[str],
                                                 caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCIM_TEST_BMS_PASSWORD", "secret")
    collector = OpcuaCollector(_gateway(**security), [], NoSink())  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="dcim.collectors.opcua"):
        await collector.start()
        await collector.close()
        await collector.start()  # a restart says it again
        await collector.close()
    said = [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "OPC UA gateway bms" in r.getMessage()]
    assert len(said) == 2 * len(expected)
    for part in expected:
        assert sum(part in m for m in said) == 2
    assert all(getattr(r, "gateway", None) == "bms" for r in caplog.records
               if "OPC UA gateway bms" in r.getMessage())
    assert "secret" not in caplog.text


def test_secure_opcua_gateway_is_not_warned_about() -> None:
    from dcim.collectors.opcua_client import insecure_settings

    gateway = _gateway(policy="Basic256Sha256", mode="SignAndEncrypt", certificate="c.der",
                       private_key="k.pem", trust_dir="trust", username="dcim",
                       password_env="X")
    assert insecure_settings(gateway) == []


def test_smtp_login_in_clear_warns_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DCIM_SMTP_PASSWORD", "secret")
    channel = {"kind": "email", "host": "smtp.example.com", "from": "dcim@example.com",
               "username": "dcim", "password_env": "DCIM_SMTP_PASSWORD"}
    with pytest.raises(ValueError, match="username without starttls"):
        NotificationsConfig.model_validate({"channels": {"mail": channel}})
    config = NotificationsConfig.model_validate(
        {"channels": {"mail": {**channel, "allow_insecure_password": True},
                      "tls": {**channel, "starttls": True}}})
    with caplog.at_level(logging.WARNING, logger="dcim.notify.channels"):
        Notifier(config, tmp_path / "outbox.sqlite").outbox.close()
    warned = [r for r in caplog.records if "password crosses the network in clear" in r.message]
    assert [getattr(r, "channel", None) for r in warned] == ["mail"]
    assert "secret" not in caplog.text


@pytest.mark.parametrize(("section", "ok"), [
    pytest.param({"backend": "influxdb1", "url": "http://influx.site.example:8086",
                  "username": "dcim", "password_env": "INFLUX_PW"}, False,
                 id="influxdb1-password-over-http"),
    pytest.param({"backend": "influxdb1", "url": "https://influx.site.example:8086",
                  "username": "dcim", "password_env": "INFLUX_PW"}, True, id="influxdb1-https"),
    pytest.param({"backend": "influxdb1", "url": "http://127.0.0.1:8086",
                  "username": "dcim", "password_env": "INFLUX_PW"}, True, id="influxdb1-loopback"),
    pytest.param({"backend": "influxdb1", "url": "http://influx.site.example:8086"}, True,
                 id="influxdb1-no-password"),
    pytest.param({"backend": "influxdb2", "url": "http://influx.site.example:8086",
                  "org": "o", "bucket": "b"}, False, id="influxdb2-token-over-http"),
    pytest.param({"backend": "influxdb2", "url": "http://influx.site.example:8086",
                  "org": "o", "bucket": "b", "allow_insecure_password": True}, True,
                 id="influxdb2-opted-in"),
])
def test_store_credentials_in_clear_are_a_config_error(section: dict[str, object],
                                                       ok: bool) -> None:
    from pydantic import TypeAdapter, ValidationError

    from dcim.config.storage import StorageConfig

    adapter: TypeAdapter[object] = TypeAdapter(StorageConfig)
    if ok:
        adapter.validate_python(section)
    else:
        with pytest.raises(ValidationError, match="cross the network in clear"):
            adapter.validate_python(section)


def test_a_store_opted_in_to_plain_http_warns_at_start(caplog: pytest.LogCaptureFixture) -> None:
    from dcim.config.storage import InfluxDB1StorageConfig
    from dcim.storage.factory import open_storage

    config = InfluxDB1StorageConfig(backend="influxdb1", url="http://influx.site.example:8086",
                                    username="dcim", password_env="INFLUX_PW",
                                    allow_insecure_password=True)
    with caplog.at_level(logging.WARNING, logger="dcim.storage.factory"):
        open_storage(config, site_id="s")
    assert any("in clear" in r.getMessage() for r in caplog.records)
