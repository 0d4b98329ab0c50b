"""The site layer of anomaly detection: roles add physical layers only where a series is what
the role says, unknown series get the generic detector and a warning, degenerate histories
make a layer decline (never crash), and the false-alarm budget and confidence reach alarms."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from dcim.alarms.engine import AlarmEngine
from dcim.alarms.journal import AlarmJournal
from dcim.alarms.service import AlarmService
from dcim.alarms.types import Action, AlarmEvent, Priority
from dcim.analytics.anomaly import Detector, DetectorConfig, generic_confidence, role_decline
from dcim.analytics.anomaly_base import NS, Anomaly, SeriesData, window_samples
from dcim.analytics.anomaly_generic import GenericConfig, threshold_for_budget
from dcim.analytics.anomaly_robust import fit_robust, robust_anomalies
from dcim.analytics.anomaly_sensor import stuck
from dcim.config.notifications import NotificationsConfig
from dcim.config.storage import EmbeddedStorageConfig
from dcim.live.build import build_state, plan
from dcim.live.source import Version
from dcim.live.state import SiteState
from dcim.notify.channels import Message
from dcim.notify.notifier import Planner
from dcim.site import ConfigError, Site, load_site
from dcim.site.loader import parse_site
from dcim.storage.base import Sample, SeriesKey
from dcim.storage.embedded import EmbeddedStorage

ROOT = Path(__file__).resolve().parents[1]
SITE_FILE = ROOT / "config" / "cyberport5.yaml"
SITE = load_site(SITE_FILE)
T0 = 1_783_000_000
INLET = SeriesKey("rack_monitor", "RM-H1-A01", "inlet_temp_middle_c")
CRAH = SITE.devices_of_type("crah")[0]


def grid(n: int, step_s: float = 60.0, start: float = T0) -> np.ndarray:
    """n times in ns, step_s apart."""
    return ((start + np.arange(n) * step_s) * NS).astype(np.int64)


def noise(n: int, level: float = 22.0, sigma: float = 0.1, seed: int = 0) -> np.ndarray:
    """Gaussian noise around a level, quantised to 0.1 like the rack monitors."""
    return np.round(level + np.random.default_rng(seed).normal(0.0, sigma, n), 1)


def site_with(extra: str) -> Site:
    """The reference site with an `alarms:` section appended."""
    return parse_site(SITE_FILE.read_text() + extra, str(SITE_FILE))


# ---------------------------------------------------------------- unknown series


@pytest.mark.parametrize("site", [SITE, None], ids=["not-in-the-site", "no-site-at-all"])
def test_an_unknown_series_gets_the_generic_detector_and_one_warning(
        site: Site | None, caplog: pytest.LogCaptureFixture) -> None:
    key = SeriesKey("bms", "AHU-9", "duct_pressure_pa")
    t, v = grid(3000), noise(3000, 250.0, 2.0)
    v[2950] += 60.0  # 30 sigma, one sample
    batch = {key: SeriesData(t[2880:], v[2880:])}
    with caplog.at_level(logging.INFO, logger="dcim.analytics.anomaly"):
        det = Detector(site).fit({key: SeriesData(t[:2880], v[:2880])})
        found = det.detect(batch)
        assert det.detect(batch) == found  # scored from the fitted state each time
    assert [(a.layer, a.since_ns) for a in found] == [("generic", int(t[2950]))]
    assert 0.0 <= found[0].confidence <= 1.0
    assert "generic detector only" in det.notes["unknown AHU-9/duct_pressure_pa"]
    said = [r for r in caplog.records if "AHU-9" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING


def test_a_cause_is_logged_once_across_retrainings(caplog: pytest.LogCaptureFixture) -> None:
    key = SeriesKey("bms", "AHU-9", "duct_pressure_pa")
    history = {key: SeriesData(grid(100), noise(100, 250.0, 2.0))}
    told: set[str] = set()  # what the service keeps between one week's detector and the next
    with caplog.at_level(logging.WARNING, logger="dcim.analytics.anomaly"):
        first = Detector(SITE, told=told).fit(history)
        second = Detector(SITE, told=told).fit(history)
    assert first.notes == second.notes and "unknown AHU-9/duct_pressure_pa" in second.notes
    assert len([r for r in caplog.records if "AHU-9" in r.getMessage()]) == 1


def test_a_followed_model_scores_each_new_sample_once() -> None:
    key = SeriesKey("bms", "AHU-9", "duct_pressure_pa")
    t, v = grid(3100), noise(3100, 250.0, 2.0)
    v[3000] += 60.0
    det = Detector(None, DetectorConfig(follow=True)).fit({key: SeriesData(t[:2880], v[:2880])})
    first = det.detect({key: SeriesData(t[2880:2990], v[2880:2990])})
    # the next window overlaps the last one: only its new samples advance the model
    second = det.detect({key: SeriesData(t[2900:3100], v[2900:3100])})
    assert first == [] and [a.since_ns for a in second] == [int(t[3000])]
    assert det.tracks[key].last_ns == int(t[3099])


# ---------------------------------------------------------------- roles and their priors


def test_an_inlet_role_on_hourly_data_declines_its_layers_but_not_the_generic_one() -> None:
    n = 24 * 21
    t = grid(n, 3600.0)
    v = np.round(22.0 + np.random.default_rng(1).normal(0, 0.4, n))  # whole degrees: many repeats
    v[-30:-20] = 29.0  # above the ASHRAE recommended 27 degC for 10 h
    det = Detector(SITE).fit({INLET: SeriesData(t[:-48], v[:-48])})
    found = det.detect({INLET: SeriesData(t[-48:], v[-48:])})
    why = det.notes["inlet_temp_c layers on RM-H1-A01/inlet_temp_middle_c"]
    assert "sampled every 3600 s" in why and "300 s or finer" in why
    assert {a.layer for a in found} <= {"generic"}
    assert INLET in det.generic and INLET not in det.robust_base


@pytest.mark.parametrize(("values", "unit", "expect"), [
    pytest.param(noise(600, 295.0, 0.2), "", "are not rack inlet air in degC", id="kelvin"),
    pytest.param(noise(600, 22.0, 0.2), "degF", "declared unit 'degF'", id="wrong-unit"),
    pytest.param(noise(600, 22.0, 0.2), "degC", None, id="rack-air"),
])
def test_a_role_applies_only_where_the_series_is_what_the_role_says(
        values: np.ndarray, unit: str, expect: str | None) -> None:
    why = role_decline("inlet_temp_c", grid(600), values, unit)
    assert why is None if expect is None else expect in (why or "")


def test_a_series_that_is_not_air_temperature_gets_no_envelope_alarms() -> None:
    t, v = grid(600), noise(600, 295.0, 0.2)  # kelvin: every value "above 32 degC"
    det = Detector(SITE)
    found = det.detect({INLET: SeriesData(t, v)})
    assert [a for a in found if a.layer in ("envelope", "rate", "robust", "sensor")] == []
    assert "295" in det.notes["inlet_temp_c layers on RM-H1-A01/inlet_temp_middle_c"]


def test_windows_are_in_time_with_a_minimum_of_samples() -> None:
    hourly = grid(24 * 10, 3600.0)
    assert window_samples(hourly, 1200.0) == 1 and window_samples(hourly, 1200.0, 5) == 5
    v = noise(len(hourly), 22.0, 0.3, seed=3)
    v[100:102] = 22.0  # two equal hourly readings are not a flatline
    assert stuck(INLET, hourly, v, None) == []
    # the robust layer's 1 h window is 5 samples here, not one (its residual was always 0)
    base = fit_robust(hourly[:150], v[:150])
    v[200:202] += 5.0  # two samples: the on-delay (60 s) needs two
    found = robust_anomalies(INLET, hourly[150:], v[150:], base)
    assert [a.since_ns for a in found] == [int(hourly[200])]


def test_a_counter_is_watched_by_its_increments_and_a_state_flag_not_at_all() -> None:
    counter = SeriesKey("rack_monitor", "RM-H1-A01", "feed_a_energy_kwh")
    running = SeriesKey("chiller", "CH-1", "running")
    t = grid(3200)
    step = np.round(0.05 + np.random.default_rng(5).normal(0, 0.002, 3200), 4)  # kWh a minute
    step[3100:3130] = 0.2  # four times the load for half an hour
    total = 1e5 + np.cumsum(step)
    flag = np.where((np.arange(3200) // 400) % 2 == 0, 1.0, 0.0)  # starts and stops
    det = Detector(SITE).fit({counter: SeriesData(t[:2880], total[:2880]),
                              running: SeriesData(t[:2880], flag[:2880])})
    found = det.detect({counter: SeriesData(t[2880:], total[2880:]),
                        running: SeriesData(t[2880:], flag[2880:])})
    assert running not in det.generic
    assert [(a.series, a.layer, a.since_ns) for a in found] == [
        (counter, "generic", int(t[3100]))]


# ---------------------------------------------------------------- degenerate histories


def test_one_crah_supply_temperature_alone_makes_the_model_decline_not_crash() -> None:
    # was LinAlgError: Singular matrix (all-NaN feature rows filtered to none)
    key = CRAH.series("supply_temp_c")
    t, v = grid(600), noise(600, 19.0, 0.1)
    det = Detector(SITE).fit({key: SeriesData(t, v)})
    why = det.notes["crah model"]
    assert why.startswith("declined: crah: 0 complete rows of 600") and "return_temp_c" in why
    assert "crah" not in det.models and key in det.robust_base  # the rest learned
    w = v[:180].copy()
    w[90:95] += 4.0
    found = det.detect({key: SeriesData(grid(180, start=T0 + 600 * 60), w)})
    assert {a.layer for a in found} >= {"robust"}


def test_a_model_with_too_few_complete_rows_declines_with_the_count() -> None:
    t = grid(20)
    batch = {CRAH.series(p): SeriesData(t, noise(20, 20.0 + i, 0.2, seed=i))
             for i, p in enumerate(("supply_temp_c", "return_temp_c", "fan_power_kw", "valve_pct"))}
    det = Detector(SITE).fit(batch)
    assert det.notes["crah model"] == "declined: crah: 20 complete rows of 20, needs 30"


DEGENERATE = {
    "empty": (np.empty(0, dtype=np.int64), np.empty(0)),
    "one-sample": (grid(1), np.array([22.0])),
    "all-nan": (grid(300), np.full(300, np.nan)),
    "constant": (grid(300), np.full(300, 22.0)),
    "repeated-timestamps": (np.repeat(grid(150), 2), noise(300)),
    "inf-and-nan": (grid(300), np.where(np.arange(300) % 7 == 0, np.inf,
                                        np.where(np.arange(300) % 5 == 0, np.nan, noise(300)))),
}


@pytest.mark.parametrize("name", list(DEGENERATE))
def test_degenerate_histories_never_crash_fit_or_detect(name: str) -> None:
    t, v = DEGENERATE[name]
    history = {INLET: SeriesData(t, v), CRAH.series("supply_temp_c"): SeriesData(t, v)}
    det = Detector(SITE).fit(history)
    found = det.detect(history)
    assert all(a.since_ns <= a.last_ns for a in found)
    if name in ("empty", "one-sample", "all-nan", "constant"):
        assert "too few finite samples" in det.notes["generic on RM-H1-A01/inlet_temp_middle_c"] \
            or "constant" in det.notes["generic on RM-H1-A01/inlet_temp_middle_c"]
    if name != "empty":
        assert "declined" in det.notes.get("crah model", "declined")


# ---------------------------------------------------------------- false-alarm budget, confidence


def test_the_budget_sets_the_generic_threshold() -> None:
    key = SeriesKey("bms", "AHU-9", "duct_pressure_pa")
    t, v = grid(3000), noise(3000, 250.0, 2.0)
    v[2950] += 60.0
    found = {}
    for budget in (0.1, 10.0):
        cfg = DetectorConfig(generic=GenericConfig(false_alarms_per_week=budget))
        det = Detector(None, cfg).fit({key: SeriesData(t[:2880], v[:2880])})
        found[budget] = det.detect({key: SeriesData(t[2880:], v[2880:])})
    assert [a.context["threshold"] for a in found[0.1]] == [threshold_for_budget(0.1, 60.0)]
    assert found[10.0] and found[10.0][0].context["threshold"] == threshold_for_budget(10.0, 60.0)
    assert threshold_for_budget(0.1, 60.0) > threshold_for_budget(10.0, 60.0)


@pytest.mark.parametrize(("score", "confidence"), [
    (threshold_for_budget(1.0, 60.0), 0.0), (1 - 1 / 100800, 0.9), (1 - 1 / 1008000, 0.99),
    (1.0, 1.0), (0.5, 0.0)])
def test_generic_confidence_is_one_minus_false_alarms_a_week_at_that_score(
        score: float, confidence: float) -> None:
    assert generic_confidence(score, 60.0) == pytest.approx(confidence, abs=1e-9)


async def test_the_site_file_sets_the_budget_of_the_service(tmp_path: Path) -> None:
    from dcim.anomaly_service import AnomalyStage

    site = site_with("alarms:\n  anomaly: {false_alarms_per_week: 0.25}\n")
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")),
                              site_id=site.id)
    stage = AnomalyStage(site, storage, model_dir=tmp_path / "models")
    assert stage.config.generic.false_alarms_per_week == 0.25
    assert stage.status()["false_alarms_per_week"] == 0.25


@pytest.mark.parametrize(("field", "value", "expect"), [
    ("false_alarms_per_week", 0, "greater than 0"),
    ("page_min_confidence", 1.5, "less than or equal to 1"),
    ("pages_min_confidence", 0.5, "did you mean 'page_min_confidence'"),
])
def test_a_bad_anomaly_setting_names_the_file_and_field(field: str, value: float,
                                                        expect: str) -> None:
    with pytest.raises(ConfigError) as err:
        site_with(f"alarms:\n  anomaly: {{{field}: {value}}}\n")
    text = str(err.value)
    assert "cyberport5.yaml" in text and f"alarms.anomaly.{field}" in text and expect in text


async def test_the_stage_status_says_what_declined(tmp_path: Path) -> None:
    from dcim.anomaly_service import AnomalyStage

    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")),
                              site_id=SITE.id)
    await storage.start()
    try:
        stage = AnomalyStage(SITE, storage, model_dir=tmp_path / "models", min_training_s=1800)
        probe = next(k for k in stage.keys if k.point.startswith("inlet_temp"))  # its history
        keys = (CRAH.series("supply_temp_c"), probe)
        await storage.write([Sample(k, int((T0 + i * 60) * NS), 19.0 + 0.1 * (i % 3))
                             for i in range(61) for k in keys])
        await stage.run(int((T0 + 61 * 60) * NS))
    finally:
        await storage.close()
    status = stage.status()
    assert status["trained"], status
    assert "declined: crah" in status["notes"]["crah model"]
    # what is not read is said: every point of the site is read or listed, none twice
    total = sum(len(d.profile.points) for d in SITE.devices.values())
    assert status["series"] + sum(status["not_read"].values()) == total
    assert "battery_temp_c" in status["not_read"] and "inlet_temp_middle_c" not in status["not_read"]


class FixedState:
    """A state source holding one snapshot."""

    def __init__(self, state: SiteState) -> None:
        self.state = state
        self.version = Version()

    def current(self) -> SiteState:
        """The snapshot."""
        return self.state


class Paging:
    """The notifier's planning over alarm events: what would be sent, to where."""

    def __init__(self, config: NotificationsConfig) -> None:
        self.planner = Planner(config)
        self.messages: list[Message] = []

    def submit(self, events: Sequence[AlarmEvent]) -> int:
        """Plan the messages of the events."""
        self.messages += self.planner.plan(events)
        return len(events)


