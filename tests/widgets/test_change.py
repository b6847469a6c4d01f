"""ChangeExplorer on the bundled Taizhou pair: swipe / side-by-side maps, the threshold slider and
the changed area; scores on another grid give a message."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import eossl
from _tiny import TINY_ENCODER

pytest.importorskip("ipyleaflet")
import ipyleaflet  # noqa: E402

from eossl_widgets.change import ChangeExplorer, otsu_threshold, patch_areas_m2  # noqa: E402

PATCH = 8


@pytest.fixture(scope="module")
def pair(taizhou):
    image = taizhou["image"]
    t1, t2 = image.isel(time=0), image.isel(time=1)
    return t1, t2, eossl.change_vector(t1, t2, patch_size=PATCH)


def test_threshold_slider_reports_the_changed_area(pair, taizhou):
    t1, t2, score = pair
    explorer = ChangeExplorer(t1, t2, score, labels=("2000", "2003"))
    assert explorer.message == ""
    assert explorer.threshold == pytest.approx(otsu_threshold(score.values))
    n = int((score.values >= explorer.threshold).sum())
    assert explorer.changed_patches == n and explorer.valid_patches == 2500
    # 8 px of 30 m: a patch is 240 m x 240 m = 5.76 ha
    assert explorer.changed_area_m2 == pytest.approx(n * 240.0 * 240.0)
    assert f"{n * 5.76:,.1f} ha" in explorer.report and "km²" in explorer.report_html.value
    before = explorer.changed_layer.url
    explorer.slider.value = 3.0                     # a person dragging the slider
    assert explorer.threshold == 3.0 and explorer.changed_patches == int((score.values >= 3.0).sum())
    assert explorer.changed_patches < n and explorer.changed_layer.url != before
    # at the best-F1 threshold against the reference labels, most labelled changes are painted
    best = eossl.evaluate_change(score, taizhou["change"], PATCH)
    explorer.set_threshold(best["threshold"])
    from eossl.analysis.change import patch_labels
    truth = patch_labels(taizhou["change"], PATCH)
    painted = explorer.changed_mask().values
    assert painted[truth == 1].mean() > 0.8 and painted[truth == 0].mean() < 0.1
    explorer.set_threshold(1e6)                     # beyond every score: clipped, said so
    assert "outside the scores' range" in explorer.message and explorer.threshold == pytest.approx(score.max())
    assert explorer.changed_patches == 1
    explorer.slider.value = 2.0
    assert explorer.message == ""
    explorer.set_threshold(float("nan"))
    assert "must be a number" in explorer.message and explorer.threshold == 2.0


def test_swipe_and_side_by_side(pair, taizhou):
    t1, t2, score = pair
    swipe = ChangeExplorer(t1, t2, score)
    (m,) = swipe.maps
    split = [c for c in m.controls if isinstance(c, ipyleaflet.SplitMapControl)]
    assert split and split[0].left_layer is swipe.date_layers[0] and split[0].right_layer is swipe.date_layers[1]
    assert swipe.changed_layer in m.layers and swipe.score_layer in m.layers
    side = ChangeExplorer(taizhou, None, score, mode="side")   # a two-date sample Dataset
    left, right = side.maps
    assert side.date_layers[0] in left.layers and side.date_layers[1] in right.layers
    assert side.changed_layer in right.layers
    assert {(link.source[1], link.target[1]) for link in side._links} == {("center", "center"), ("zoom", "zoom")}
    assert side.changed_patches == swipe.changed_patches
    assert "mode must be" in ChangeExplorer(t1, t2, score, mode="flip").message


def test_embedding_change_scores(taizhou, tmp_path):
    """The score from eossl.change on embeddings (a transform-carrying patch grid) works the same way."""
    image = taizhou["image"]
    run = eossl.pretrain(image, method="mae", steps=2, batch_size=8, encoder=dict(TINY_ENCODER),
                         out=tmp_path / "run", decoder_dim=32, decoder_depth=1)
    emb = eossl.embed(run.model, image)              # (time, y, x, dim)
    score = eossl.change(emb.isel(time=0), emb.isel(time=1))
    explorer = ChangeExplorer(image.isel(time=0), image.isel(time=1), score, threshold=0.5)
    assert explorer.message == "" and explorer.threshold == 0.5
    assert explorer.changed_patches == int((score.values >= 0.5).sum())


def test_scores_on_another_grid_give_a_message(pair, slovenia):
    t1, t2, score = pair
    for bad_score, words in [
        (eossl.change_vector(slovenia["image"].isel(time=0), slovenia["image"].isel(time=1), 8), "another grid"),
        (score.assign_coords(x=score.x + 2_000), "reach beyond its edges"),
        (score.drop_vars("spatial_ref"), "no CRS"),
        (score.expand_dims(time=1), "(y, x) DataArray"),
        (score * np.nan, "NaN everywhere"),
    ]:
        explorer = ChangeExplorer(t1, t2, bad_score)
        assert words in explorer.message, (words, explorer.message)
        assert explorer.children == (explorer.note,)
        explorer.set_threshold(1.0)                  # later calls do nothing, without a traceback
    cropped = t2.isel(x=slice(0, 300))
    assert "not on one grid" in ChangeExplorer(t1, cropped, score).message
    assert "at least two dates" in ChangeExplorer(t1.expand_dims(time=1), None, score).message


def test_otsu_and_areas():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(0.1, 0.05, 900), rng.normal(1.0, 0.1, 100)])
    t = otsu_threshold(values)                  # splits the two groups
    assert (values[:900] < t).mean() > 0.98 and (values[900:] >= t).all()
    assert np.isnan(otsu_threshold(np.full(5, np.nan)))
    # a 0.01 degree grid at the equator: about 1113 m x 1106 m per cell
    grid = xr.DataArray(np.zeros((2, 2)), dims=("y", "x"), coords={"y": [0.005, -0.005], "x": [0.005, 0.015]})
    areas = patch_areas_m2(grid.rio.write_crs("EPSG:4326"))
    assert areas.shape == (2, 2) and areas[0, 0] == pytest.approx(1113.2 * 1105.7, rel=0.01)
