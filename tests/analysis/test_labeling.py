"""eossl.label_map / eossl.next_labels: a few labelled patches -> class map, uncertainty, where next."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import eossl
from eossl.errors import DataError


@pytest.fixture()
def grid():
    """A 10 x 12 patch grid: the left half one kind of patch, the right half another, a nodata hole."""
    rng = np.random.default_rng(0)
    values = rng.normal(0, 0.3, (10, 12, 8))
    values[:, :6, 0] += 3.0
    values[:, 6:, 1] += 3.0
    values[0, 0] = np.nan
    da = xr.DataArray(values, dims=("y", "x", "dim"),
                      coords={"y": 5000.0 - 40 * np.arange(10), "x": 1000.0 + 40 * np.arange(12)},
                      attrs={"patch_size": 4})
    return da.rio.write_crs("EPSG:32633")


def test_two_labels_paint_both_halves_with_the_grid_crs(grid):
    out = eossl.label_map(grid, [(5, 2, 0), (5, 9, 1)], class_names=["left", "right"])
    assert set(out.data_vars) == {"class", "uncertainty"} and out["class"].dims == ("y", "x")
    assert (out["class"].values[:, 1:6] == 0).all() and (out["class"].values[:, 6:] == 1).all()
    assert out["class"].values[0, 0] == -1 and np.isnan(out["uncertainty"].values[0, 0])
    u = out["uncertainty"].values
    assert np.nanmin(u) >= 0 and np.nanmax(u) <= 1
    assert out.rio.crs == grid.rio.crs and out.attrs["classes"] == {0: "left", 1: "right"}
    np.testing.assert_array_equal(out["x"], grid["x"])


def test_a_label_grid_works_like_a_list_of_points(grid):
    labels = xr.full_like(grid.isel(dim=0, drop=True), np.nan)
    labels[5, 2], labels[5, 9] = 0, 1
    a = eossl.label_map(grid, labels)
    b = eossl.label_map(grid, [(5, 2, 0), (5, 9, 1)])
    np.testing.assert_array_equal(a["class"].values, b["class"].values)


def test_next_labels_are_the_most_uncertain_unlabelled_patches(grid):
    out = eossl.label_map(grid, [(5, 2, 0), (5, 9, 1)])
    picks = eossl.next_labels(out, n=4)
    assert list(picks.columns) == ["row", "col", "x", "y", "uncertainty"] and len(picks) == 4
    assert picks["uncertainty"].is_monotonic_decreasing
    assert picks["uncertainty"].iloc[0] == pytest.approx(np.nanmax(out["uncertainty"].values))
    assert not {(5, 2), (5, 9)} & set(zip(picks["row"], picks["col"]))
    assert picks["x"].iloc[0] == grid["x"].values[picks["col"].iloc[0]]


def test_bad_labels_are_refused_with_what_to_do(grid):
    with pytest.raises(DataError, match="at least two classes"):
        eossl.label_map(grid, [(5, 2, 0), (6, 2, 0)])
    with pytest.raises(DataError, match="outside the 10 x 12 patch grid"):
        eossl.label_map(grid, [(5, 2, 0), (50, 2, 1)])
    with pytest.raises(DataError, match="nodata"):
        eossl.label_map(grid, [(0, 0, 0), (5, 9, 1)])
    with pytest.raises(DataError, match=r"\(y, x, dim\)"):
        eossl.label_map(grid.isel(y=0), [(0, 2, 0), (0, 9, 1)])
