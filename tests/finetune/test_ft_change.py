"""Change detection on the bundled Landsat pair (and OSCD when ../shared/data has it)."""

from __future__ import annotations

import numpy as np
import pytest
from _tiny import TINY_ENCODER

import eossl
from eossl.errors import DataError
from eossl.finetune.change import open_oscd, pair_of


@pytest.fixture(scope="module")
def change_run(taizhou, tmp_path_factory):
    return eossl.finetune(None, taizhou, "change", task="change", shots=100, steps=60,
                          encoder=dict(TINY_ENCODER), out=tmp_path_factory.mktemp("cd") / "run")


def test_change_head_finds_changed_pixels_far_above_chance(change_run):
    m = change_run.metrics
    assert list(m.index[:2]) == ["unchanged", "changed"]  # 0 'unknown' is not a class
    assert m.loc["overall", "support"] == 17163 + 4227 - 200
    # Always answering one class gives a macro F1 of at most ~0.45 here.
    assert m.loc["macro", "f1"] > 0.6 and m.loc["changed", "recall"] > 0.5
    assert change_run.model.card["finetune"]["class_weight"] == "balanced"


def test_change_map_is_georeferenced_and_the_same_from_a_pair_of_scenes(change_run, taizhou):
    from_stack = eossl.predict(change_run, taizhou)
    assert from_stack.dims == ("y", "x") and from_stack.shape == (400, 400)
    assert from_stack.rio.crs == taizhou.image.rio.crs
    assert set(np.unique(from_stack.values)) <= {1, 2}
    pair = (taizhou.image.isel(time=0), taizhou.image.isel(time=1))
    np.testing.assert_array_equal(eossl.predict(change_run, pair).values, from_stack.values)
    loaded = eossl.load_finetuned(change_run.checkpoint_path)
    np.testing.assert_array_equal(eossl.predict(loaded, taizhou).values, from_stack.values)


def test_bad_change_input_is_refused(taizhou):
    with pytest.raises(DataError, match="two dates"):
        pair_of(taizhou.image.isel(time=0))
    with pytest.raises(DataError, match=r"dates=\(i, j\)"):
        pair_of(taizhou.image.isel(time=[0, 1, 0]))
    assert pair_of(taizhou.image.isel(time=[0, 1, 0]), dates=(1, 2)).sizes["time"] == 2
    with pytest.raises(DataError, match="different grid"):
        pair_of((taizhou.image.isel(time=0), taizhou.image.isel(time=1, y=slice(0, 300))))
    with pytest.raises(DataError, match="'changed' has 4227 labeled pixels"):
        eossl.finetune(None, taizhou, "change", task="change", shots=5000, steps=1)


def test_oscd_city_opens_with_its_labels_on_the_image_grid(shared_data):
    ds = open_oscd(shared_data / "oscd" / "bercy")
    assert ds.image.sizes["time"] == 2 and ds.image.sizes["band"] == 13
    assert ds.change.shape == (ds.sizes["y"], ds.sizes["x"])
    assert set(np.unique(ds.change.values)) == {1, 2}
    with pytest.raises(DataError, match="no cm.tif"):
        open_oscd(shared_data / "oscd" / "milano")
