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


def test_probe_per_class_recall_rows_and_their_mean_is_balanced_accuracy():
    emb = _blobs(n_per_class=12, classes=3, spread=2.5, seed=3)  # overlapping: recalls below 1
    summary = eossl.probe(emb, shots=[1, 5], repeats=4)
    per = eossl.probe(emb, shots=[1, 5], repeats=4, per_class=True)
    assert len(per) == 2 * 2 * 3 and set(per["class"]) == {"c0", "c1", "c2"}
    assert {"recall", "recall_std", "test_examples"} <= set(per.columns)
    assert (per[per["shots"] == 5]["test_examples"] == 7).all()  # 12 - 5 per class
    mean_recall = per.groupby(["probe", "shots"])["recall"].mean()
    for _, row in summary.iterrows():  # random split: every class in every test set
        assert mean_recall[(row["probe"], row["shots"])] == pytest.approx(row["balanced_accuracy"])


def test_probe_per_class_shows_the_unlearnable_rare_class():
    emb = _blobs(n_per_class=12, classes=2, spread=0.05)
    labels = emb["label"].values.astype("U8")
    labels[:3] = "rare"  # inside class c0's blob
    per = eossl.probe(emb, labels=labels, shots=[1], repeats=5, per_class=True)
    knn = per[per["probe"] == "kNN"].set_index("class")["recall"]
    assert knn["c1"] == 1.0 and knn["rare"] < 0.8


