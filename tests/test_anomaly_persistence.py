"""Saved anomaly models are data, never code: .npz + .json, 0600; old pickles never loaded."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest

from dcim.analytics.anomaly_base import NS
from dcim.analytics.anomaly_model import (
    LegacyModel, ModelMismatch, fit_class_model, forest_scores, load_model, save_model,
    score_rows,
)

T0 = 1_783_000_000
FEATURES = ["supply", "return", "fan", "load"]


def rows(n: int, seed: int = 0) -> np.ndarray:
    """CRAH-like rows: load drives delta-T and fan power."""
    rng = np.random.default_rng(seed)
    load = rng.uniform(300, 500, n)
    return np.column_stack([np.full(n, 19.0) + rng.normal(0, 0.1, n),
                            19 + load / 40 + rng.normal(0, 0.2, n),
                            (load / 600) ** 3 * 5 + rng.normal(0, 0.05, n), load])


def grid(n: int) -> np.ndarray:
    return (T0 + np.arange(n) * 60).astype(np.int64) * NS


class Payload:
    """A pickle that, once loaded, creates the file `marker` (as an attacker's would run code)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("method", ["residual", "iforest"])
def test_round_trip_scores_the_same_and_files_are_private(method: str, tmp_path: Path) -> None:
    m = fit_class_model("crah", FEATURES, rows(1500), grid(1500), method, version="3")
    old = os.umask(0o022)  # a library caller's usual umask: the files are 0600 all the same
    try:
        written = save_model(m, tmp_path / "crah.npz")
    finally:
        os.umask(old)
    assert written == tmp_path / "crah.npz"
    assert mode(written) == 0o600 and mode(tmp_path / "crah.json") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crah.json", "crah.npz"]
    with np.load(written, allow_pickle=False) as data:  # numbers only
        assert all(data[k].dtype.kind in "if" for k in data.files)
    back = load_model(written, FEATURES)
    test = rows(50, seed=1)
    test[10, 2] += 10.0
    assert back.version == "3" and back.threshold == m.threshold
    for a, b in zip(score_rows(back, test), score_rows(m, test)):
        assert np.array_equal(a, b)
    with pytest.raises(ModelMismatch, match="features"):
        load_model(written, ["a", "b", "c", "e"])


def test_the_forest_is_scored_as_scikit_learn_scores_it() -> None:
    from sklearn.ensemble import IsolationForest

    from dcim.analytics.anomaly_model import forest_arrays

    X = rows(2000)
    z = (X - X.mean(axis=0)) / X.std(axis=0)
    for kwargs in ({}, {"max_features": 0.5}):  # all columns, and a subset per tree
        est = IsolationForest(n_estimators=50, max_samples=256, random_state=1, **kwargs).fit(z)
        test = np.vstack([z[:200], np.random.default_rng(2).normal(0, 4, (50, 4))])
        assert np.allclose(forest_scores(forest_arrays(est), test), -est.score_samples(test),
                           rtol=0, atol=1e-12)


def test_a_pickle_is_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    legacy = tmp_path / "crah.pkl"
    legacy.write_bytes(pickle.dumps(Payload(marker)))
    (tmp_path / "crah.pkl.json").write_text(json.dumps(  # the old sidecar, as it was
        {"format_major": 1, "device_class": "crah", "method": "residual", "features": FEATURES}))
    with pytest.raises(LegacyModel, match="never loaded"):
        load_model(legacy, FEATURES)
    # nor a pickle under the new name, whole or as an array inside the .npz
    m = fit_class_model("crah", FEATURES, rows(500), grid(500))
    save_model(m, tmp_path / "crah.npz")
    (tmp_path / "crah.npz").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(ModelMismatch, match="cannot read"):
        load_model(tmp_path / "crah.npz", FEATURES)
    np.savez(tmp_path / "crah.npz", mean=np.array([Payload(marker)], dtype=object),
             std=m.std, coef=m.coef, sigma=m.sigma)
    with pytest.raises(ModelMismatch, match="cannot read"):
        load_model(tmp_path / "crah.npz", FEATURES)
    assert not marker.exists()


@pytest.mark.parametrize("change", [
    pytest.param({"forest_left": np.array([1, -1, 0])}, id="loop"),
    pytest.param({"forest_feature": np.array([9, 0, 0])}, id="feature-out-of-range"),
    pytest.param({"forest_roots": np.array([7])}, id="root-out-of-range"),
])
def test_forest_arrays_that_cannot_be_walked_are_refused(change: dict[str, np.ndarray],
                                                        tmp_path: Path) -> None:
    m = fit_class_model("crah", FEATURES, rows(500), grid(500), "iforest")
    path = save_model(m, tmp_path / "crah.npz")
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    tiny = {"forest_left": np.array([1, -1, -1]), "forest_right": np.array([2, -1, -1]),
            "forest_feature": np.array([0, 0, 0]), "forest_threshold": np.zeros(3),
            "forest_path": np.ones(3), "forest_roots": np.array([0])}
    np.savez(path, **{**arrays, **tiny})
    assert load_model(path, FEATURES).forest is not None  # the tiny tree itself is fine
    np.savez(path, **{**arrays, **tiny, **change})
    with pytest.raises(ModelMismatch, match="do not fit"):
        load_model(path, FEATURES)


async def test_the_service_ignores_a_planted_pickle_and_retrains(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from dcim.anomaly_service import AnomalyStage
    from dcim.config.storage import EmbeddedStorageConfig
    from dcim.simulators.backfill import snapshot_samples
    from dcim.simulators.plant import PlantModel
    from dcim.site import load_site
    from dcim.storage.embedded import EmbeddedStorage

    site = load_site(Path(__file__).resolve().parents[1] / "config" / "cyberport5.yaml")
    models, marker = tmp_path / "models", tmp_path / "pwned"
    models.mkdir()
    (models / "crah.pkl").write_bytes(pickle.dumps(Payload(marker)))
    storage = EmbeddedStorage(EmbeddedStorageConfig(path=str(tmp_path / "s.sqlite")),
                              site_id=site.id)
    await storage.start()
    try:
        stage = AnomalyStage(site, storage, model_dir=models, min_training_s=1800,
                             training_s=3600)
        wanted = {k for k in stage.keys if k.measurement == "crah"}
        stage.keys = sorted(wanted, key=str)  # the CRAH class only: keeps the test short
        plant = PlantModel(site, seed=4)
        for i in range(61):
            await storage.write([s for s in snapshot_samples(site, plant.step(T0 + i * 60.0))
                                 if s.series in wanted])
        with caplog.at_level(logging.WARNING, logger="dcim.anomaly_service"):
            await stage.run((T0 + 3600) * NS)
    finally:
        await storage.close()
    assert stage.trained and not marker.exists()
    assert [r.path for r in caplog.records if "never loaded" in r.getMessage()] == [  # type: ignore[attr-defined]
        str(models / "crah.pkl")]
    assert mode(models / "crah.npz") == 0o600 and mode(models / "crah.json") == 0o600
    assert load_model(models / "crah.npz").device_class == "crah"
