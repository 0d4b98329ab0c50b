"""bench/nab.py: NAB's standard-profile scorer on hand-made cases, and a smoke run on the corpus."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.nab import (  # noqa: E402
    CORPUS, NabFile, load_corpus, normalised_total, probation_rows, scaled_sigmoid,
    score_file,
)

from dcim.analytics.anomaly_generic import (  # noqa: E402
    GenericConfig, SeriesModel, detections, threshold_for_budget,
)

N = 4000  # probation = 600 rows
WINDOWS = [(1000, 1199), (3000, 3199)]


def test_probation_and_sigmoid() -> None:
    assert probation_rows(4000) == 600 and probation_rows(22695) == 750
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0 and scaled_sigmoid(3.0) == -1.0


@pytest.mark.parametrize("dets,raw,tp,fp,fn", [
    ([], -2.0, 0, 0, 2),  # null detector
    ([1000, 3000], 2.0, 2, 0, 0),  # perfect: each window at its left edge
    ([1000, 1001, 1100, 3000], 2.0, 2, 0, 0),  # later detections in a window count for nothing
    ([700, 1000, 3000], 2.0 - 0.11, 2, 1, 0),  # an FP before any window costs 0.11
    ([100, 1000, 3000], 2.0, 2, 0, 0),  # probation is ignored
    ([1000], 0.0, 1, 0, 1),
], ids=["null", "perfect", "one-tp-per-window", "fp", "probation", "one-missed"])
def test_score_file_table(dets: list[int], raw: float, tp: int, fp: int, fn: int) -> None:
    s = score_file(N, WINDOWS, dets)
    assert (s.tp, s.fp, s.fn) == (tp, fp, fn)
    assert s.raw == pytest.approx(raw)


def test_normalised_perfect_is_100_and_null_is_0() -> None:
    perfect = score_file(N, WINDOWS, [1000, 3000])
    null = score_file(N, WINDOWS, [])
    assert perfect.normalised == pytest.approx(100.0) and null.normalised == pytest.approx(0.0)
    empty = score_file(N, [], [])
    assert normalised_total([perfect, null, empty]) == pytest.approx(50.0)


def test_position_in_window_and_fp_after_window() -> None:
    late = score_file(N, WINDOWS, [1199, 3000]).raw - 1.0
    mid = score_file(N, WINDOWS, [1099, 3000]).raw - 1.0
    assert 0.0 < late < mid < 1.0
    assert mid == pytest.approx(scaled_sigmoid(-101 / 200) / scaled_sigmoid(-1.0))
    just_after = score_file(N, WINDOWS, [1000, 1210, 3000]).raw - 2.0
    far_after = score_file(N, WINDOWS, [1000, 2500, 3000]).raw - 2.0
    assert just_after == pytest.approx(0.11 * scaled_sigmoid(11 / 199))  # cheaper than -0.11
    assert -0.11 < just_after < 0.0
    assert far_after == pytest.approx(-0.11)  # 6.5 widths past the window: full cost


SMALL = ["art_daily_jumpsup", "art_daily_no_noise", "ec2_cpu_utilization_825cc2"]


SMALL_CORPUS = Path(__file__).resolve().parent / "data" / "nab"  # the three, with the licence


def corpus_files() -> list[NabFile]:
    """The small smoke files, kept with the tests (the whole corpus is outside the project)."""
    return load_corpus(SMALL_CORPUS, SMALL)


def test_the_small_corpus_is_a_faithful_copy_where_the_whole_one_is_present() -> None:
    if not (CORPUS / "combined_windows.json").exists():
        pytest.skip(f"the whole NAB corpus is not at {CORPUS} on this machine")
    whole = {f.name: f for f in load_corpus(CORPUS, SMALL)}
    for f in corpus_files():
        assert f.windows == whole[f.name].windows
        assert np.array_equal(f.values, whole[f.name].values)


def test_smoke_generic_detector_on_corpus_files() -> None:
    files = corpus_files()
    assert sorted(f.name.split("/")[1] for f in files) == [s + ".csv" for s in sorted(SMALL)]
    cfg = GenericConfig()
    scores = {}
    for f in files:
        p = f.probation
        model = SeriesModel.fit(f.times_ns[:p], f.values[:p], cfg)
        sc = np.zeros(len(f.values))
        sc[p:], _ = model.score_batch(f.times_ns[p:], f.values[p:])
        thr = threshold_for_budget(cfg.false_alarms_per_week, model.interval_s)
        det = detections(f.times_ns, sc, thr, cfg.refractory_s)
        scores[f.name.split("/")[1][:-4]] = score_file(len(f.values), f.windows, det)
    assert scores["art_daily_no_noise"].fp == 0
    assert scores["art_daily_jumpsup"].tp == 1 and scores["ec2_cpu_utilization_825cc2"].tp == 1
    assert normalised_total(list(scores.values())) > 50.0


def test_bench_nab_command_last_line() -> None:
    corpus_files()
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run(
        [sys.executable, str(root / "bench" / "anomaly.py"), "nab", "--corpus", str(SMALL_CORPUS),
         "--only", "art_daily_jumpsup", "art_daily_no_noise"], capture_output=True, text=True, timeout=120, check=True,
        cwd=root).stdout.strip().splitlines()
    assert re.fullmatch(r"NAB standard score on 2 files: -?\d+\.\d", out[-1]), out[-1]
    assert float(out[-1].rsplit(" ", 1)[1]) > 50.0
    assert any(line.startswith("NAB standard score at the corpus-optimal threshold") for line in out)
