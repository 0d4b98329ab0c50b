"""A detector for any series: calibrated online scores, windows in time, explained kinds.

`SeriesModel.fit(times_ns, values)` learns the sampling interval, the resolution and spread of
the values, then warms its state on the history; `update(t_ns, value)` scores one sample.
Six raw statistics are computed per sample and each is turned into a tail probability over
its own recent history (TailCalibrator), so the score 1 - p means the same on every series:
- spike: the value against the median of the last `spike_context_s`, and against the range of
  the same time a day and a week before (the smaller distance counts), in units of the
  residual's robust scale; `season`: the distance outside that seasonal range alone;
- level_shift: mean over `level_window_s` against the median of the `reference_s` before it,
  less the same change a day or a week before (the smaller counts: a Monday morning that
  rises as last Monday's did is no shift);
- drift: the same over `drift_window_s` (slow ramps that never look like a step);
- variance: mean |residual| over `level_window_s` against its long-run value (both ways);
- stuck: how long the value has not changed at all, against the runs the series usually has.
The score is 1 - min p over the statistics. `generic_anomalies` turns scores into episodes at
the threshold of the false-alarm budget, one per `refractory_s`, and names each in hindsight.
Scale floors come from the series' own resolution and spread, never from an absolute constant.
Seasons longer than `max_season_samples` (a week of 1-minute data) and the seasonal part of
level shifts and drifts come from a `Profile`: the series' means per `profile_bucket_s` over
the last week and a few days, filled from the whole history `fit` is given.
See docs/anomaly.md, "The generic detector and NAB".
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np

from dcim.analytics.anomaly_base import NS, Anomaly, FloatArray, IntArray, label, severity_for
from dcim.analytics.anomaly_generic_calib import Profile, Ring, TailCalibrator, Window
from dcim.storage.base import SeriesKey

WEEK_S = 7 * 86400.0
KINDS = ("spike", "level_shift", "drift", "variance", "stuck")
MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class GenericConfig:
    """Shipped defaults are the settings NAB is scored with (bench/anomaly.py nab)."""

    false_alarms_per_week: float = 1.0  # budget per series; sets the threshold on the score
    spike_context_s: float = 900.0  # local level = median of this span before (3-30 samples)
    level_window_s: float = 3600.0  # short mean for level shifts and variance (4-120 samples)
    drift_window_s: float = 6 * 3600.0  # short mean for drifts (8-720 samples)
    reference_s: float = 2 * 86400.0  # baseline span before the short windows (24-2880 samples)
    calibration_s: float = 14 * 86400.0  # history of each statistic (64-4096 samples)
    seasons_s: tuple[float, ...] = (86400.0, 7 * 86400.0)  # daily and weekly patterns
    max_season_samples: int = 2016  # no seasonal lag beyond this many samples (memory)
    refractory_s: float = 12 * 3600.0  # one alert per episode: no new raise this soon after one
    warmup_samples: int = 48  # finite samples before anything is scored
    spread_floor: float = 0.001  # scale floor as a fraction of the 5-95 % spread of the values
    tail_fraction: float = 0.02  # exponential tail fitted beyond this top share (SPOT's 98 %)
    beta_floor: float = 0.5  # least tail decay length of a statistic, in units of its scale
    kinds_factor: float = 3.0  # p of the most surprising of the six statistics: 1 - (1 - p)^this
    profile_bucket_s: float = 900.0  # coarse seasonal profile: mean per bucket (>= the interval)
    profile_coverage: float = 0.5  # least share of a window's buckets held to use the profile
    season_min_corr: float = 0.1  # a period counts once the profile's means repeat this much


@dataclass(frozen=True, slots=True)
class Score:
    """One sample's verdict: calibrated confidence in [0, 1], the leading kind, why."""

    score: float
    kind: str | None
    detail: str
    expected: float = math.nan


def threshold_for_budget(false_alarms_per_week: float, interval_s: float) -> float:
    """Threshold on the calibrated score that samples of normal data exceed `budget` times a week."""
    per_sample = false_alarms_per_week * max(interval_s, 1e-9) / WEEK_S
    return 1.0 - min(1.0, max(per_sample, 0.0))


