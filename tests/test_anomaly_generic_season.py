"""The generic detector's coarse seasonal profile: a week of 1-minute data (more than the
per-sample rings keep) teaches the weekly pattern, so the Monday morning that follows a quiet
weekend is not an anomaly when last Monday looked the same, and a real shift still is."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dcim.analytics.anomaly_base import NS, SeriesData
from dcim.analytics.anomaly_generic import SeriesModel, generic_anomalies
from dcim.analytics.anomaly_generic_calib import Profile
from dcim.storage.base import SeriesKey

KEY = SeriesKey("rack_monitor", "RM-H1-A01", "feed_a_power_kw")
MONDAY = 1_782_662_400  # 2026-06-29 00:00 UTC, a Monday
STEP = 60.0


def office_load(t_s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A rack's power: 5 % lower at weekends (a step at midnight), a business-hours hump on
    weekdays (09-19 h, 7 %), AR(1) noise with a 15-minute memory."""
    day = ((t_s - MONDAY) // 86400) % 7
    hour = ((t_s - MONDAY) % 86400) / 3600.0
    weekend = day >= 5
    hump = 0.07 / (1 + np.exp(-(hour - 8.5) / 0.3)) / (1 + np.exp((hour - 19.0) / 0.3))
    shape = np.where(weekend, 0.95, 1.0) * (0.98 + np.where(weekend, 0.3, 1.0) * hump)
    phi = math.exp(-STEP / 900.0)
    eps = rng.normal(0.0, 0.01 * math.sqrt(1 - phi * phi), t_s.size)
    noise = np.empty_like(eps)
    prev = 0.0
    for i, e in enumerate(eps):
        prev = phi * prev + e
        noise[i] = prev
    return np.round(2.4 * shape * (1 + noise), 3)  # a meter's 1 W resolution


def test_profile_fill_equals_adding_each_sample_and_gaps_stay_empty() -> None:
    rng = np.random.default_rng(1)
    t = ((MONDAY + np.arange(5000) * STEP) * NS).astype(np.int64)
    v = rng.normal(10.0, 1.0, t.size)
    v[1000:1100] = np.nan
    one, many = Profile(900.0, 86400.0), Profile(900.0, 86400.0)
    for ti, vi in zip(t.tolist(), v.tolist()):
        if vi == vi:
            one.add(ti, vi)
    many.fill(t, v)
    last = one.bucket(int(t[-1]))
    for b in range(last - 100, last + 1):
        assert one.mean(b) == pytest.approx(many.mean(b), nan_ok=True)
    # the held span is about a day: older buckets are gone, and so is the future
    assert math.isnan(one.mean(last - one.n)) and math.isnan(one.mean(last + 1))
    inside = one.bucket(int(t[1000])) + 1  # wholly inside the gap
    assert math.isnan(many.mean(inside)) or last - inside >= many.n
    # means over a span skip the empty buckets
    assert len(one.means(last - 10, last + 1)) == 11
    assert np.mean(one.means(last - 10, last + 1)) == pytest.approx(
        float(np.nanmean(v[-11 * 15:].reshape(11, 15).mean(axis=1))), rel=0.05)


def _episodes(history_days: float, warm_days: float, seed: int, shift: float = 0.0) -> list:
    """Episodes raised over a Monday after `history_days` of history ending Sunday midnight."""
    rng = np.random.default_rng(seed)
    start = MONDAY + 7 * 86400 - history_days * 86400
    t_s = np.arange(start, MONDAY + 8 * 86400, STEP)
    v = office_load(t_s, rng)
    if shift:
        v[t_s >= MONDAY + 7 * 86400 + 14 * 3600] += shift  # 14:00 on the Monday under test
    t = (t_s * NS).astype(np.int64)
    n_fit = int(np.searchsorted(t_s, MONDAY + 7 * 86400))
    model = SeriesModel.fit(t[:n_fit], v[:n_fit],
                            warm_from_ns=int(t[n_fit - 1]) - int(warm_days * 86400 * NS))
    assert model.declined is None
    return generic_anomalies(KEY, t[n_fit:], v[n_fit:], model)


def test_a_week_of_history_knows_monday_and_two_days_do_not() -> None:
    """Same per-sample warming (the last two days: the weekend); only the profile differs."""
    with_week = [len(_episodes(9.5, 2.0, seed)) for seed in range(3)]
    weekend_only = [len(_episodes(2.0, 2.0, seed)) for seed in range(3)]
    assert sum(with_week) <= 1, with_week  # budget: 1 a week; three Mondays
    assert sum(weekend_only) >= 3, weekend_only  # each Monday surprises a weekend-only model


def test_a_real_shift_on_a_known_monday_is_still_raised() -> None:
    found = _episodes(9.5, 2.0, seed=4, shift=0.25)  # +10 % of the rack's load at 14:00
    at = MONDAY + 7 * 86400 + 14 * 3600
    hits = [a for a in found if at * NS <= a.raised_ns <= (at + 3600) * NS]
    assert hits, [(a.kind, a.raised_ns / NS - at) for a in found]
    assert hits[0].kind in ("spike", "level_shift")


def test_the_detector_fills_the_profile_from_all_its_history() -> None:
    """Detector.fit warms on the last generic_fit_s only, but the profile gets everything: the
    site layer knows Monday after ten days of history, as the service reads them."""
    from dcim.analytics.anomaly import Detector, DetectorConfig
    from dcim.analytics.anomaly_base import SeriesData

    rng = np.random.default_rng(7)
    t_s = np.arange(MONDAY - 3 * 86400, MONDAY + 8 * 86400, STEP)
    v = office_load(t_s, rng)
    t = (t_s * NS).astype(np.int64)
    cut = int(np.searchsorted(t_s, MONDAY + 7 * 86400))
    raised = {}
    for days in (10.0, 2.0):  # the history read; warmed on its last two days either way
        keep = t_s[:cut] >= MONDAY + 7 * 86400 - days * 86400
        det = Detector(None, DetectorConfig(layers=("generic",), generic_fit_s=2 * 86400.0,
                                            follow=True))
        det.fit({KEY: SeriesData(t[:cut][keep], v[:cut][keep])}, now_ns=int(t[cut]))
        raised[days] = det.detect({KEY: SeriesData(t[cut:], v[cut:])})
    assert len(raised[10.0]) == 0, [a.message for a in raised[10.0]]
    assert len(raised[2.0]) >= 1


def test_only_the_periods_the_history_shows_are_used() -> None:
    """Noise gets no seasonal correction (it would only blur a real shift with last week's
    noise); the office load gets both its daily and its weekly pattern."""
    rng = np.random.default_rng(2)
    t_s = np.arange(MONDAY, MONDAY + 10 * 86400, STEP)
    t = (t_s * NS).astype(np.int64)
    noise = SeriesModel.fit(t, rng.normal(5.0, 0.2, t.size), warm_from_ns=int(t[-1]) - 86400 * NS)
    office = SeriesModel.fit(t, office_load(t_s, rng), warm_from_ns=int(t[-1]) - 86400 * NS)
    assert noise.seasonal == []
    assert sorted(office.seasonal) == [86400.0, 7 * 86400.0]


async def test_the_service_fills_the_profiles_from_older_coarse_history(tmp_path) -> None:
    """AnomalyStage(training_s=3 d, profile_s=10 d) reads three days at one minute and the seven
    before as 15-minute means: the generic model of a rack feed then knows last week's Monday,
    and says nothing this Monday; without the coarse read (profile_s = training_s) the same
    Monday is news. (The default reads all ten days at one minute.)"""
    from dcim.anomaly_service import AnomalyStage
    from dcim.config.storage import EmbeddedStorageConfig
    from dcim.site import load_site
    from dcim.storage.base import Sample
    from dcim.storage.embedded import EmbeddedStorage

    site = load_site(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")),
                              site_id=site.id)
    await storage.start()
    try:
        stage = AnomalyStage(site, storage, model_dir=tmp_path / "models")
        feed = next(k for k in stage.keys if k.point == "feed_a_power_kw")
        probe = next(k for k in stage.keys if k.point.startswith("inlet_temp"))
        start, monday = MONDAY - 3 * 86400, MONDAY + 7 * 86400
        t_s = np.arange(start, monday + 86400, STEP)
        v = office_load(t_s, np.random.default_rng(11))
        await storage.write([Sample(k, int(ts * NS), float(x if k == feed else 21.0 + x))
                             for ts, x in zip(t_s.tolist(), v.tolist()) for k in (feed, probe)])
        raised = {}
        for profile_days in (10.0, 3.0):
            stage = AnomalyStage(site, storage, model_dir=tmp_path / f"m{profile_days}",
                                 training_s=3 * 86400, profile_s=profile_days * 86400)
            await stage.train(monday * NS)
            model = stage.detector.generic[feed]  # type: ignore[union-attr]
            week_ago = model.profile.bucket((monday - 7 * 86400 + 9 * 3600) * NS)
            assert math.isnan(model.profile.mean(week_ago)) == (profile_days == 3.0)
            cut = int(np.searchsorted(t_s, monday))
            got = stage.detector.detect(  # type: ignore[union-attr]
                {feed: SeriesData((t_s[cut:] * NS).astype(np.int64), v[cut:])})
            raised[profile_days] = [a for a in got if a.layer == "generic"]
    finally:
        await storage.close()
    assert raised[10.0] == [], [a.message for a in raised[10.0]]
    assert raised[3.0], "three days, a weekend among them, should not know a Monday"
