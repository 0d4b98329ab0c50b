"""Choose the storage backend named by the configuration."""

from __future__ import annotations

import logging

from dcim.storage.base import Storage
from dcim.config.storage import (
    LOOPBACK_HOSTS,
    EmbeddedStorageConfig,
    InfluxDB1StorageConfig,
    InfluxDB2StorageConfig,
    StorageConfig,
)

log = logging.getLogger(__name__)


def open_storage(config: StorageConfig, *, site_id: str) -> Storage:
    """The backend for config, not yet started (call start(), and close() when done)."""
    if getattr(config, "allow_insecure_password", False):
        url = getattr(config, "url", None)
        if url is not None and url.scheme == "http" and url.host not in LOOPBACK_HOSTS:
            log.warning("storage credentials cross the network in clear (plain http to another "
                        "host, allowed by allow_insecure_password)",
                        extra={"backend": config.backend, "url": str(url)})
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
