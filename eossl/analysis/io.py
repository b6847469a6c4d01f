"""Save and reopen embeddings as netCDF, keeping coordinates, CRS and attributes."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import xarray as xr

from eossl.errors import DataError
from eossl.train.checkpoint import _umask_mode

_JSON_PREFIX = "json:"


def save_embeddings(emb: xr.DataArray, path) -> Path:
    """Write embeddings to a netCDF file (atomically: a failed write leaves any old file whole).

    Attributes that netCDF cannot hold (lists, dicts) are stored as JSON and restored by
    :func:`open_embeddings`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = emb.copy()
    out.attrs = {k: (v if isinstance(v, (str, int, float)) else _JSON_PREFIX + json.dumps(v))
                 for k, v in emb.attrs.items() if v is not None}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        out.to_dataset(name=emb.name or "embedding").to_netcdf(tmp)
        os.chmod(tmp, _umask_mode())  # mkstemp's file is owner-only; give the mode open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def open_embeddings(path) -> xr.DataArray:
    """Read embeddings written by :func:`save_embeddings` (loaded into memory)."""
    try:
        ds = xr.open_dataset(path, decode_coords="all").load()
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not an embeddings file ({err})") from None
    ds.close()
    if len(ds.data_vars) != 1:
        raise DataError(f"{path}: expected one embeddings variable, found {list(ds.data_vars)}")
    da = ds[list(ds.data_vars)[0]]
    da.attrs = {k: json.loads(v[len(_JSON_PREFIX):]) if isinstance(v, str) and v.startswith(_JSON_PREFIX)
                else v for k, v in da.attrs.items()}
    return da
