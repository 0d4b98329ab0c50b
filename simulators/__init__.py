"""Device simulators and the plant model (installed as dcim.simulators)."""
