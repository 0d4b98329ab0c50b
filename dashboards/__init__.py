"""The aiohttp dashboard and Grafana dashboards (installed as dcim.dashboards)."""
