"""plot.show_class_maps: truth and prediction side by side with the same colour per class."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from eossl import plot  # noqa: E402


def test_show_class_maps_colours_each_class_alike_and_leaves_others_blank(slovenia):
    truth = slovenia.lulc
    pred = xr.DataArray(np.where(truth.values == 2, 3, 2), dims=("y", "x"), coords=truth.coords)
    classes = {2: "forest", 3: "grassland"}
    fig = plot.show_class_maps([truth, pred], titles=["truth", "prediction"], classes=classes,
                               scene=slovenia.image.isel(time=0))
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["scene", "truth", "prediction"]
    a, b = (ax.get_images()[0].get_array() for ax in axes[1:])
    # forest is colour index 0 in both; truth's other classes (0, 1, 4, 8) are blank
    assert (a[truth.values == 2] == 0).all() and (b[pred.values == 2] == 0).all()
    assert np.ma.getmaskarray(a)[~np.isin(truth.values, [2, 3])].all()
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["forest", "grassland"]
