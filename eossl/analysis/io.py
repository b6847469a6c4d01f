"""Save and reopen embeddings as netCDF, keeping coordinates, CRS and attributes."""

from __future__ import annotations

import json
from pathlib import Path

import xarray as xr

from eossl.errors import DataError
from eossl.outputs import OUTPUT_MARKER, atomic_write_file, claim_output

_JSON_PREFIX = "json:"


def encoded_attrs(emb: xr.DataArray) -> dict:
    """``emb``'s attributes as netCDF / Zarr can hold them (lists and dicts as JSON), with eossl's
    output marker, so :func:`open_embeddings` restores them and the write rule knows the file."""
    attrs = {k: (v if isinstance(v, (str, int, float)) else _JSON_PREFIX + json.dumps(v))
             for k, v in emb.attrs.items() if v is not None}
    attrs[OUTPUT_MARKER] = "embeddings"
    return attrs


def save_embeddings(emb: xr.DataArray, path, overwrite: bool = False) -> Path:
    """Write embeddings to a netCDF file (atomically: a failed write leaves any old file whole).

    Embeddings eossl saved before at ``path`` are replaced; any other file there only with
    ``overwrite=True``; a folder never (see :mod:`eossl.outputs`). Attributes that netCDF cannot
    hold (lists, dicts) are stored as JSON and restored by :func:`open_embeddings`.
    """
    path = claim_output(path, overwrite=overwrite, kind="file", what="embeddings file")
    out = emb.copy()
    out.attrs = encoded_attrs(emb)
    atomic_write_file(path, lambda tmp: out.to_dataset(name=emb.name or "embedding").to_netcdf(tmp))
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
                else v for k, v in da.attrs.items() if k != OUTPUT_MARKER}
    return da
