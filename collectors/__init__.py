"""Protocol collectors: devices -> storage (installed as dcim.collectors)."""
