"""GET /api/series over real HTTP (aiohttp's TestServer) on a real embedded store: names
checked against the site's own devices and points, windows bounded, sign-in and the viewer
permission enforced. The clock is fixed; nothing sleeps."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestServer

from dcim.auth.passwords import Passwords
from dcim.auth.roles import Role
from dcim.auth.service import Authenticator
from dcim.auth.store import UserStore
from dcim.config.auth import AuthConfig
from dcim.config.storage import EmbeddedStorageConfig
from dcim.dashboards.app import (MAX_SERIES_ROWS, DashboardSettings, SeriesStore, create_app,
                                 series_request)
from dcim.live.service import LiveState
from dcim.site import Site, load_site
from dcim.storage.base import Quality, Sample, SeriesKey
from dcim.storage.embedded import EmbeddedStorage
from tests.test_auth import FAST, PASSWORD, Clock
from tests.test_web_security import Browser

ROOT = Path(__file__).resolve().parents[1]
NS = 1_000_000_000
T0_S = 1_796_083_200  # 2026-12-01T00:00:00Z
T0_NS = T0_S * NS
NOW_S = T0_S + 3600
DEVICE, POINT = "RM-H1-A02", "inlet_temp_middle_c"
KEY = SeriesKey("rack_monitor", DEVICE, POINT)
SINCE = "since=2026-12-01T00:00:00Z&until=2026-12-01T00:03:00Z"
WIDE = "since=2026-12-01T00:00:00Z&until=2026-12-01T03:00:00Z"
PATH = f"/api/series?device={DEVICE}&point={POINT}&{SINCE}"


@pytest.fixture(scope="module")
def site() -> Site:
    return load_site(ROOT / "config" / "cyberport5.yaml")


def site_points(site: Site) -> dict[str, dict[str, str]]:
    """What dcim/system.py hands the dashboard: device -> point -> unit."""
    return {d.id: {p.name: p.unit or "" for p in d.profile.points} for d in site.devices.values()}


@pytest_asyncio.fixture
async def live(site: Site) -> AsyncIterator[LiveState]:
    state = LiveState(site, None)
    await state.start()
    try:
        yield state
    finally:
        await state.close()


@pytest_asyncio.fixture
async def store(tmp_path: Path) -> AsyncIterator[EmbeddedStorage]:
    """Three minutes of POINT every 20 s (one stale, one bad) from T0."""
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")),
                              site_id="cyberport5")
    await storage.start()
    rows = [Sample(KEY, T0_NS + i * 20 * NS, 20.0 + i) for i in range(9)]
    rows[4] = Sample(KEY, rows[4].time_ns, 23.0, Quality.STALE)
    rows[7] = Sample(KEY, rows[7].time_ns, math.nan, Quality.BAD)
    await storage.write(rows)
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
def users(tmp_path: Path) -> Iterator[UserStore]:
    store = UserStore(tmp_path / "auth.sqlite", passwords=Passwords(FAST),
                      clock_ns=Clock(NOW_S).ns)
    store.add_user("vera", Role.VIEWER, PASSWORD)
    yield store
    store.close()


@asynccontextmanager
async def dashboard(site: Site, live: LiveState, store: SeriesStore | None,
                    auth: Authenticator | None = None) -> AsyncIterator[TestServer]:
    app = create_app(DashboardSettings(), live, None, auth=auth, clock=Clock(NOW_S),
                     device_types={d.id: d.device_type for d in site.devices.values()},
                     points=site_points(site), series=store)
    server = TestServer(app)
    async with server:
        yield server


async def get(site: Site, live: LiveState, store: SeriesStore | None,
              path: str) -> tuple[int, Any]:
    async with dashboard(site, live, store) as server, Browser(server) as browser:
        return await browser.get(path)


async def test_raw_rows_with_unit_and_quality(site: Site, live: LiveState,
                                              store: EmbeddedStorage) -> None:
    status, doc = await get(site, live, store, PATH)
    assert status == 200, doc
    assert {k: doc[k] for k in ("device", "point", "unit", "every_s", "agg")} == {
        "device": DEVICE, "point": POINT, "unit": "degC", "every_s": None, "agg": None}
    assert doc["points"][:2] == [[T0_S * 1000, 20.0, "good"], [T0_S * 1000 + 20_000, 21.0, "good"]]
    assert doc["points"][4] == [T0_S * 1000 + 80_000, 23.0, "stale"]
    assert doc["points"][7] == [T0_S * 1000 + 140_000, None, "bad"]
    assert len(doc["points"]) == 9


@pytest.mark.parametrize(("agg", "values"), [
    ("mean", [21.0, 24.0, 27.0]),
    ("max", [22.0, 25.0, 28.0]),
    ("count", [3, 2, 2]),
], ids=["mean", "max", "count"])
async def test_buckets_per_every(site: Site, live: LiveState, store: EmbeddedStorage,
                                 agg: str, values: list[float]) -> None:
    status, doc = await get(site, live, store, f"{PATH}&every=1m&agg={agg}")
    assert status == 200, doc
    assert (doc["every_s"], doc["agg"]) == (60.0, agg)
    assert [p[0] for p in doc["points"]] == [T0_S * 1000 + i * 60_000 for i in range(3)]
    assert [p[1] for p in doc["points"]] == pytest.approx(values)
    assert [p[2] for p in doc["points"]] == ["good"] * 3


async def test_durations_count_back_from_the_clock(site: Site, live: LiveState,
                                                    store: EmbeddedStorage) -> None:
    # NOW is T0 + 1 h: "since=1h" starts at T0, so every stored sample is in; the window
    # ends just after NOW, so the bucket that starts at NOW is there (empty)
    status, doc = await get(site, live, store, f"/api/series?device={DEVICE}&point={POINT}"
                                               "&since=1h&every=30m&agg=count")
    assert status == 200, doc
    assert [(p[1], p[2]) for p in doc["points"]] == [(7, "good"), (None, None),
                                                            (None, None)]


@pytest.mark.parametrize(("query", "error"), [
    (f"device=RM-H1-A2&point={POINT}", "unknown device 'RM-H1-A2'; did you mean RM-H1-A02"),
    (f"device={DEVICE}&point=inlet_temp", "unknown point 'inlet_temp' of RM-H1-A02; did you mean"),
    (f"device={DEVICE}", "unknown point '' of RM-H1-A02"),
    (f"device={DEVICE}'%20OR%201=1--&point={POINT}", "unknown device"),
    (f"device=analytics&point={POINT}", "unknown device 'analytics'"),
    (f"device={DEVICE}&point={POINT}&since=soon", "since must be a duration before now"),
    (f"device={DEVICE}&point={POINT}&since=1h&until=2h", "since must be before until"),
    (f"device={DEVICE}&point={POINT}&every=0s", "every must be at least 1s"),
    (f"device={DEVICE}&point={POINT}&every=fast", "every must be a duration"),
    (f"device={DEVICE}&point={POINT}&agg=max", "agg needs every"),
    (f"device={DEVICE}&point={POINT}&every=1m&agg=median", "agg must be one of"),
    (f"device={DEVICE}&point={POINT}&since=30d&every=1m", "raise every or narrow"),
    (f"device={DEVICE}&point={POINT}&limit=5", "unknown parameter 'limit'"),
], ids=["device-typo", "point-typo", "no-point", "injection", "not-a-device", "bad-since",
        "empty-window", "zero-every", "bad-every", "agg-without-every", "unknown-agg",
        "too-many-buckets", "unknown-parameter"])
async def test_what_is_refused_says_why(site: Site, live: LiveState, store: EmbeddedStorage,
                                        query: str, error: str) -> None:
    status, doc = await get(site, live, store, f"/api/series?{query}")
    assert status == 400
    assert error in doc["error"], doc


async def test_a_raw_range_beyond_the_bound_is_refused(site: Site, live: LiveState,
                                                       tmp_path: Path) -> None:
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "big.sqlite")),
                              site_id="cyberport5")
    await storage.start()
    try:
        await storage.write([Sample(KEY, T0_NS + i * NS, float(i))
                             for i in range(MAX_SERIES_ROWS + 1)])
        status, doc = await get(site, live, storage, f"/api/series?device={DEVICE}"
                                                     f"&point={POINT}&{WIDE}")
        assert status == 400
        assert "more than 10000 samples" in doc["error"] and "every=1m" in doc["error"]
        status, doc = await get(site, live, storage, f"/api/series?device={DEVICE}"
                                                     f"&point={POINT}&{WIDE}&every=1m")
        assert status == 200 and len(doc["points"]) == 180  # 3 h of minutes
        assert doc["points"][0][1] == pytest.approx(29.5)  # the mean of 0..59
        assert sum(p[1] is not None for p in doc["points"]) == 167  # 10001 s of samples
    finally:
        await storage.close()


async def test_without_a_store_503(site: Site, live: LiveState) -> None:
    status, doc = await get(site, live, None, PATH)
    assert (status, doc["error"]) == (503, "storage is not running")


async def test_sign_in_and_the_viewer_permission(site: Site, live: LiveState,
                                                 store: EmbeddedStorage,
                                                 users: UserStore) -> None:
    auth = Authenticator(AuthConfig(), users, clock=Clock(NOW_S))
    async with dashboard(site, live, store, auth) as server, Browser(server) as browser:
        status, doc = await browser.get(PATH)
        assert status == 401 and "sign in" in doc["error"]
        assert await browser.sign_in("vera") == 200
        status, doc = await browser.get(PATH)
        assert status == 200 and len(doc["points"]) == 9


def test_devices_without_a_type_are_refused_at_build(site: Site) -> None:
    with pytest.raises(ValueError, match="without a device type: RM-H1-A02"):
        create_app(DashboardSettings(), LiveState(site, None), None,
                   points={DEVICE: {POINT: "degC"}}, device_types={})


def test_series_request_is_pure() -> None:
    points: Mapping[str, tuple[str, Mapping[str, str]]] = {DEVICE: ("rack_monitor", {POINT: "degC"})}
    want = series_request({"device": DEVICE, "point": POINT, "since": "90s", "every": "30s"},
                          points, NOW_S * NS)
    assert (want.key, want.unit, want.start_ns, want.end_ns, want.every_ns) == (
        KEY, "degC", NOW_S * NS - 90 * NS, NOW_S * NS + 1, 30 * NS)
