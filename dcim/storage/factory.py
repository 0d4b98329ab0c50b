"""Choose the storage backend named by the configuration."""

from __future__ import annotations

from dcim.storage.base import Storage
from dcim.config.storage import (
    EmbeddedStorageConfig,
    InfluxDB1StorageConfig,
    InfluxDB2StorageConfig,
    StorageConfig,
)


def open_storage(config: StorageConfig, *, site_id: str) -> Storage:
    """The backend for config, not yet started (call start(), and close() when done)."""
    if isinstance(config, EmbeddedStorageConfig):
        from dcim.storage.embedded import EmbeddedStorage

        return EmbeddedStorage(config, site_id=site_id)
    if isinstance(config, InfluxDB1StorageConfig):
        from dcim.storage.influxdb1 import InfluxDB1Storage

        return InfluxDB1Storage(config, site_id=site_id)
    if isinstance(config, InfluxDB2StorageConfig):
        # Imported here: influxdb-client is only needed by sites that use it.
        from dcim.storage.influxdb2 import InfluxDB2Storage

        return InfluxDB2Storage(config, site_id=site_id)
    raise TypeError(f"unknown storage config {type(config).__name__}")
