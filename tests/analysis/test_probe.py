"""band_statistics (the no-learning baseline) and knn_accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import eossl
from eossl.errors import DataError


def _emb(values, labels=None):
    coords = {} if labels is None else {"label": ("sample", np.asarray(labels))}
    return xr.DataArray(np.asarray(values, dtype="float64"), dims=("sample", "dim"), coords=coords)


def _separable(n_per_class=12, classes=4, dim=8, seed=0):
    """Classes on orthogonal directions with a little noise: perfectly separable, by any metric."""
    rng = np.random.default_rng(seed)
    X, y = [], []
    for c in range(classes):
        centre = np.zeros(dim)
        centre[c] = 10.0
        X.append(centre + rng.normal(0, 0.5, (n_per_class, dim)))
        y += [f"class{c}"] * n_per_class
    return np.concatenate(X), np.array(y)


def test_band_statistics_equals_numpy(chips):
    few = chips.isel(sample=[0, 30, 119])
    feats = eossl.band_statistics(few)
    assert feats.dims == ("sample", "dim") and feats.shape == (3, 26)
    values = few.values.astype("float64")
    for i in range(3):
        for b in range(13):
            assert feats.values[i, b] == pytest.approx(values[i, b].mean(), rel=1e-12)
            assert feats.values[i, 13 + b] == pytest.approx(values[i, b].std(), rel=1e-12)
    assert feats["feature"].values[0] == "B01_mean" and feats["feature"].values[-1] == "B8A_std"
    np.testing.assert_array_equal(feats["label"].values, few["label"].values)


def test_band_statistics_ignores_nan(chips):
    one = chips.isel(sample=[0]).astype("float64").copy()
    one[0, 2, :10, :] = np.nan
    feats = eossl.band_statistics(one)
    rest = one.values[0, 2, 10:, :]
    assert feats.values[0, 2] == pytest.approx(rest.mean()) and feats.values[0, 15] == pytest.approx(rest.std())


def test_band_statistics_needs_chips(slovenia):
    with pytest.raises(DataError, match="sample"):
        eossl.band_statistics(slovenia["image"])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_knn_is_perfect_on_separable_embeddings(metric):
    X, y = _separable()
    out = eossl.knn_accuracy(_emb(X, y), metric=metric)
    assert out == {"accuracy": 1.0, "std": 0.0, "k": 5, "folds": 5}


def test_knn_is_near_chance_on_random_labels():
    X, _ = _separable(n_per_class=50)
    y = np.random.default_rng(1).choice(list("abcd"), len(X))
    accs = [eossl.knn_accuracy(_emb(X, y), seed=s)["accuracy"] for s in range(3)]
    assert 0.1 < np.mean(accs) < 0.4  # chance is 0.25


def test_knn_labels_argument_overrides_the_coordinate():
    X, y = _separable()
    wrong = np.random.default_rng(0).permutation(y)
    assert eossl.knn_accuracy(_emb(X, wrong), labels=y)["accuracy"] == 1.0
    assert eossl.knn_accuracy(_emb(X), labels=y)["accuracy"] == 1.0


def test_knn_folds_are_capped_by_the_smallest_class():
    X, y = _separable(n_per_class=3)
    assert eossl.knn_accuracy(_emb(X, y), folds=10)["folds"] == 3


def test_knn_standardize_lets_every_feature_count():
    """One informative feature next to a loud uninformative one: only standardisation finds it."""
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b"], 30)
    informative = np.where(y == "a", 0.0, 1.0) + rng.normal(0, 0.05, 60)
    loud = rng.normal(0, 1000.0, 60)
    X = np.stack([informative, loud], axis=1)
    assert eossl.knn_accuracy(_emb(X, y), metric="euclidean")["accuracy"] == 1.0  # default: on
    assert eossl.knn_accuracy(_emb(X, y), metric="euclidean", standardize=False)["accuracy"] < 0.8


def test_knn_on_band_statistics_of_the_sample_beats_chance(chips):
    out = eossl.knn_accuracy(eossl.band_statistics(chips), metric="euclidean")
    assert out["accuracy"] > 0.5 and out["folds"] == 5  # 10 classes: chance is 0.1


def test_single_example_class_is_a_data_error():
    X, y = _separable()
    y = y.copy()
    y[0] = "lonely"
    with pytest.raises(DataError, match="'lonely' has a single example"):
        eossl.knn_accuracy(_emb(X, y))


def test_label_count_mismatch_is_a_data_error():
    X, y = _separable()
    with pytest.raises(DataError, match=f"{len(y) - 1} labels for {len(y)} embeddings"):
        eossl.knn_accuracy(_emb(X), labels=y[:-1])


def test_missing_labels_and_nan_are_data_errors():
    X, y = _separable()
    with pytest.raises(DataError, match="no labels"):
        eossl.knn_accuracy(_emb(X))
    X[3, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        eossl.knn_accuracy(_emb(X, y))


# ----------------------------------------------------------------------------- probe (few labels)

def _blobs(n_per_class=12, classes=3, dim=8, spread=0.05, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, dim)) * 5
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, dim)) for c in centres])
    labels = np.repeat([f"c{i}" for i in range(classes)], n_per_class)
    return xr.DataArray(X, dims=("sample", "dim"), coords={"label": ("sample", labels)})


def test_probe_table_has_a_row_per_probe_and_shot_count():
    table = eossl.probe(_blobs(), shots=[1, 5], repeats=3)
    assert table[["probe", "shots"]].values.tolist() == [["kNN", 1], ["logistic", 1], ["kNN", 5], ["logistic", 5]]
    assert (table["repeats"] == 3).all()
    np.testing.assert_allclose(table["accuracy"], 1.0)  # separable blobs: perfect with one label
    np.testing.assert_allclose(table["balanced_accuracy"], 1.0)


def test_probe_is_near_chance_on_shuffled_labels():
    emb = _blobs(n_per_class=30, classes=3, spread=3.0)
    shuffled = np.random.default_rng(1).permutation(emb["label"].values)
    table = eossl.probe(emb, labels=shuffled, shots=[5], repeats=10)
    assert (table["accuracy"] < 0.55).all()  # chance is 1/3


def test_probe_balanced_accuracy_weighs_a_rare_class():
    emb = _blobs(n_per_class=12, classes=2, spread=0.05)
    labels = emb["label"].values.copy()
    labels[:3] = "rare"  # three examples of a rare class inside class c0's blob: unlearnable
    table = eossl.probe(emb, labels=labels, shots=[1], repeats=5)
    knn = table[table["probe"] == "kNN"].iloc[0]
    assert knn["balanced_accuracy"] < knn["accuracy"]


def test_probe_refuses_more_shots_than_a_class_can_spare():
    with pytest.raises(DataError, match="leaves no test example of class 'c0'"):
        eossl.probe(_blobs(n_per_class=5), shots=[5])
