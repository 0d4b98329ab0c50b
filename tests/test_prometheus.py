"""/metrics scraped by a real Prometheus: Debian's `prometheus` started here on loopback with the
scrape config and alert rules of docs/prometheus.md, against the reference site's running
dashboard with sign-in on, using a token made by `dcim users token`."""

from __future__ import annotations

import asyncio
import io
import logging
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from dcim.site import load_site
from dcim.system import System, SystemOptions
from tests.conftest import require_program
from tests.influxd import free_port

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "prometheus.md"
PASSWORD = "correct horse battery"
pytestmark = pytest.mark.slow


def doc_blocks() -> list[Any]:
    """The YAML blocks of docs/prometheus.md: the scrape config, then the rules."""
    text = DOC.read_text(encoding="utf-8")
    return [yaml.safe_load(part.split("```", 1)[0]) for part in text.split("```yaml\n")[1:]]


def test_the_docs_hold_a_scrape_config_and_rules() -> None:
    scrape, rules = doc_blocks()
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "dcim" and job["authorization"]["type"] == "Bearer"
    names = [r["alert"] for r in rules["groups"][0]["rules"]]
    assert "DcimDown" in names and len(names) == len(set(names))


def test_promtool_accepts_the_rules(tmp_path: Path) -> None:
    promtool = require_program("promtool", "apt-get install -y prometheus")
    path = tmp_path / "dcim.yml"
    path.write_text(yaml.safe_dump(doc_blocks()[1]))
    done = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 7 rules found" in done.stdout


def users_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
              *args: str, stdin: str = "") -> str:
    """Run `dcim users ...` as written on the command line; its standard output."""
    from dcim.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        code = main(["users", *args])
    finally:  # the CLI's log handler writes to the captured stream, closed after this test
        root.handlers[:], root.level = handlers, level
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


@pytest.fixture
def site_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
              monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """The reference site with sign-in on, a viewer for Prometheus and its token."""
    path = tmp_path / "site.yaml"
    path.write_text((ROOT / "config" / "cyberport5.yaml").read_text() +
                    f"\nauth:\n  users_db: {tmp_path / 'users.sqlite'}\n")
    users_cli(capsys, monkeypatch, "add", "prometheus", str(path), "--role", "viewer",
              "--password-stdin", stdin=PASSWORD + "\n")
    token = users_cli(capsys, monkeypatch, "token", "prometheus", str(path),
                      "--name", "prometheus").strip()
    yield path, token


@pytest_asyncio.fixture
async def system(site_file: tuple[Path, str], tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[System]:
    monkeypatch.chdir(tmp_path)  # the reference site's embedded store lives under var/
    sys_ = System(load_site(site_file[0]), SystemOptions(
        buffer_dir=str(tmp_path / "buffer"), dashboard_port=0, analytics_interval_s=60.0,
        alarm_journal=str(tmp_path / "alarms.sqlite")))
    try:
        await sys_.start()
        yield sys_
    finally:
        await sys_.stop()


def prometheus_config(tmp_path: Path, target: str, token: str) -> Path:
    """prometheus.yml: the docs' job pointed at the test's dashboard, plus one without token."""
    scrape, rules = doc_blocks()
    (job,) = scrape["scrape_configs"]
    token_file = tmp_path / "dcim.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    job["authorization"]["credentials_file"] = str(token_file)
    job["scrape_interval"] = "1s"
    job["static_configs"][0]["targets"] = [target]
    bare = {k: v for k, v in job.items() if k != "authorization"} | {"job_name": "dcim_no_token"}
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "rule_files": [str(tmp_path / "rules.yml")], "scrape_configs": [job, bare]}
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Prometheus:
    """Queries of a running Prometheus' HTTP API."""

    def __init__(self, url: str, http: aiohttp.ClientSession) -> None:
        self.url, self.http = url, http

    async def api(self, path: str, **params: str) -> Any:
        async with self.http.get(f"{self.url}/api/v1/{path}", params=params) as r:
            body = await r.json()
            assert r.status == 200 and body["status"] == "success", body
            return body["data"]

    async def query(self, expr: str) -> dict[str, float]:
        """An instant query: {job or metric labels: value} of each series."""
        data = await self.api("query", query=expr)
        return {",".join(f"{k}={v}" for k, v in sorted(s["metric"].items())): float(s["value"][1])
                for s in data["result"]}

    async def until(self, expr: str, timeout_s: float = 60.0) -> dict[str, float]:
        """Query until the expression has a result."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                found = await self.query(expr)
            except aiohttp.ClientError:
                found = {}
            if found:
                return found
            assert time.monotonic() < deadline, f"no result for {expr}"
            await asyncio.sleep(0.25)


async def test_prometheus_scrapes_the_dashboard_with_a_token(
        system: System, site_file: tuple[Path, str], tmp_path: Path) -> None:
    binary = require_program("prometheus", "apt-get install -y prometheus")
    assert system.dashboard is not None
    target = system.dashboard.url.split("://", 1)[1].rstrip("/")
    port = free_port()
    config = prometheus_config(tmp_path, target, site_file[1])
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as http:
            prom = Prometheus(f"http://127.0.0.1:{port}", http)
            up = await prom.until('up{job="dcim"} == 1')
            assert list(up.values()) == [1.0]
            assert (await prom.until('count(dcim_device_up)')) == {"": 270.0}
            assert (await prom.until("dcim_live_state_seq > 0"))
            polled = await prom.until("sum(dcim_device_polls_total) > 0")
            assert list(polled.values())[0] > 0
            assert (await prom.until('dcim_alarms_active{priority="critical"}'))
            refused_up = await prom.until('up{job="dcim_no_token"}')  # scraped on its own offset
            assert list(refused_up.values()) == [0.0]
            targets = await prom.api("targets")
            refused = [t for t in targets["activeTargets"]
                       if t["labels"]["job"] == "dcim_no_token"]
            assert "401" in refused[0]["lastError"]
            rules = await prom.api("rules")
            (group,) = rules["groups"]
            assert len(group["rules"]) == 7 and all(r["health"] in ("ok", "unknown")
                                                    for r in group["rules"])
            assert not (await prom.query('ALERTS{alertname="DcimDown"}'))
            took = await prom.query('scrape_duration_seconds{job="dcim"}')
            samples = await prom.query('scrape_samples_scraped{job="dcim"}')
            print(f"\nscrape of /metrics: {list(took.values())[0] * 1000:.1f} ms, "
                  f"{list(samples.values())[0]:.0f} samples")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
