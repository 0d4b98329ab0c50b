"""The Grafana dashboard for a dcim InfluxDB 1.x store, built here and exported as JSON.

`python -m dcim.dashboards.grafana > dashboards/grafana/facility.json` writes it; a test
checks the file equals this output and runs every query against a real influxd holding a
simulated site, so the dashboard cannot drift from the storage schema (docs/storage.md):
measurement = device type, tags `site`, `device`, `point`, fields `value` and `quality`.

Import it in Grafana (Dashboards > Import) and pick the InfluxDB (InfluxQL) data source that
points at the site's database. The live dcim dashboard (dashboards/app.py) stays the place
for alarms and operator actions; this one is for history and trends.
"""

from __future__ import annotations

import json
import sys
from typing import Any

DS = {"type": "influxdb", "uid": "${DS_DCIM}"}
GOOD = "\"quality\" = 0"


def _where(measurement: str, point: str) -> str:
    """The WHERE clause of one point of one measurement on the selected site."""
    test = f"=~ /{point}/" if point.startswith("^") else f"= '{point}'"
    return (f"FROM \"{measurement}\" WHERE \"site\" =~ /^$site$/ AND \"point\" {test} "
            f"AND {GOOD} AND $timeFilter")


QUERIES: dict[str, list[tuple[str, str]]] = {
    # panel title -> (legend, InfluxQL) per target
    "PUE (live, rolling 15 min) and today": [
        ("PUE live", "SELECT mean(\"value\") " + _where("analytics", "pue_live")
         + " GROUP BY time($__interval) fill(none)"),
        ("PUE today", "SELECT mean(\"value\") " + _where("analytics", "pue_today")
         + " GROUP BY time($__interval) fill(none)"),
    ],
    "pPUE: cooling and distribution": [
        ("cooling", "SELECT mean(\"value\") " + _where("analytics", "ppue_cooling_live")
         + " GROUP BY time($__interval) fill(none)"),
        ("distribution", "SELECT mean(\"value\") " + _where("analytics", "ppue_distribution_live")
         + " GROUP BY time($__interval) fill(none)"),
    ],
    "IT load (sum of rack feeds), kW": [
        ("IT load", "SELECT sum(\"kw\") FROM (SELECT mean(\"value\") AS \"kw\" "
         + _where("rack_monitor", "^feed_[ab]_power_kw$")
         + " GROUP BY time($__interval), \"device\", \"point\") GROUP BY time($__interval)"),
    ],
    "UPS module output, kW": [
        ("$tag_device", "SELECT mean(\"value\") " + _where("ups_module", "output_power_kw")
         + " GROUP BY time($__interval), \"device\" fill(none)"),
    ],
    "Hottest rack inlet, degC (ASHRAE A1: recommended 18-27, allowable 15-32)": [
        ("hottest inlet", "SELECT max(\"value\") " + _where("rack_monitor", "^inlet_temp_")
         + " GROUP BY time($__interval) fill(none)"),
        ("mean inlet", "SELECT mean(\"value\") " + _where("rack_monitor", "^inlet_temp_")
         + " GROUP BY time($__interval) fill(none)"),
    ],
    "Racks by hottest inlet over the range": [
        ("$tag_device", "SELECT max(\"value\") " + _where("rack_monitor", "^inlet_temp_")
         + " GROUP BY \"device\""),
    ],
    "Redundancy: spare units per group": [
        ("$tag_point", "SELECT min(\"value\") " + _where("analytics", "^redundancy_.*_spare$")
         + " GROUP BY time($__interval), \"point\" fill(none)"),
    ],
    "Tier III: concurrently maintainable (1 = yes)": [
        ("concurrently maintainable", "SELECT min(\"value\") "
         + _where("analytics", "concurrently_maintainable")
         + " GROUP BY time($__interval) fill(none)"),
    ],
    "Chilled water supply, degC": [
        ("$tag_device", "SELECT mean(\"value\") " + _where("chiller", "chw_supply_temp_c")
         + " GROUP BY time($__interval), \"device\" fill(none)"),
    ],
    "Outdoor dry bulb and wet bulb, degC": [
        ("dry bulb", "SELECT mean(\"value\") " + _where("weather_station", "outdoor_temp_c")
         + " GROUP BY time($__interval) fill(none)"),
        ("wet bulb", "SELECT mean(\"value\") " + _where("weather_station", "wet_bulb_c")
         + " GROUP BY time($__interval) fill(none)"),
    ],
}
TABLES: set[str] = {"Racks by hottest inlet over the range"}
THRESHOLDS: dict[str, list[tuple[str, float | None]]] = {
    "Hottest rack inlet, degC (ASHRAE A1: recommended 18-27, allowable 15-32)":
        [("green", None), ("yellow", 27), ("red", 32)],
    "Racks by hottest inlet over the range": [("green", None), ("yellow", 27), ("red", 32)],
    "PUE (live, rolling 15 min) and today": [("green", None), ("yellow", 1.5), ("red", 1.8)],
}


def _panel(i: int, title: str) -> dict[str, Any]:
    table = title in TABLES
    thresholds = THRESHOLDS.get(title, [("green", None)])
    return {
        "id": i + 1, "title": title, "type": "table" if table else "timeseries",
        "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"thresholds": {"mode": "absolute", "steps": [
            {"color": color, "value": value} for color, value in thresholds]}},
            "overrides": []},
        "options": {} if table else {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + k), "datasource": DS, "rawQuery": True,
                     "resultFormat": "table" if table else "time_series", "alias": alias,
                     "query": query}
                    for k, (alias, query) in enumerate(QUERIES[title])],
    }


def facility_dashboard() -> dict[str, Any]:
    """The dashboard JSON, ready for Grafana's import (with a data source input)."""
    return {
        "__inputs": [{"name": "DS_DCIM", "label": "dcim InfluxDB", "type": "datasource",
                      "pluginId": "influxdb", "pluginName": "InfluxDB"}],
        "title": "dcim: facility history",
        "uid": "dcim-facility",
        "description": "PUE, IT load, UPS, rack inlets, redundancy and cooling from a dcim "
                       "InfluxDB 1.x store (generated by dcim.dashboards.grafana).",
        "tags": ["dcim", "data-centre"],
        "timezone": "browser",
        "schemaVersion": 39,
        "time": {"from": "now-24h", "to": "now"},
        "refresh": "1m",
        "templating": {"list": [{
            "name": "site", "label": "site", "type": "query", "datasource": DS,
            "query": "SHOW TAG VALUES FROM \"analytics\" WITH KEY = \"site\"",
            "refresh": 1, "includeAll": False, "multi": False}]},
        "panels": [_panel(i, title) for i, title in enumerate(QUERIES)],
    }


def export() -> str:
    """The JSON text of the dashboard file."""
    return json.dumps(facility_dashboard(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    sys.stdout.write(export())
