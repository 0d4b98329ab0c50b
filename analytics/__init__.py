"""Pure analytics over arrays and the site model (installed as dcim.analytics)."""
