"""Errors from a real influxd: rejected writes name the URL and the server's message."""

from __future__ import annotations

import aiohttp
import pytest

from dcim.storage.base import Sample, SeriesKey, StorageError
from dcim.config.storage import InfluxDB1StorageConfig, WriteOptions
from dcim.storage.influxdb1 import InfluxDB1Storage
from dcim.storage.retry import StorageRejected
from tests import influxd

influxd_server = influxd.influxd_server
influx_database = influxd.influx_database

T0 = 1_700_000_000_000_000_000


def config(url: str, database: str, **kw: object) -> InfluxDB1StorageConfig:
    return InfluxDB1StorageConfig(backend="influxdb1", url=url, database=database,
                                  write=WriteOptions(max_retries=2, retry_backoff_s=0.01), **kw)


@pytest.mark.influxdb
@pytest.mark.parametrize("raw_value", ['"text"', "true", "5i"], ids=["string", "boolean", "integer"])
async def test_field_type_conflict_is_rejected(influxd_server: str, influx_database: str,
                                               raw_value: str) -> None:
    store = InfluxDB1Storage(config(influxd_server, influx_database), site_id="s")
    await store.start()
    line = f"pdu,device=x,point=y,site=s value={raw_value} {T0}"
    params = {"db": influx_database, "precision": "ns"}
    async with aiohttp.ClientSession() as http, http.post(f"{influxd_server}/write", params=params,
                                                          data=line) as resp:
        assert resp.status == 204
    key = SeriesKey("pdu", "PDU-1", "kw")
    with pytest.raises(StorageRejected) as info:
        await store.write([Sample(key, T0 + 1, 1.0)])
    message = str(info.value)
    assert f"{influxd_server}/write" in message and "HTTP 400" in message
    assert "field type conflict" in message
    await store.close()


@pytest.mark.influxdb
async def test_missing_database_is_rejected(influxd_server: str, influx_database: str) -> None:
    store = InfluxDB1Storage(config(influxd_server, influx_database, create_database=False), site_id="s")
    await store.start()
    with pytest.raises(StorageRejected, match=r"HTTP 404.*database not found"):
        await store.write([Sample(SeriesKey("pdu", "a", "b"), T0, 1.0)])
    await store.close()


@pytest.mark.influxdb
async def test_password_is_not_shown(influxd_server: str, influx_database: str,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_INFLUX_PASSWORD", "hunter2")
    store = InfluxDB1Storage(config(influxd_server, influx_database, create_database=False,
                                    username="dcim", password_env="TEST_INFLUX_PASSWORD"), site_id="s")
    await store.start()
    with pytest.raises(StorageError) as info:
        await store.write([Sample(SeriesKey("pdu", "a", "b"), T0, 1.0)])
    assert "hunter2" not in str(info.value)
    await store.close()


@pytest.mark.influxdb
async def test_bad_query_is_rejected(influxd_server: str, influx_database: str) -> None:
    store = InfluxDB1Storage(config(influxd_server, influx_database), site_id="s")
    await store.start()
    with pytest.raises(StorageRejected, match="/query"):
        await store.query("SELEKT nothing")
    await store.close()