def _leaky_grid(size=24, block=4, seed=0):
    """Embeddings that encode only where a patch is, labels constant over 4x4 blocks: any accuracy
    above chance comes from training patches next to test patches (the leak)."""
    rng = np.random.default_rng(seed)
    r, c = np.mgrid[:size, :size]
    X = np.stack([r, c], axis=-1) + rng.normal(0, 0.1, (size, size, 2))  # (y, x, dim)
    blocks = rng.choice(["a", "b"], (size // block, size // block))
    labels = blocks.repeat(block, 0).repeat(block, 1)
    emb = xr.DataArray(X, dims=("y", "x", "dim"), coords={"y": np.arange(size), "x": np.arange(size)})
    return emb, labels


def test_blocked_split_removes_the_neighbour_leak():
    emb, labels = _leaky_grid()
    kw = dict(shots=[50], repeats=5, k=1, metric="euclidean")
    leaky = eossl.probe(emb, labels, **kw).set_index("probe")
    blocked = eossl.probe(emb, labels, split="blocked", block=4, **kw).set_index("probe")
    assert leaky.loc["kNN", "accuracy"] > 0.75  # neighbours in training: looks like skill
    assert blocked.loc["kNN", "accuracy"] < 0.6  # location says nothing about another block's class (chance 0.5)
    assert (blocked["split"] == "blocked").all() and blocked.loc["kNN", "test_examples"] < 0.6 * 576


def test_blocked_split_never_puts_a_block_on_both_sides():
    from eossl.analysis.probe import _probe_samples, _Splitter
    emb, labels = _leaky_grid()
    X, y, groups = _probe_samples(emb, labels, 4)
    assert len(np.unique(groups)) == 36
    splitter = _Splitter(y, groups, 5, np.random.default_rng(0), 0.5)
    for _ in range(50):
        train, test = splitter.draw(np.unique(y))
        assert not set(groups[train]) & set(groups[test])
        assert len(set(groups[test])) == 18  # half of the blocks held out
        assert [(y[train] == c).sum() for c in ("a", "b")] == [5, 5]


def test_blocked_split_of_chips_by_coordinates_matches_the_grid():
    emb, labels = _leaky_grid()
    chips = xr.DataArray(emb.values.reshape(-1, 2), dims=("sample", "dim"),
                         coords={"x": ("sample", np.tile(np.arange(24) * 10.0 + 5, 24)),
                                 "y": ("sample", np.repeat(np.arange(24) * -10.0 - 5, 24)),
                                 "label": ("sample", labels.reshape(-1))})
    kw = dict(shots=[5], repeats=3, k=1, metric="euclidean", split="blocked")
    by_coords = eossl.probe(chips, block=40.0, **kw)
    from eossl.analysis.probe import _probe_samples
    groups_grid = _probe_samples(emb, labels, 4)[2]
    groups_chips = _probe_samples(chips, None, 40.0)[2]
    # the same partition (ids may be numbered differently)
    assert len(set(zip(groups_grid, groups_chips))) == len(np.unique(groups_grid)) == 36
    ids = eossl.probe(chips, block=groups_grid, **kw)
    assert by_coords["test_examples"].tolist() == ids["test_examples"].tolist()


def test_probe_on_a_grid_drops_nodata_patches_and_unlabeled_ones():
    emb, labels = _leaky_grid()
    emb = emb.copy()
    emb[0, :] = np.nan  # a row of nodata patches (embed gives NaN there)
    labels = labels.astype(object)
    labels[1, :] = ""  # a row without a label
    per = eossl.probe(emb, labels, shots=[5], repeats=2, per_class=True)
    n_a, n_b = [(labels[2:] == c).sum() for c in ("a", "b")]
    got = per[per["probe"] == "kNN"].set_index("class")["test_examples"]
    assert got["a"] == n_a - 5 and got["b"] == n_b - 5 and "" not in got.index


def test_grid_labels_must_match_the_grid():
    emb, labels = _leaky_grid()
    with pytest.raises(DataError, match=r"\(23, 24\) do not match the embedding grid of 24x24 patches"):
        eossl.probe(emb, labels[1:], shots=[1])
    other = xr.DataArray(labels, dims=("y", "x"), coords={"y": np.arange(24) + 100.0, "x": np.arange(24)})
    with pytest.raises(DataError, match="another grid"):
        eossl.probe(emb, other, shots=[1])


def test_single_example_class_error_and_drop():
    emb = _blobs(n_per_class=12, classes=3)
    labels = emb["label"].values.astype("U8")
    labels[0] = "lonely"
    with pytest.raises(DataError, match=r"class 'lonely' \(1 example\).*small_classes='drop'"):
        eossl.probe(emb, labels=labels, shots=[1])
    with pytest.warns(UserWarning, match="leaving out class 'lonely'"):
        table = eossl.probe(emb, labels=labels, shots=[1, 5], repeats=2, small_classes="drop")
    assert (table["classes"] == 3).all()
    with pytest.warns(UserWarning, match="'c0' \\(11 examples\\)"):  # 11 - 11: no test example left
        table = eossl.probe(emb, labels=labels, shots=[11], repeats=2, small_classes="drop")
    assert (table["classes"] == 2).all()


def test_blocked_split_errors():
    emb, labels = _leaky_grid()
    with pytest.raises(DataError, match="needs block="):
        eossl.probe(emb, labels, split="blocked")
    with pytest.raises(DataError, match="one block"):
        eossl.probe(emb, labels, split="blocked", block=100)
    one_block = labels.astype("U8")
    one_block[:4, :4] = "rare"  # a class inside one block: it cannot be on both sides
    with pytest.raises(DataError, match=r"'rare' \(16 examples in 1 block\(s\)\)"):
        eossl.probe(emb, one_block, split="blocked", block=4, shots=[1])
    with pytest.raises(DataError, match="x and y coordinates"):
        eossl.probe(_blobs(), split="blocked", block=10.0)
    with pytest.raises(DataError, match="split must be"):
        eossl.probe(_blobs(), split="spatial")


def test_scene_labels_majority_vote(slovenia, tiny_run):
    scene = slovenia["image"].isel(time=3)
    emb = eossl.embed(tiny_run.model, scene)
    labels = eossl.scene_labels(slovenia["lulc"], emb)
    p = emb.attrs["patch_size"]
    assert labels.shape == (emb.sizes["y"], emb.sizes["x"]) and labels.rio.crs == emb.rio.crs
    np.testing.assert_allclose(labels["x"].values, emb["x"].values)
    names = slovenia["lulc"].attrs["classes"]
    raster = slovenia["lulc"].values
    for i, j in [(0, 0), (5, 7), (11, 11)]:
        block = raster[i * p:(i + 1) * p, j * p:(j + 1) * p].ravel()
        block = block[block != 0]  # "no data" is not a class
        values, counts = np.unique(block, return_counts=True)
        expect = names[values[counts.argmax()]] if counts.max() >= 0.5 * p * p else ""
        assert labels.values[i, j] == expect
        assert labels["purity"].values[i, j] == pytest.approx(counts.max() / (p * p))
    assert "no data" not in labels.values
    strict = eossl.scene_labels(slovenia["lulc"], emb, min_fraction=1.0)
    assert (strict.values == "").sum() > (labels.values == "").sum()
    with pytest.raises(DataError, match="give the labels of the scene that was embedded"):
        eossl.scene_labels(slovenia["lulc"][:50], emb)
    with pytest.raises(DataError, match="embedding grid"):
        eossl.scene_labels(slovenia["lulc"], eossl.embed(tiny_run.model, eossl.datasets.load_sample("eurosat_ms")[:3]))
