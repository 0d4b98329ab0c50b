"""dashboards/grafana.py: the exported file is current, and every query runs on a real influxd
holding a simulated hour of the reference site (with its analytics) and returns data."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dcim.analysis import AnalyticsService
from dcim.dashboards.grafana import export, facility_dashboard
from dcim.simulators.backfill import backfill
from dcim.site import load_site
from dcim.config.storage import InfluxDB1StorageConfig
from dcim.storage.factory import open_storage
from tests import influxd

ROOT = Path(__file__).resolve().parents[1]
influxd_server = influxd.influxd_server
influx_database = influxd.influx_database


def test_the_committed_file_is_the_generated_one() -> None:
    committed = (ROOT / "dashboards" / "grafana" / "facility.json").read_text()
    assert committed == export(), "regenerate: python -m dcim.dashboards.grafana > " \
                                  "dashboards/grafana/facility.json"
    dashboard = json.loads(committed)
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    assert all(t["datasource"]["uid"] == "${DS_DCIM}" for p in dashboard["panels"]
               for t in p["targets"])


def _query(url: str, database: str, text: str) -> dict[str, Any]:
    params = urllib.parse.urlencode({"db": database, "q": text, "epoch": "ms"})
    with urllib.request.urlopen(f"{url}/query?{params}", timeout=30) as reply:
        return json.load(reply)  # type: ignore[no-any-return]


async def test_every_panel_query_returns_data(influxd_server: str, influx_database: str) -> None:
    site = load_site(ROOT / "config" / "cyberport5.yaml")
    config = InfluxDB1StorageConfig(backend="influxdb1", url=influxd_server,
                                    database=influx_database)
    storage = open_storage(config, site_id=site.id)
    await storage.start()
    # the first hour of a Hong Kong day, so that today's PUE has full coverage too
    hk = ZoneInfo(site.config.site.timezone)
    midnight = datetime.now(hk).replace(hour=0, minute=0, second=0, microsecond=0)
    if midnight.timestamp() + 3600 > time.time():
        midnight -= timedelta(days=1)
    start = midnight.timestamp()
    now = start + 3600
    try:
        # the history with what the running system derives (live PUE, redundancy) on the way
        await backfill(site, storage, start_s=start, end_s=now, step_s=120.0, progress=False,
                       live=True)
        analytics = AnalyticsService(site, storage, anomalies=False)
        for minutes_ago in (20, 10, 0):  # three analytics runs: a short history of results
            await analytics.run_once(int((now - 60 * minutes_ago) * 1e9))
    finally:
        await storage.close()
    window = f"time >= {int(start * 1e9)} AND time <= {int(now * 1e9)}"
    dashboard = facility_dashboard()
    sites = _query(influxd_server, influx_database, dashboard["templating"]["list"][0]["query"])
    assert sites["results"][0]["series"][0]["values"] == [["site", site.id]]
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            text = (target["query"].replace("$timeFilter", window)
                    .replace("$__interval", "5m").replace("$site", site.id))
            result = _query(influxd_server, influx_database, text)["results"][0]
            assert "error" not in result, f"{panel['title']}: {result.get('error')}"
            values = [v for s in result.get("series", []) for row in s["values"]
                      for v in row[1:] if v is not None]
            assert values, f"{panel['title']} ({target['alias']}) returned no data: {text}"
    # a spot check of meaning: the IT load the dashboard sums equals the racks' feeds
    it = _query(influxd_server, influx_database, dashboard["panels"][2]["targets"][0]["query"]
                .replace("$timeFilter", window).replace("$__interval", "1h")
                .replace("$site", site.id))
    totals = [row[1] for row in it["results"][0]["series"][0]["values"] if row[1] is not None]
    assert totals and all(500 < kw < 3000 for kw in totals)  # 200 racks, design 2,000 kW