def _samples(span_s: float, interval_s: float, lo: int, hi: int) -> int:
    """A span in time as a number of samples, clamped to [lo, hi]."""
    return int(min(hi, max(lo, round(span_s / interval_s))))


def _interval(times_ns: IntArray) -> float:
    """Median spacing in seconds (60 s when unknown)."""
    if times_ns.size < 2:
        return 60.0
    d = np.diff(times_ns.astype(np.int64))
    d = d[d > 0]
    return float(np.median(d)) / NS if d.size else 60.0


def scale_floor(values: FloatArray, spread_floor: float) -> tuple[float, float]:
    """(resolution, floor): smallest nonzero step of the values, and the scale floor they imply."""
    v = values[np.isfinite(values)]
    if v.size < 2:
        return 0.0, 0.0
    u = np.unique(v)
    res = float(np.diff(u).min()) if u.size > 1 else 0.0
    lo, hi = np.percentile(v, [5.0, 95.0])
    spread = float(hi - lo) or float(u[-1] - u[0])
    return res, max(res / 2.0, spread_floor * spread)


class _Scale:
    """Robust scale (1.4826 median |r|) of a residual over its recent history, floored."""

    __slots__ = ("ring", "since", "value")

    def __init__(self, cap: int) -> None:
        self.ring = Window(cap)
        self.since = 0
        self.value = math.nan

    def push(self, r: float) -> None:
        """Add one residual."""
        self.ring.push(abs(r))
        self.since += 1
        if self.since >= max(4, self.ring.n // 32):
            self.since = 0
            self.value = MAD_TO_SIGMA * float(np.median(self.ring.values()))


class SeriesModel:
    """Online state of the generic detector for one series."""

    def __init__(self, interval_s: float, config: GenericConfig) -> None:
        c = self.config = config
        self.interval_s = interval_s
        self.declined: str | None = None
        self.floor = 0.0
        self.resolution = 0.0
        self.k_spike = _samples(c.spike_context_s, interval_s, 3, 30)
        self.k_level = _samples(c.level_window_s, interval_s, 4, 120)
        self.k_drift = _samples(c.drift_window_s, interval_s, 8, 720)
        self.k_ref = _samples(c.reference_s, interval_s, 24, 2880)
        lags = [int(round(s / interval_s)) for s in c.seasons_s]
        self.periods = [p for p in lags if 2 * self.k_spike < p <= c.max_season_samples]
        # seasons too long to keep sample by sample are checked against the coarse profile
        self.coarse = [p * interval_s for p in lags if p > c.max_season_samples]
        width = max(c.profile_bucket_s, interval_s)
        self.profile = Profile(width, max(c.seasons_s, default=0.0) + c.reference_s
                               + c.drift_window_s + 2 * width)
        self.season_cache: dict[tuple[int, float], tuple[int, float]] = {}
        self.seasonal: list[float] = []  # periods the profile shows (see _judge_seasons)
        self._seasons_at = -1  # bucket when they were last judged
        cal = _samples(c.calibration_s, interval_s, 64, 4096)
        longest = max(self.periods, default=0) + self.k_spike
        self.values = Ring(max(self.k_ref + self.k_drift, longest, 2 * c.warmup_samples))
        self.abs_e = Ring(self.k_level)
        self.scale_e = _Scale(cal)
        m = min(48, cal)
        bf = c.beta_floor
        self.cal = {k: TailCalibrator(cal, m, b, c.tail_fraction) for k, b in (
            ("spike", bf), ("season", bf), ("level_shift", bf / math.sqrt(self.k_level)),
            ("drift", bf / math.sqrt(self.k_drift)),
            ("variance", bf / 4), ("stuck", 1.0))}
        self.run = 0
        self.seen = 0
        self.ref_cache: dict[int, tuple[float, float, int]] = {}  # k -> (median, scale, age)
        self.sums = {self.k_level: 0.0, self.k_drift: 0.0}  # running sums of the last k values
        self.abs_sum = 0.0
        self.r_mean = math.nan

    @classmethod
    def fit(cls, times_ns: IntArray, values: FloatArray,
            config: GenericConfig | None = None, warm_from_ns: int | None = None,
            prior: tuple[IntArray, FloatArray] | None = None) -> SeriesModel:
        """Learn interval, resolution and spread, then warm the state on the (recent) history.

        Samples before `warm_from_ns` only fill the seasonal profile (cheap): a week of history
        teaches the weekly pattern without a week of per-sample warming. `prior` is older
        history at any coarser step (e.g. 15-minute means from the store), only for the
        profile: what of it is not older than the first sample is ignored."""
        cfg = config or GenericConfig()
        t = np.asarray(times_ns, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        m = cls(_interval(t), cfg)
        m._judge(v)
        # older samples would be forgotten anyway: warming on the rest bounds the cost of a fit
        start = max(0, t.size - (m.values.cap + m.cal["spike"].ring.cap + cfg.warmup_samples))
        if warm_from_ns is not None:
            start = max(start, int(np.searchsorted(t, warm_from_ns)))
        if prior is not None and t.size:
            pt = np.asarray(prior[0], dtype=np.int64)
            older = pt < t[0]
            m.profile.fill(pt[older], np.asarray(prior[1], dtype=np.float64)[older])
        m.profile.fill(t[:start], v[:start])
        m._judge_seasons()
        for ti, vi in zip(t[start:].tolist(), v[start:].tolist()):
            m.update(ti, vi)
        return m

    def _judge(self, v: FloatArray) -> None:
        """Set the scale floor from the values seen, or decline with the reason."""
        fin = v[np.isfinite(v)]
        if fin.size < self.config.warmup_samples:
            self.declined = f"too few finite samples ({fin.size} of {self.config.warmup_samples})"
            return
        if float(fin.max() - fin.min()) == 0.0:
            self.declined = f"constant history (every sample {fin[0]:g})"
            return
        self.resolution, self.floor = scale_floor(fin, self.config.spread_floor)
        self.declined = None

    def update(self, t_ns: int, value: float) -> Score:
        """Score one sample, then learn from it (the state advances)."""
        x = float(value)
        if not math.isfinite(x):
            return Score(0.0, None, "missing sample")
        vals = self.values
        prev = vals.ago(1)
        self.run = self.run + 1 if x == prev else 0
        self.seen += 1
        if self.declined is not None:
            self._push(x)
            if self.seen % self.config.warmup_samples == 0:
                self._judge(vals.last(vals.n))
            return Score(0.0, None, f"declined: {self.declined}")
        fl = self.floor
        ctx = sorted(vals.last(self.k_spike).tolist())
        pred = ctx[len(ctx) // 2] if ctx else x
        e = x - pred
        se = max(self.scale_e.value, fl) if math.isfinite(self.scale_e.value) else math.nan
        es = self._season(t_ns, x)
        # a value the same hour of an earlier day or week also reached is no spike
        r = min(abs(e), abs(es)) if math.isfinite(es) else abs(e)
        stats: dict[str, float] = {"spike": r / se if se > 0 else math.nan}
        if math.isfinite(es):
            stats["season"] = abs(es) / se if se > 0 else math.nan
        self._push(x)
        self.profile.add(t_ns, x)
        if self.profile.bucket(t_ns) - self._seasons_at >= 96:  # a day of 15-min buckets
            self._judge_seasons()
        stats["level_shift"] = self._shift(self.k_level, t_ns)
        stats["drift"] = self._shift(self.k_drift, t_ns)
        # variance: the unexplained part r (beyond the local level and the seasonal range)
        # over the level window, against its own long-run mean
        old = self.abs_e.ago(self.k_level) if self.abs_e.n >= self.k_level else 0.0
        self.abs_sum += r - old
        self.abs_e.push(r)
        if self.abs_e.n >= self.k_level:
            short = max(self.abs_sum, 0.0) / self.k_level
            if math.isfinite(self.r_mean):
                stats["variance"] = abs(math.log((short + fl) / (self.r_mean + fl)))
            a = 1.0 / self.k_ref
            self.r_mean = short if not math.isfinite(self.r_mean) else (1 - a) * self.r_mean + a * short
        stats["stuck"] = float(self.run) if self.run >= self.k_spike else 0.0
        ps: dict[str, float] = {}
        for k, s in stats.items():
            ps[k] = self.cal[k].p(s)
            self.cal[k].push(s)
        self.scale_e.push(e)
        if self.seen < self.config.warmup_samples:
            return Score(0.0, None, "warming up")
        key = min(ps, key=ps.__getitem__)
        p = 1.0 - (1.0 - ps[key]) ** self.config.kinds_factor
        kind = "spike" if key == "season" else key
        detail = _detail(kind, x, pred, stats, p)
        if key == "season":
            detail = (f"spike: {x:.4g} beyond its recent level {pred:.4g} and, by {es:.4g}, the range "
                      f"at this time a day or week before (stat {stats['season']:.3g}, p={p:.2g})")
        return Score(1.0 - p, kind, detail, pred)

    def _push(self, x: float) -> None:
        """Append a value, keeping the running sums of the short windows (exact every 1024)."""
        vals = self.values
        for k in self.sums:
            self.sums[k] += x - (vals.ago(k) if vals.n >= k else 0.0)
        vals.push(x)
        if self.seen % 1024 == 0:
            for k in self.sums:
                self.sums[k] = float(vals.last(k).sum())

    def _season(self, t_ns: int, x: float) -> float:
        """Distance of x outside the range of the same time +- k_spike one period ago (min over
        periods); for the coarse periods, outside the means of the buckets around it."""
        vals, h = self.values, self.k_spike
        ranges = []
        for p in self.periods:
            if vals.n >= p + h:
                seg = vals.last(p + h)[:2 * h + 1].tolist()
                ranges.append((min(seg), max(seg)))
        for period_s in self.coarse:
            b = self.profile.bucket(t_ns - int(period_s * NS))
            seg = self.profile.means(b - 1, b + 2)
            if seg:
                ranges.append((min(seg), max(seg)))
        best = math.nan
        for lo, hi in ranges:
            d = x - hi if x > hi else (x - lo if x < lo else 0.0)
            if not math.isfinite(best) or abs(d) < abs(best):
                best = d
        return best

    def _judge_seasons(self) -> None:
        """The periods whose pattern the profile shows (bucket means that repeat): only those
        take part in `_shift`, so a series without a pattern is not blurred by last week's
        noise. Judged again once a day of buckets has passed."""
        prof, c = self.profile, self.config
        lag_of = {p: int(round(p * NS / prof.width_ns)) for p in c.seasons_s}
        self.seasonal = [p for p, lag in lag_of.items()
                         if lag >= 2 and prof.lag_correlation(lag) >= c.season_min_corr]
        held = [b for b in prof.which if b >= 0]
        self._seasons_at = max(held) if held else -1

    def _seasonal_change(self, k: int, t_ns: int, period_s: float) -> float:
        """The change `_shift` measures, one period ago, from the profile (NaN when the profile
        holds too little of that time); cached per bucket."""
        prof = self.profile
        end = prof.bucket(t_ns - int(period_s * NS))
        cached = self.season_cache.get((k, period_s))
        if cached is not None and cached[0] == end:
            return cached[1]
        per_bucket = prof.width_ns / (self.interval_s * NS)  # samples a bucket holds
        n_short = max(1, int(round(k / per_bucket)))
        n_ref = max(1, int(round(self.k_ref / per_bucket)))
        need = self.config.profile_coverage
        # the reference's median moves slowly: recomputed after a sixteenth of it (3 h of 2 d)
        ref_key = (-k, period_s)
        ref_cached = self.season_cache.get(ref_key)
        if ref_cached is None or not 0 <= end - ref_cached[0] < max(1, n_ref // 16):
            ref = sorted(prof.means(end - n_short + 1 - n_ref, end - n_short + 1))
            ref_med = ref[len(ref) // 2] if len(ref) >= need * n_ref else math.nan
            ref_cached = (end, ref_med)
            self.season_cache[ref_key] = ref_cached
        short = prof.means(end - n_short + 1, end + 1)
        change = math.nan
        if len(short) >= need * n_short and ref_cached[1] == ref_cached[1]:
            change = sum(short) / len(short) - ref_cached[1]
        self.season_cache[(k, period_s)] = (end, change)
        return change

    def usual_level(self, t0_ns: int, t1_ns: int, period_s: float) -> float:
        """Mean of the profile over [t0, t1) one period before; NaN when it holds too little."""
        prof, lag = self.profile, int(period_s * NS)
        b0, b1 = prof.bucket(t0_ns - lag), prof.bucket(t1_ns - lag)
        got = prof.means(b0, b1 + 1)
        if got and len(got) >= self.config.profile_coverage * (b1 + 1 - b0):
            return sum(got) / len(got)
        return math.nan

    def _shift(self, k: int, t_ns: int) -> float:
        """|mean of the last k samples - median of the reference before them| / its scale, less
        the same change a day or a week before when that is smaller."""
        vals = self.values
        if vals.n < k + self.config.warmup_samples // 2:
            return math.nan
        cached = self.ref_cache.get(k)
        if cached is None or cached[2] >= max(2, k // 2):
            ref = vals.last(min(vals.n, k + self.k_ref))[:-k]
            med = float(np.median(ref))
            mad = MAD_TO_SIGMA * float(np.median(np.abs(ref - med)))
            cached = (med, max(mad, self.floor), 0)
        self.ref_cache[k] = (cached[0], cached[1], cached[2] + 1)
        med, sc, _ = cached
        if sc <= 0:
            return math.nan
        change = self.sums[k] / k - med
        best = abs(change)
        for period_s in self.seasonal:
            usual = self._seasonal_change(k, t_ns, period_s)
            if usual == usual:
                best = min(best, abs(change - usual))
        return best / sc

    def score_batch(self, times_ns: IntArray, values: FloatArray) -> tuple[FloatArray, list[str | None]]:
        """Scores and kinds of a span, as `update` would give them; the model itself is not advanced."""
        m = copy.deepcopy(self)
        out = np.zeros(len(values))
        kinds: list[str | None] = []
        for i, (t, v) in enumerate(zip(np.asarray(times_ns).tolist(), np.asarray(values).tolist())):
            s = m.update(int(t), float(v))
            out[i] = s.score
            kinds.append(s.kind)
        return out, kinds


def _detail(kind: str, x: float, expected: float, stats: dict[str, float], p: float) -> str:
    """One line saying why the sample scored as it did."""
    what = {"spike": "away from its recent level", "level_shift": "mean moved from its reference",
            "drift": "slow mean change over the drift window",
            "variance": "noise level changed", "stuck": "value unchanged"}[kind]
    s = stats.get(kind, math.nan)
    if kind == "stuck":
        return f"stuck: {x:.4g} unchanged for {int(s)} samples (p={p:.2g})"
    return f"{kind}: {x:.4g} vs expected {expected:.4g}, {what} (stat {s:.3g}, p={p:.2g})"


def detections(times_ns: IntArray, scores: FloatArray, threshold: float,
               refractory_s: float) -> list[int]:
    """Indices where an alert is raised: score >= threshold, at most one per refractory span."""
    out: list[int] = []
    last = -math.inf
    gap = refractory_s * NS
    for i in np.flatnonzero(scores >= threshold).tolist():
        if times_ns[i] - last >= gap:
            out.append(i)
            last = float(times_ns[i])
    return out


def generic_anomalies(key: SeriesKey, times_ns: IntArray, values: FloatArray, model: SeriesModel,
                      config: GenericConfig | None = None) -> list[Anomaly]:
    """Episodes of a span scored by the model (not advanced): one per refractory span."""
    cfg = config or model.config
    t = np.asarray(times_ns, dtype=np.int64)
    v = np.asarray(values, dtype=np.float64)
    if model.declined is not None or t.size == 0:
        return []
    pre = model.values.last(model.values.n).copy()
    full = np.concatenate([pre, v])
    m = copy.deepcopy(model)
    res = [m.update(int(a), float(b)) for a, b in zip(t.tolist(), v.tolist())]
    sc = np.array([r.score for r in res])
    thr = threshold_for_budget(cfg.false_alarms_per_week, model.interval_s)
    raised = detections(t, sc, thr, cfg.refractory_s)
    out = []
    for j, i in enumerate(raised):
        stop = raised[j + 1] if j + 1 < len(raised) else t.size
        last = _episode_end(t, sc, i, stop, thr, cfg.level_window_s)
        peak = int(i + np.argmax(sc[i:last + 1]))
        kind = _episode_kind(full, pre.size, sc, res, i, last, thr, model, int(t[i]))
        conf = float(sc[peak])
        decades = math.log10(max(1.0 - thr, 1e-300) / max(1.0 - conf, 1e-300))
        detail = res[peak].detail if res[peak].kind == kind else f"{kind} ({res[peak].detail})"
        out.append(Anomaly(
            series=key, layer="generic", kind=kind, since_ns=int(t[i]), last_ns=int(t[last]),
            raised_ns=int(t[i]), value=float(v[peak]), expected=res[peak].expected,
            score=conf, severity=severity_for(decades, 0.0, 1.0, 2.0), confidence=conf,
            message=f"{label(key)} {detail}",
            context={"threshold": thr, "samples_over": float((sc[i:last + 1] >= thr).sum())}))
    return out


def _episode_end(t: IntArray, sc: FloatArray, i: int, stop: int, thr: float, gap_s: float) -> int:
    """Last over-threshold index after i whose gap to the previous one is at most gap_s."""
    last = i
    for k in (np.flatnonzero(sc[i:stop] >= thr) + i).tolist():
        if (t[k] - t[last]) / NS > gap_s:
            break
        last = k
    return last


def _median(x: FloatArray) -> float:
    """Median of the finite values (NaN when none)."""
    f = x[np.isfinite(x)]
    return float(np.median(f)) if f.size else math.nan


def _usual_levels(model: SeriesModel, t_ns: int, spans: list[tuple[int, int]]) -> list[float] | None:
    """The profile's level one period before each span (start index relative to the sample at
    t_ns, length), all from the longest period it holds them for; None when it holds none."""
    step = int(model.interval_s * NS)
    for period_s in sorted(model.config.seasons_s, reverse=True):
        out = [model.usual_level(t_ns + start * step, t_ns + (start + n) * step, period_s)
               for start, n in spans]
        if all(x == x for x in out):
            return out
    return None


def _episode_kind(full: FloatArray, off: int, sc: FloatArray, res: list[Score], i: int,
                  last: int, thr: float, model: SeriesModel, t_ns: int) -> str:
    """Kind of an episode, in hindsight: the peak's kind, told apart by what the values did next.

    A spike that does not come back is a level shift; spikes of both signs or a wider spread
    after it are a variance change; a shift whose change was spread over the drift window
    (rather than made within the level window) is a drift.
    """
    peak = int(i + np.argmax(sc[i:last + 1]))
    kind = res[peak].kind or "spike"
    if kind == "stuck":
        return kind
    kl, kd = model.k_level, model.k_drift
    scale = max(model.scale_e.value, model.floor) if math.isfinite(model.scale_e.value) else 0.0
    j = off + peak
    spikes = [k for k in range(i, last + 1) if sc[k] >= thr and res[k].kind == "spike"]
    up = sum(1 for k in spikes if full[off + k] > res[i].expected)  # against the level before
    if up >= 2 and len(spikes) - up >= 2:
        return "variance"
    after = full[j + 1:j + 1 + max(kl, 8)]
    after = after[np.isfinite(after)]
    if after.size < 2:
        return kind
    mid = float(np.median(after))
    if MAD_TO_SIGMA * float(np.median(np.abs(after - mid))) > 2.0 * scale > 0:
        return "variance"
    ref = _median(full[max(0, j - kd - kl):max(0, j - kd)])
    if kind in ("spike", "variance") and not abs(mid - ref) > 1.5 * scale:
        return kind  # it came back: a spike
    j = off + i
    now = _median(full[j:j + kl])
    before = _median(full[max(0, j - kl):j])
    long_ago = _median(full[max(0, j - kd):max(0, j - kd + kl)])
    # less what the same hours did a week (or a day) before, when that explains the movement
    # before the raise: a step at 14:00 on a weekday whose morning rose as every weekday's
    # does is a step, not a drift (on a series without a pattern it would only add noise)
    usual = _usual_levels(model, t_ns, [(0, kl), (-kl, kl), (-kd, kl)])
    if usual is not None and abs((before - usual[1]) - (long_ago - usual[2])) < 0.5 * abs(
            before - long_ago):
        now, before, long_ago = now - usual[0], before - usual[1], long_ago - usual[2]
    total = now - long_ago
    # a step leaves the hour before the raise where it was long ago; a ramp has moved it already
    if math.isfinite(total) and math.isfinite(before) and abs(before - long_ago) > 0.3 * abs(total):
        return "drift"
    return "level_shift"
