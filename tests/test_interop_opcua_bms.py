"""Interop: a node-opcua BMS that dcim knows nothing about, configured only from
`dcim discover opcua`; what it served is what is stored, at its SourceTimestamps.

The BMS (tests/opcua_node/bms_server.js) has its own namespace URI, objects in folders,
AnalogItems with EngineeringUnits, an Int32 and a Boolean; it offers Basic256Sha256
SignAndEncrypt only, refuses anonymous sessions, trusts only the client certificate it was
given, and stamps every value 1.5 s before it sets it (its ServerTimestamp is the moment
it sets it), so a collector that stored its receive time, or the server's, would be caught.
It appends every (value, SourceTimestamp) it served to a file. The draft is run subscribed
(as drafted) and polled; the same lag is also replayed against the collector with the time
moved, a publish missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Client, ua

from dcim.cli import main
from dcim.collectors.opcua import OpcuaCollector, _Connection
from dcim.config.site import OpcuaGateway
from dcim.site import site_from_dict
from dcim.storage.base import Sample
from tests.conftest import require_program, servers_required
from tests.influxd import free_port

ROOT = Path(__file__).resolve().parents[1]
NODE_DIR = ROOT / "tests" / "opcua_node"
NAMESPACE = "urn:acme:bms"
USER, PASSWORD_ENV, PASSWORD = "bms", "ACME_BMS_PASSWORD", "c0ld-aisle"
CLIENT_URI = "urn:dcim:test:interop-collector"
OFFSET_MS = 1500  # the BMS's SourceTimestamp is this much before the value is set
INTERVAL_S = 1.0
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Bms:
    """A running node-opcua BMS and what the test needs of it."""

    endpoint: str
    served: Path
    client_pki: Path  # what `dcim pki client` made; the BMS trusts its certificate

    def served_values(self) -> dict[str, dict[int, Any]]:
        """node string id -> {SourceTimestamp in epoch ms: value} of everything it served."""
        out: dict[str, dict[int, Any]] = {}
        for line in self.served.read_text().splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:  # the line being written as we read
                continue
            out.setdefault(item["node"], {})[item["source_ms"]] = item["value"]
        return out


@pytest.fixture(scope="module")
def node() -> str:
    """node with node-opcua-server and -client installed (scripts/install-node-deps.sh)."""
    program = require_program("node", "apt-get install -y nodejs npm")
    require_program("npm", "apt-get install -y npm")
    done = subprocess.run([str(ROOT / "scripts" / "install-node-deps.sh")], capture_output=True,
                          text=True, timeout=300, check=False)
    if done.returncode != 0:
        message = f"install-node-deps.sh failed: {done.stderr.strip()[-500:]}"
        if servers_required():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return program


@pytest.fixture(scope="module")
def bms(node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bms]:
    """The BMS on a free loopback port, trusting the certificate `dcim pki client` made."""
    root = tmp_path_factory.mktemp("bms")
    client_pki = root / "collector"
    assert main(["pki", "client", "--uri", CLIENT_URI, "-o", str(client_pki)]) == 0
    served, log = root / "served.jsonl", root / "bms.log"
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [node, str(NODE_DIR / "bms_server.js"), "--port", str(port), "--pki",
             str(root / "pki"), "--served", str(served), "--user", USER,
             "--trust-client", str(client_pki / "client_cert.der"),
             "--offset-ms", str(OFFSET_MS), "--period-ms", "200"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "BMS_PASSWORD": PASSWORD, "NODE_NO_WARNINGS": "1"})
    try:
        deadline = time.monotonic() + 60
        endpoint = ""
        while not endpoint:
            text = log.read_text(errors="replace")
            endpoint = next((ln.split(" ", 1)[1].strip() for ln in text.splitlines()
                             if ln.startswith("BMS-READY ")), "")
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"bms_server.js did not start: {text[-1500:]}", pytrace=False)
            time.sleep(0.05)  # a separate process: its readiness cannot be awaited otherwise
        assert endpoint == f"opc.tcp://127.0.0.1:{port}/acme/bms"
        yield Bms(endpoint, served, client_pki)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def epoch_ms(text: str) -> int:
    """An ISO 8601 time with offset (as `dcim query` prints it) in epoch milliseconds."""
    return (datetime.fromisoformat(text) - EPOCH) // timedelta(milliseconds=1)


def check_rows(rows: list[dict[str, Any]], served: dict[int, Any], interval_ms: int
               ) -> tuple[int, list[str]]:
    """(rows stored at a served SourceTimestamp with its value, problems): every row is
    either one of those, or the previous value held at an aligned sampling boundary."""
    matched, problems, previous = 0, [], None
    for row in rows:
        t_ms, value = epoch_ms(row["time"]), row["value"]
        if row["quality"] != "good":
            problems.append(f"{row}: quality")
        elif t_ms in served and served[t_ms] == value:
            matched += 1
        elif not (t_ms % interval_ms == 0 and value == previous):
            near = sorted(served, key=lambda s: abs(s - t_ms))[:1]
            problems.append(f"{row}: nothing served then; nearest served "
                            f"{[(s, served[s]) for s in near]}")
        previous = value
    return matched, problems


@pytest.mark.parametrize(("rows", "matched", "problems"), [
    ([{"time": "2026-12-08T04:58:16.716+08:00", "value": 22.5, "quality": "good"}], 1, 0),
    ([{"time": "2026-12-08T04:58:18.216+08:00", "value": 22.5, "quality": "good"}], 0, 1),
    ([{"time": "2026-12-08T04:58:16.716+08:00", "value": 22.5, "quality": "good"},
      {"time": "2026-12-08T04:58:17+08:00", "value": 22.5, "quality": "good"}], 1, 0),
    ([{"time": "2026-12-08T04:58:16.716+08:00", "value": 23.0, "quality": "good"}], 0, 1),
    ([{"time": "2026-12-08T04:58:16.716+08:00", "value": 22.5, "quality": "bad"}], 0, 1),
], ids=["source-time", "receive-time", "held-at-boundary", "other-value", "bad"])
def test_check_rows_tells_source_times_from_receive_times(
        rows: list[dict[str, Any]], matched: int, problems: int) -> None:
    served = {epoch_ms("2026-12-08T04:58:16.716+08:00"): 22.5}
    got_matched, got_problems = check_rows(rows, served, 1000)
    assert (got_matched, len(got_problems)) == (matched, problems)


class _Samples(list[Sample]):
    """A sample sink that keeps everything (the collector's cycles are not used here)."""

    def add(self, samples: list[Sample]) -> None:
        """Keep samples."""
        self.extend(samples)


def test_a_device_clock_behind_by_more_than_an_interval_keeps_its_source_times() -> None:
    """The BMS's lag, replayed with the time moved: changes every 200 ms stamped 1.5 s
    before they are published once a second, one publish missing. Once a held value was
    dated at its boundary, every later change (dated before that boundary) went to a
    boundary too; now held values are dated back by the lag and changes keep their times."""
    site = site_from_dict({
        "site": {"id": "lag", "name": "Lag"},
        "gateways": [{"id": "bms", "protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"}],
        "profiles": {"crah": {"protocol": "opcua", "device_type": "crah", "points": [
            {"name": "supply_temp", "node": f"nsu={NAMESPACE};s={{device}}.SupplyTemp"}]}},
        "devices": [{"id": "CRAH-1", "profile": "crah", "gateway": "bms", "node_name": "CRAH-1",
                     "interval_s": 1}]})
    gateway = site.config.gateways[0]
    assert isinstance(gateway, OpcuaGateway)
    t0 = 1_800_000_000.0
    now = [t0]
    collector = OpcuaCollector(gateway, list(site.devices.values()), _Samples(),
                               clock=lambda: now[0])
    (point,) = collector._points
    point.node_id = ua.NodeId.from_string("ns=2;s=CRAH-1.SupplyTemp")
    device = collector._devices["CRAH-1"]
    conn = _Connection(connected_mono=time.monotonic())
    served: dict[int, float] = {}
    stored: list[Sample] = []
    for second in range(13):
        now[0] = t0 + second
        stored += collector._sample_device(device, conn, round(now[0] * 1e9), 0.0)
        if second == 5:
            continue  # this second's publish is late: the next boundary holds
        if second == 12:
            break  # the last boundary
        now[0] = t0 + second + 0.5  # the publish: the newest change, set just now
        source_s, value = now[0] - OFFSET_MS / 1000, 20 + second / 8
        served[round(source_s * 1000)] = value
        collector._store(conn, point, ua.DataValue(
            ua.Variant(value, ua.VariantType.Double),
            SourceTimestamp=ua.DateTime.fromtimestamp(source_s, timezone.utc),
            ServerTimestamp=ua.DateTime.fromtimestamp(now[0], timezone.utc)))
    rows = [{"time": datetime.fromtimestamp(s.time_ns / 1e9, timezone.utc).isoformat(),
             "value": s.value, "quality": s.quality.name.lower()} for s in stored]
    times = [s.time_ns for s in stored]
    assert times == sorted(set(times))
    matched, problems = check_rows(rows, served, 1000)
    assert problems == [] and matched == len(served)
    held = [s for s in stored if round(s.time_ns / 1e6) not in served]
    assert [s.time_ns for s in held] == [round((t0 + 4) * 1e9)]  # 6 s, dated 2 s back


def _discover(bms: Bms, trust_dir: Path, *extra: str) -> list[str]:
    return ["discover", "opcua", bms.endpoint, "--security", "SignAndEncrypt",
            "--certificate", str(bms.client_pki / "client_cert.der"),
            "--private-key", str(bms.client_pki / "client_key.pem"),
            "--trust-dir", str(trust_dir), *extra]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_a_discovered_bms_stores_what_it_served_at_its_source_timestamps(
        bms: Bms, mode: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    trust_dir = tmp_path / "trusted"
    assert main(["pki", "trust", bms.endpoint, "--trust-dir", str(trust_dir), "--yes"]) == 0
    draft = tmp_path / "draft.yaml"
    assert main(_discover(bms, trust_dir, "--username", USER, "--password-env", PASSWORD_ENV,
                          "-o", str(draft))) == 0
    data = yaml.safe_load(draft.read_text(encoding="utf-8"))
    assert {d["node_name"]: d["profile"] for d in data["devices"]} == {
        "CRAH-1": "bms-crah", "CRAH-2": "bms-crah", "CH-1": "bms-chillers"}
    points = {p["name"]: p for prof in data["profiles"].values() for p in prof["points"]}
    assert all(step.startswith(f"{NAMESPACE}|") for p in points.values()
               for step in p["browse_path"])
    assert {name: p.get("unit") for name, p in points.items()} == {
        "supply_temp_c": "degC", "return_temp_c": "degC", "status": None, "fan_running": None,
        "chw_supply_temp_c": "degC", "power_kw": "kW"}  # UNECE units in dcim's words
    assert data["gateways"][0]["security"] == {
        "policy": "Basic256Sha256", "mode": "SignAndEncrypt",
        "certificate": str(bms.client_pki / "client_cert.der"),
        "private_key": str(bms.client_pki / "client_key.pem"), "trust_dir": str(trust_dir),
        "username": USER, "password_env": PASSWORD_ENV}

    # the draft as it is (subscribe), inside the smallest site; only the sampling interval
    # and, for the second run, the profiles' mode are chosen
    site = {"site": {"id": "acme", "name": "ACME interop"},
            "storage": {"backend": "embedded", "path": str(tmp_path / "acme.sqlite")}, **data}
    for device in site["devices"]:
        device["interval_s"] = INTERVAL_S
    assert {p["mode"] for p in site["profiles"].values()} == {"subscribe"}
    for profile in site["profiles"].values():
        profile["mode"] = mode
    site_file = tmp_path / "acme.yaml"
    site_file.write_text(yaml.safe_dump(site, sort_keys=False, allow_unicode=True),
                         encoding="utf-8")
    assert main(["validate", str(site_file)]) == 0
    assert main(["run", str(site_file), "--seconds", "4", "--no-dashboard"]) == 0
    out, err = capsys.readouterr()
    assert "anomaly detection withheld" in out + err  # the log is in what was captured
    for noise in ("Traceback", "stale; recreating", "ServiceFault", "BadNoSubscription"):
        assert noise not in out + err

    served = bms.served_values()
    for device in data["devices"]:
        for point in data["profiles"][device["profile"]]["points"]:
            node = f"{device['node_name']}.{point['browse_path'][-1].split('|', 1)[1]}"
            assert main(["query", f"{device['id']}.{point['name']}", str(site_file),
                         "--since", "10m", "--format", "json"]) == 0
            rows = json.loads(capsys.readouterr().out)["rows"]
            matched, problems = check_rows(rows, served[node], int(INTERVAL_S * 1000))
            assert problems == [], f"{device['id']}.{point['name']}: {rows}"
            assert matched >= 2, f"{device['id']}.{point['name']}: {rows}"


async def test_the_bms_offers_sign_and_encrypt_only_and_no_anonymous(bms: Bms) -> None:
    client = Client(bms.endpoint, timeout=4)
    endpoints = await client.connect_and_get_server_endpoints()
    assert {(e.SecurityPolicyUri.rsplit("#", 1)[1], e.SecurityMode) for e in endpoints} == {
        ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt)}
    tokens = {t.TokenType for e in endpoints for t in e.UserIdentityTokens}
    assert ua.UserTokenType.UserName in tokens and ua.UserTokenType.Anonymous not in tokens


@pytest.mark.parametrize(("case", "said"), [
    ("anonymous", "the server refuses anonymous sessions: give --username and --password-env"),
    ("wrong-password", "BadUserAccessDenied"),
    ("untrusted-client", "does not trust this client's certificate"),
], ids=["anonymous", "wrong-password", "untrusted-client"])
def test_discover_says_why_the_bms_refused(
        bms: Bms, case: str, said: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    trust_dir = tmp_path / "trusted"
    assert main(["pki", "trust", bms.endpoint, "--trust-dir", str(trust_dir), "--yes"]) == 0
    monkeypatch.setenv(PASSWORD_ENV, "wrong" if case == "wrong-password" else PASSWORD)
    args = _discover(bms, trust_dir)
    if case != "anonymous":
        args += ["--username", USER, "--password-env", PASSWORD_ENV]
    if case == "untrusted-client":
        other = tmp_path / "other"
        assert main(["pki", "client", "--uri", "urn:dcim:test:stranger", "-o", str(other)]) == 0
        args[args.index("--certificate") + 1] = str(other / "client_cert.der")
        args[args.index("--private-key") + 1] = str(other / "client_key.pem")
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "draft.yaml")]) == 1
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err
    assert not (tmp_path / "draft.yaml").exists()
