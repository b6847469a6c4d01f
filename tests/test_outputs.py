"""eossl.outputs: the write rule, atomic writes, and removal of killed writes' leftovers."""

import os

import numpy as np
import pytest
import xarray as xr

from eossl import outputs
from eossl.analysis.io import save_embeddings
from eossl.errors import ParameterError


def _emb():
    return xr.DataArray(np.ones((3, 4), "float32"), dims=("sample", "dim"), name="embedding")


def test_claim_output_follows_the_rule(tmp_path):
    new = tmp_path / "new.nc"
    assert outputs.claim_output(new) == new                      # nothing there: fine
    ours = save_embeddings(_emb(), tmp_path / "ours.nc")
    assert outputs.is_eossl_output(ours) and outputs.claim_output(ours) == ours
    theirs = tmp_path / "theirs.nc"
    theirs.write_text("notes")
    assert not outputs.is_eossl_output(theirs)
    with pytest.raises(ParameterError, match="is not eossl's output; nothing was changed"):
        outputs.claim_output(theirs)
    assert outputs.claim_output(theirs, overwrite=True) == theirs  # asked for
    folder = tmp_path / "x.zarr"
    folder.mkdir()
    assert outputs.claim_output(folder, kind="dir") == folder      # empty folder: fine
    (folder / "mine.txt").write_text("mine")
    with pytest.raises(ParameterError, match="never deletes those, even with --overwrite"):
        outputs.claim_output(folder, kind="dir", overwrite=True, option="--overwrite")
    with pytest.raises(ParameterError, match="is an existing folder"):
        outputs.claim_output(folder, kind="file")
    with pytest.raises(ParameterError, match="is an existing file; the output is a folder"):
        outputs.claim_output(theirs, kind="dir")
    assert (folder / "mine.txt").read_text() == "mine" and theirs.read_text() == "notes"


def test_a_zarr_store_with_a_foreign_file_inside_is_not_ours(tmp_path):
    store = tmp_path / "e.zarr"
    _emb().to_dataset().assign_attrs({outputs.OUTPUT_MARKER: "embeddings"}).to_zarr(
        store, zarr_format=2, consolidated=True)
    assert outputs.is_eossl_output(store)
    (store / "thesis.docx").write_text("years of work")
    assert not outputs.is_eossl_output(store)


def test_atomic_writes_remove_dead_writers_temp_files_only(tmp_path):
    target = tmp_path / "history.csv"
    dead = tmp_path / ".history.csv.pid999999999.abc.tmp"
    legacy = tmp_path / ".history.csv.k2j3h4g5.tmp"
    live = tmp_path / f".history.csv.pid{os.getpid()}.busy.tmp"
    for p in (dead, legacy, live):
        p.write_bytes(b"x")
    assert set(outputs.stale_temps(target)) == {dead, legacy}
    outputs.atomic_write_bytes(target, b"a,b\n")
    assert target.read_bytes() == b"a,b\n" and not dead.exists() and not legacy.exists() and live.exists()


def test_atomic_write_file_and_dir(tmp_path):
    outputs.atomic_write_file(tmp_path / "f.bin", lambda tmp: open(tmp, "wb").write(b"123"))
    assert (tmp_path / "f.bin").read_bytes() == b"123"
    d = tmp_path / "d.zarr"
    outputs.atomic_write_dir(d, lambda tmp: (os.mkdir(tmp), open(os.path.join(tmp, "a"), "w").write("1")))
    outputs.atomic_write_dir(d, lambda tmp: (os.mkdir(tmp), open(os.path.join(tmp, "b"), "w").write("2")))
    assert sorted(p.name for p in d.iterdir()) == ["b"]

    def fail(tmp):
        os.mkdir(tmp)
        raise OSError("disk full (simulated)")
    with pytest.raises(OSError, match="simulated"):
        outputs.atomic_write_dir(d, fail)
    assert sorted(p.name for p in d.iterdir()) == ["b"]            # the old copy stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.zarr", "f.bin"]


def test_a_half_swapped_folder_is_put_back(tmp_path):
    d = tmp_path / "e.zarr"
    old = tmp_path / ".e.zarr.old"
    old.mkdir()
    (old / "a").write_text("1")                                    # killed between the two renames
    outputs.remove_stale_temps(d)
    assert (d / "a").read_text() == "1" and not old.exists()
