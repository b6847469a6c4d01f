"""save_embeddings / open_embeddings: netCDF round trips that keep coordinates, CRS and attrs."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import eossl
from eossl.analysis import io as emb_io
from eossl.errors import DataError


@pytest.fixture(scope="module")
def chip_emb(tiny_run, chips):
    return eossl.embed(tiny_run.model, chips.isel(sample=slice(0, 20)))


@pytest.fixture(scope="module")
def grid_emb(tiny_run, slovenia):
    return eossl.embed(tiny_run.model, slovenia.image.isel(time=3))


def test_chip_embeddings_round_trip(tmp_path, chip_emb):
    path = eossl.save_embeddings(chip_emb, tmp_path / "chips.nc")
    back = eossl.open_embeddings(path)
    np.testing.assert_array_equal(back.values, chip_emb.values)
    assert back["label"].values.tolist() == chip_emb["label"].values.tolist()
    assert back.attrs["bands"] == chip_emb.attrs["bands"]  # a list survives as a list
    assert back.attrs["method"] == "mae"


def test_grid_embeddings_keep_crs_and_transform(tmp_path, grid_emb):
    back = eossl.open_embeddings(eossl.save_embeddings(grid_emb, tmp_path / "sub" / "grid.nc"))
    assert back.dims == ("y", "x", "dim")
    assert back.rio.crs == grid_emb.rio.crs
    assert back.rio.transform().almost_equals(grid_emb.rio.transform())
    np.testing.assert_array_equal(back["x"].values, grid_emb["x"].values)


def test_saved_file_gets_the_usual_permissions_not_mkstemps_owner_only(tmp_path, chip_emb):
    import os
    import stat
    mask = os.umask(0o022)
    try:
        path = eossl.save_embeddings(chip_emb, tmp_path / "emb.nc")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failed_write_keeps_the_old_file(tmp_path, chip_emb, monkeypatch):
    path = eossl.save_embeddings(chip_emb, tmp_path / "e.nc")
    before = path.read_bytes()

    def broken(self, target, *args, **kwargs):
        open(target, "wb").write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", broken)
    with pytest.raises(OSError, match="disk full"):
        emb_io.save_embeddings(chip_emb * 2, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["e.nc"]  # no temporary left behind


def test_not_an_embeddings_file(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not netcdf")
    with pytest.raises(DataError, match="not an embeddings file"):
        eossl.open_embeddings(bad)
    two = tmp_path / "two.nc"
    xr.Dataset({"a": ("x", [1, 2]), "b": ("x", [3, 4])}).to_netcdf(two)
    with pytest.raises(DataError, match="one embeddings variable"):
        eossl.open_embeddings(two)