def generic(device: str, confidence: float) -> Anomaly:
    """A generic-layer episode on a rack inlet with a given confidence."""
    return Anomaly(series=SeriesKey("rack_monitor", device, "inlet_temp_top_c"), layer="generic",
                   kind="spike", since_ns=0, last_ns=0, raised_ns=0, value=30.0, expected=22.0,
                   score=0.99999, severity="high", message=f"{device} inlet_temp_top_c spike",
                   confidence=confidence)


async def test_only_confident_anomaly_alarms_page_through_the_alarm_service(
        tmp_path: Path) -> None:
    site = site_with("alarms:\n  anomaly: {page_min_confidence: 0.8}\n")
    journal = AlarmJournal(tmp_path / "alarms.sqlite", heads=False)
    try:
        engine = AlarmEngine(site.config.alarms, journal)
        paging = Paging(NotificationsConfig.model_validate({
            "channels": {"pager": {"kind": "log"}},
            "routes": [{"min_priority": "medium", "channels": ["pager"]}]}))
        state = build_state(plan(site), {}, {}, seq=1, now_ns=0,
                            anomalies=(generic("RM-H1-A01", 0.97), generic("RM-H1-A02", 0.4)))
        service = AlarmService(site, engine, FixedState(state), sink=paging)
        events = service.evaluate(state, now_ns=T0 * NS)
        raised = {e.alarm_id: e for e in events if e.action is Action.RAISE}
        sure, unsure = raised["anomaly:generic:RM-H1-A01"], raised["anomaly:generic:RM-H1-A02"]
        assert sure.priority is Priority.HIGH and sure.message.endswith("(confidence 0.97)")
        assert unsure.priority is Priority.LOW and unsure.message.endswith("(confidence 0.40)")
        assert {m.alarm_id for m in paging.messages} == {"anomaly:generic:RM-H1-A01"}
        assert "(confidence 0.97)" in paging.messages[0].text
        journaled = {e.alarm_id: e.message for e in journal.events()}
        assert journaled["anomaly:generic:RM-H1-A02"].endswith("(confidence 0.40)")
        # more evidence: the unsure one passes the bar, its priority is raised, and it pages
        surer = build_state(plan(site), {}, {}, seq=2, now_ns=0,
                            anomalies=(generic("RM-H1-A01", 0.97), generic("RM-H1-A02", 0.85)))
        events = service.evaluate(surer, now_ns=(T0 + 60) * NS)
        assert [(e.alarm_id, e.action, e.priority) for e in events] == [
            ("anomaly:generic:RM-H1-A02", Action.PRIORITY, Priority.HIGH)]
        assert [(m.alarm_id, m.kind) for m in paging.messages[1:]] == [
            ("anomaly:generic:RM-H1-A02", "priority")]
    finally:
        journal.close()
