"""Storage configuration: which backend and how to reach it (the `storage:` section of a site file)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator


MiB = 1 << 20
GiB = 1 << 30


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WriteOptions(_Base):
    """Batching and retry policy shared by all backends."""

    batch_size: int = Field(5000, ge=1, le=100_000, description="samples per write request")
    flush_interval_s: float = Field(1.0, gt=0, le=60, description="longest a sample waits in the batch")
    max_retries: int = Field(5, ge=0, le=100, description="retries of a failed write before StorageError")
    retry_backoff_s: float = Field(0.2, gt=0, le=60, description="first retry delay, doubled each time")
    timeout_s: float = Field(10.0, gt=0, le=300, description="HTTP request timeout")


class BufferConfig(_Base):
    """The durable buffer in front of storage: how much disk it may hold (docs/storage.md)."""

    max_bytes: int = Field(
        2 * GiB, ge=32 * MiB,
        description="cap on the buffer's segment files (at least two 16 MiB segments); an append "
                    "that would pass it drops the oldest segment, counted in dropped_samples")
    min_free_bytes: int = Field(
        256 * MiB, ge=0,
        description="free space to leave on the buffer's filesystem; below it the oldest segments "
                    "are dropped as if max_bytes were reached; 0 turns the check off")


class _Backend(_Base):
    """What every backend's section holds besides its own connection settings."""

    buffer: BufferConfig = Field(default_factory=BufferConfig,
                                 description="the durable buffer that collectors write through")


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def _secret_in_clear(url: HttpUrl, secret: str, allowed: bool) -> None:
    """A password or token sent over plain http to another host is a config error."""
    if url.scheme == "http" and (url.host or "") not in LOOPBACK_HOSTS and not allowed:
        raise ValueError(f"url: {url} is plain http to another host, so the {secret} would "
                         "cross the network in clear; use https, or set "
                         "allow_insecure_password: true to accept that (warned at every start)")


class EmbeddedStorageConfig(_Backend):
    """SQLite in WAL mode in one file: zero set-up, for the demo and small sites."""

    backend: Literal["embedded"] = Field("embedded", description="SQLite in one file (the default)")
    path: str = Field("var/dcim.sqlite", description="database file, relative to the working directory")
    retention_days: int | None = Field(None, ge=1, description="drop samples older than this; none keeps all")
    write: WriteOptions = Field(WriteOptions(), description="batching and retries of writes")


class InfluxDB1StorageConfig(_Backend):
    """InfluxDB 1.x through /write (line protocol) and /query (InfluxQL)."""

    backend: Literal["influxdb1"] = Field(description="InfluxDB 1.x (InfluxQL)")
    url: HttpUrl = Field(description="base URL, e.g. http://127.0.0.1:8086")
    database: str = Field("dcim", min_length=1, description="database samples are written to")
    retention_policy: str | None = Field(None, description="retention policy to write to; "
                                         "none uses the database's default")
    username: str | None = Field(None, description="user name; none connects without one")
    password_env: str | None = Field(None, description="environment variable that holds the password")
    allow_insecure_password: bool = Field(
        False, description="accept sending the password over plain http to another host")
    create_database: bool = Field(True, description="create the database at start if missing")
    write: WriteOptions = Field(WriteOptions(), description="batching and retries of writes")

    @model_validator(mode="after")
    def _no_password_in_clear(self) -> InfluxDB1StorageConfig:
        if self.password_env is not None:
            _secret_in_clear(self.url, "password", self.allow_insecure_password)
        return self


class InfluxDB2StorageConfig(_Backend):
    """InfluxDB 2.x / 3.x (and 1.8+ compatibility endpoints) through influxdb-client's async API."""

    backend: Literal["influxdb2"] = Field(description="InfluxDB 2.x / 3.x (Flux, buckets)")
    url: HttpUrl = Field(description="base URL, e.g. http://127.0.0.1:8086")
    org: str = Field(min_length=1, description="organisation; '-' for a 1.8+ server")
    bucket: str = Field(min_length=1, description="bucket; 'database/retention_policy' for a 1.8+ server")
    token_env: str = Field("DCIM_INFLUX_TOKEN", description="environment variable that holds the API token")
    allow_insecure_password: bool = Field(
        False, description="accept sending the API token over plain http to another host")
    write: WriteOptions = Field(WriteOptions(), description="batching and retries of writes")

    @model_validator(mode="after")
    def _no_token_in_clear(self) -> InfluxDB2StorageConfig:
        _secret_in_clear(self.url, "API token", self.allow_insecure_password)
        return self


StorageConfig = Annotated[
    EmbeddedStorageConfig | InfluxDB1StorageConfig | InfluxDB2StorageConfig,
    Field(discriminator="backend"),
]
