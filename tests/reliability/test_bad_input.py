"""Bad input through the public API and the ``eossl`` CLI: each refused with an eossl error of
the named class whose message names the problem, and nothing that was on disk is lost.

Each case is ``(id, call, error class, pattern)``: ``call(ctx)`` does what a user would do wrong;
the pattern must be found in the message (case-insensitive). CLI cases run ``eossl.cli.main`` and
expect exit status 2 with the message on stderr and no Python traceback.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import yaml

import eossl
from eossl import cli
from eossl.errors import CheckpointError, DataError, EosslError, ParameterError
from _fault_counts import RESULTS
from _tiny import TINY_ENCODER


class Ctx:
    """What the cases need: real chips, a real run, a scratch folder."""

    def __init__(self, chips, run, tmp: Path):
        self.chips, self.run, self.tmp = chips, run, tmp
        self.model = run.model
        self.ckpt = run.checkpoint_path

    def pretrain(self, data=None, **kw):
        args = dict(method="mae", steps=1, batch_size=4, encoder=dict(TINY_ENCODER), out=self.tmp / "run",
                    decoder_dim=32, decoder_depth=1, tensorboard=False)
        args.update(kw)
        return eossl.pretrain(self.chips if data is None else data, **args)

    def file(self, name: str, text: str = "my notes, not eossl's") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def user_folder(self, name: str) -> Path:
        folder = self.tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "field_notes.txt").write_text("mine")
        (folder / "photo.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        return folder

    def chip_folder(self, name="chips", bands=3, size=16, per_class=3, named=True) -> Path:
        import rasterio
        root = self.tmp / name
        for c in ("forest", "water"):
            (root / c).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                with rasterio.open(root / c / f"{i}.tif", "w", driver="GTiff", width=size, height=size,
                                   count=bands, dtype="uint16") as f:
                    f.write(np.random.default_rng(i).integers(500, 3000, (bands, size, size)).astype("uint16"))
        return root

    def scene_file(self, name="scene.tif", truncate=False) -> Path:
        scene = eossl.datasets.load_sample("slovenia_s2")["image"].isel(time=0)
        path = self.tmp / name
        scene.rio.to_raster(path)
        if truncate:
            data = path.read_bytes()
            path.write_bytes(data[: len(data) * 2 // 3])
        return path

    def config(self, **entries) -> Path:
        entries.setdefault("data", {"sample": "eurosat_ms"})
        entries.setdefault("out", str(self.tmp / "cli_run"))
        path = self.tmp / "config.yaml"
        path.write_text(yaml.safe_dump(entries))
        return path

    def broken_card(self, drop: str) -> Path:
        from eossl.checkpoint import save_checkpoint
        card = {k: v for k, v in self.model.card.items() if k != drop}
        # write the card by hand, as a damaged or hand-edited file would be
        from safetensors.torch import save_file
        folder = self.tmp / f"no_{drop}"
        save_checkpoint(folder, self.model, self.model.card)
        tensors = {f"model.{k}": v.contiguous() for k, v in self.model.state_dict().items()}
        save_file(tensors, str(folder / "checkpoint.safetensors"),
                  metadata={"format": "eossl-checkpoint/1", "card": json.dumps(card)})
        return folder


class CliFailed(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def run_cli(*argv):
    """``eossl ARGV`` in-process; a refusal (exit 2) becomes :class:`CliFailed` with stderr."""
    import contextlib
    import io
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            status = cli.main([str(a) for a in argv])
        except SystemExit as stop:  # argparse's own refusals
            status = stop.code
    if status != 0:
        raise CliFailed(status, err.getvalue())
    return status


def with_inf(chips):
    bad = chips.copy(deep=True).astype("float32")
    bad[0, 0, 0, 0] = np.inf
    return bad


CASES = [
    # ---- pretrain: the budget
    ("steps negative", lambda c: c.pretrain(steps=-5), ParameterError, "steps must be at least 0, not -5"),
    ("steps text", lambda c: c.pretrain(steps="abc"), ParameterError, "steps must be a whole number"),
    ("steps fraction", lambda c: c.pretrain(steps=2.5), ParameterError, "steps must be a whole number"),
    ("steps and minutes", lambda c: c.pretrain(steps=3, minutes=1), ParameterError, "steps or minutes, not both"),
    ("minutes zero", lambda c: c.pretrain(steps=None, minutes=0), ParameterError, "minutes must be a positive number"),
    ("minutes negative", lambda c: c.pretrain(steps=None, minutes=-2), ParameterError, "minutes must be a positive number"),
    ("minutes nan", lambda c: c.pretrain(steps=None, minutes=float("nan")), ParameterError, "minutes must be a finite"),
    # ---- pretrain: optimisation and sampling settings
    ("batch_size zero", lambda c: c.pretrain(batch_size=0), ParameterError, "batch_size must be at least 1"),
    ("batch_size negative", lambda c: c.pretrain(batch_size=-3), ParameterError, "batch_size must be at least 1"),
    ("lr negative", lambda c: c.pretrain(lr=-1e-3), ParameterError, "lr must be a positive number"),
    ("lr zero", lambda c: c.pretrain(lr=0), ParameterError, "lr must be a positive number"),
    ("lr infinite", lambda c: c.pretrain(lr=float("inf")), ParameterError, "lr must be a finite number"),
    ("lr text", lambda c: c.pretrain(lr="fast"), ParameterError, "lr must be a finite number"),
    ("checkpoint_every zero", lambda c: c.pretrain(checkpoint_every=0), ParameterError, "checkpoint_every must be at least 1"),
    ("img_size zero", lambda c: c.pretrain(img_size=0), ParameterError, "img_size must be at least 2"),
    ("max_invalid above one", lambda c: c.pretrain(max_invalid=1.5), ParameterError, "max_invalid must be"),
    ("warmup negative", lambda c: c.pretrain(warmup_steps=-1), ParameterError, "warmup_steps must be at least 0"),
    ("weight_decay negative", lambda c: c.pretrain(weight_decay=-0.1), ParameterError, "weight_decay must be >= 0"),
    ("num_workers negative", lambda c: c.pretrain(num_workers=-1), ParameterError, "num_workers must be at least 0"),
    ("seed negative", lambda c: c.pretrain(seed=-1), ParameterError, "seed must be at least 0"),
    ("balance unknown", lambda c: c.pretrain(balance="evenly"), ParameterError, "balance must be one of"),
    ("readout unknown", lambda c: c.pretrain(readout="cls"), ParameterError, "readout must be one of"),
    ("device bogus", lambda c: c.pretrain(device="bogus"), ParameterError, "device must be one of"),
    ("device missing gpu", lambda c: c.pretrain(device="cuda:99" if torch.cuda.is_available() else "cuda"),
     ParameterError, "cuda"),
    ("device cuda index text", lambda c: c.pretrain(device="cuda:x"), ParameterError, "device must be one of"),
    # ---- pretrain: method and encoder
    ("method unknown", lambda c: c.pretrain(method="simclrr"), ParameterError, "unknown SSL method 'simclrr'"),
    ("method not text", lambda c: c.pretrain(method=3), ParameterError, "unknown SSL method 3"),
    ("method setting typo", lambda c: c.pretrain(mask_ration=0.5), ParameterError, "unknown setting(s) ['mask_ration']"),
    ("encoder unknown", lambda c: c.pretrain(encoder="vit_enormous_typo"), ParameterError, "unknown encoder"),
    ("recipe unknown", lambda c: c.pretrain(method=None, recipe="gpu_huge"), ParameterError, "unknown recipe 'gpu_huge'"),
    ("patch does not divide window", lambda c: c.pretrain(img_size=60), DataError, "does not divide the 60 px"),
    # ---- pretrain: data and out
    ("data empty list", lambda c: c.pretrain([]), DataError, "no data to train on"),
    ("data numpy", lambda c: c.pretrain(np.zeros((3, 64, 64))), DataError, "cannot train on ndarray"),
    ("data dataset without image", lambda c: c.pretrain(xr.Dataset({"x": ("a", [1])})), DataError, "'image' variable"),
    ("data all nan", lambda c: c.pretrain(c.chips.astype("float32") * np.nan), DataError, "no valid pixels"),
    ("data smaller than window", lambda c: c.pretrain(c.chips.isel(y=slice(0, 8), x=slice(0, 8))), DataError,
     "smaller than one 64x64"),
    ("data bands differ", lambda c: c.pretrain([c.chips, c.chips.isel(band=slice(0, 5))]), DataError, "band"),
    ("out is a file", lambda c: c.pretrain(out=c.file("run.txt")), ParameterError, "is an existing file, not a folder"),
    # ---- embed and load_model
    ("embed batch_size zero", lambda c: eossl.embed(c.model, c.chips, batch_size=0), ParameterError, "batch_size must be at least 1"),
    ("embed window zero", lambda c: eossl.embed(c.model, c.chips, window=0), ParameterError, "window must be at least 1"),
    ("embed device bogus", lambda c: eossl.embed(c.model, c.chips, device="gpu0"), ParameterError, "device must be one of"),
    ("embed on_mismatch unknown", lambda c: eossl.embed(c.model, c.chips, on_mismatch="maybe"), ParameterError, "on_mismatch must be one of"),
    ("embed numpy", lambda c: eossl.embed(c.model, np.zeros((2, 13, 64, 64))), DataError, "'band' dimension"),
    ("embed empty", lambda c: eossl.embed(c.model, c.chips.isel(sample=[])), DataError, "empty array"),
    ("embed fewer bands", lambda c: eossl.embed(c.model, c.chips.isel(band=slice(0, 10))), CheckpointError, "missing"),
    ("embed unnamed other count", lambda c: eossl.embed(c.model, c.chips.isel(band=slice(0, 12)).assign_coords(
        band=[f"band_{i + 1}" for i in range(12)])), CheckpointError, "no names and their count (12) differs"),
    ("embed dataset without image", lambda c: eossl.embed(c.model, xr.Dataset({"x": ("a", [1])})), DataError, "'image' variable"),
    ("load_model no checkpoint", lambda c: eossl.load_model(c.tmp / "nothing_here"), CheckpointError, "no such file"),
    ("load_model text file", lambda c: eossl.load_model(c.file("model.safetensors", "not weights")), CheckpointError,
     "model.safetensors"),
    ("load_model truncated", lambda c: eossl.load_model(_truncated_copy(c)), CheckpointError, "damaged or truncated"),
    ("card without bands", lambda c: eossl.embed(eossl.load_model(c.broken_card("bands")), c.chips), CheckpointError,
     "'bands'"),
    ("card without normalization", lambda c: eossl.load_model(c.broken_card("normalization")), CheckpointError,
     "'normalization'"),
    # ---- probes
    ("knn single class", lambda c: eossl.knn_accuracy(eossl.embed(c.model, c.chips), ["forest"] * c.chips.sizes["sample"]),
     DataError, "single class"),
    ("knn k zero", lambda c: eossl.knn_accuracy(eossl.embed(c.model, c.chips), k=0), ParameterError, "k must be at least 1"),
    ("knn nan embeddings", lambda c: eossl.knn_accuracy(eossl.embed(c.model, c.chips) * np.nan), DataError, "NaN"),
    ("probe single class", lambda c: eossl.probe(eossl.embed(c.model, c.chips), ["forest"] * c.chips.sizes["sample"]),
     DataError, "at least two classes"),
    ("probe shots zero", lambda c: eossl.probe(eossl.embed(c.model, c.chips), shots=[0]), ParameterError, "shots must be at least 1"),
    ("probe shots empty", lambda c: eossl.probe(eossl.embed(c.model, c.chips), shots=[]), ParameterError, "shots is empty"),
    ("probe repeats zero", lambda c: eossl.probe(eossl.embed(c.model, c.chips), repeats=0), ParameterError, "repeats must be at least 1"),
    ("probe split unknown", lambda c: eossl.probe(eossl.embed(c.model, c.chips), split="spatial"), DataError, "split must be"),
    # ---- files in and out
    ("open_scene missing", lambda c: eossl.open_scene(c.tmp / "nope.tif"), DataError, "no such file"),
    ("open_scene text file", lambda c: eossl.open_scene(c.file("scene.tif", "hello")), DataError, "not a raster"),
    ("open_scene truncated", lambda c: eossl.open_scene(c.scene_file("cut.tif", truncate=True)), DataError, "truncated file"),
    ("pretrain truncated scene", lambda c: c.pretrain(eossl.open_scene(c.scene_file("cut2.tif", truncate=True))),
     DataError, "truncated file"),
    ("open_chips truncated chip", lambda c: eossl.open_chips(_truncate(c.chip_folder("tc") / "forest" / "0.tif").parents[1]),
     DataError, "not a raster"),
    ("open_chips band counts differ", lambda c: eossl.open_chips(_mixed_bands(c)), DataError, "all chips of a set"),
    ("open_embeddings not netcdf", lambda c: eossl.open_embeddings(c.file("emb.nc", "text")), DataError, "not an embeddings file"),
    ("save_embeddings over a user's file", lambda c: eossl.save_embeddings(eossl.embed(c.model, c.chips), c.file("mine.nc")),
     ParameterError, "is not eossl's embeddings file"),
    ("save_embeddings onto a folder", lambda c: eossl.save_embeddings(eossl.embed(c.model, c.chips), c.user_folder("x.nc")),
     ParameterError, "is an existing folder"),
    ("embed_to_zarr into a user's folder, overwrite", lambda c: eossl.embed_to_zarr(
        c.model, c.scene_file("z.tif"), c.user_folder("mine.zarr"), overwrite=True), DataError, "not a Zarr store"),
    ("embed_to_zarr chunk zero", lambda c: eossl.embed_to_zarr(c.model, c.scene_file("z0.tif"), c.tmp / "z0.zarr", chunk=0),
     ParameterError, "chunk must be at least 1"),
    # ---- the CLI
    ("cli embed into a user's zarr folder", lambda c: run_cli("embed", c.ckpt, "eurosat_ms", "--out", c.user_folder("u.zarr")),
     CliFailed, "holding files that are not eossl's"),
    ("cli embed into a user's zarr folder, overwrite", lambda c: run_cli(
        "embed", c.ckpt, "eurosat_ms", "--out", c.user_folder("u2.zarr"), "--overwrite"), CliFailed, "even with --overwrite"),
    ("cli embed out is a folder named .nc", lambda c: run_cli("embed", c.ckpt, "eurosat_ms", "--out", c.user_folder("x.nc")),
     CliFailed, "is an existing folder"),
    ("cli embed over a user's .nc", lambda c: run_cli("embed", c.ckpt, "eurosat_ms", "--out", c.file("theirs.nc")),
     CliFailed, "pass --overwrite"),
    ("cli embed out suffix", lambda c: run_cli("embed", c.ckpt, "eurosat_ms", "--out", c.tmp / "e.txt"), CliFailed,
     "give a .nc or .zarr path"),
    ("cli embed batch size zero", lambda c: run_cli("embed", c.ckpt, "eurosat_ms", "--out", c.tmp / "b.nc", "--batch-size", 0),
     CliFailed, "--batch-size: must be at least 1"),
    ("cli embed device bogus", lambda c: run_cli("embed", c.ckpt, "eurosat_ms", "--out", c.tmp / "d.nc", "--device", "bogus"),
     CliFailed, "device must be one of"),
    ("cli embed data missing", lambda c: run_cli("embed", c.ckpt, c.tmp / "no_such_chips", "--out", c.tmp / "m.nc"),
     CliFailed, "no such file or folder"),
    ("cli embed model missing", lambda c: run_cli("embed", c.tmp / "no_run", "eurosat_ms", "--out", c.tmp / "m2.nc"),
     CliFailed, "no such file"),
    ("cli config steps text", lambda c: run_cli("pretrain", c.config(steps="abc")), CliFailed, "steps must be a whole number"),
    ("cli config lr negative", lambda c: run_cli("pretrain", c.config(lr=-0.1)), CliFailed, "lr must be a positive number"),
    ("cli config batch size zero", lambda c: run_cli("pretrain", c.config(batch_size=0)), CliFailed, "batch_size must be at least 1"),
    ("cli config unknown key", lambda c: run_cli("pretrain", c.config(stpes=10)), CliFailed, "unknown key(s) ['stpes']"),
    ("cli config no data", lambda c: run_cli("pretrain", _config_without_data(c)), CliFailed, "no 'data' entry"),
    ("cli config not a mapping", lambda c: run_cli("pretrain", c.file("list.yaml", "- 1\n- 2\n")), CliFailed,
     "a config is a mapping"),
    ("cli config unknown sample", lambda c: run_cli("pretrain", c.config(data={"sample": "atlantis"})), CliFailed,
     "no bundled sample 'atlantis'"),
    ("cli pretrain steps negative", lambda c: run_cli("pretrain", c.config(), "--steps", -1), CliFailed,
     "--steps: must be 0 or more"),
    ("cli pretrain minutes zero", lambda c: run_cli("pretrain", c.config(), "--minutes", 0), CliFailed,
     "--minutes: must be a positive number"),
    ("cli pretrain device bogus", lambda c: run_cli("pretrain", c.config(steps=1), "--device", "tpu"), CliFailed,
     "device must be one of"),
    ("cli pretrain out is a file", lambda c: run_cli("pretrain", c.config(steps=1), "--out", c.file("out.txt")), CliFailed,
     "is an existing file, not a folder"),
    ("cli evaluate shots zero", lambda c: run_cli("evaluate", c.ckpt, "eurosat_ms", "--shots", 0), CliFailed,
     "--shots: must be at least 1"),
    ("cli evaluate over a user's csv", lambda c: run_cli("evaluate", c.ckpt, "eurosat_ms", "--out", c.file("t.csv")),
     CliFailed, "is not eossl's probe table"),
]


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _truncated_copy(c: Ctx) -> Path:
    target = c.tmp / "truncated" / "checkpoint.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    data = Path(c.ckpt).read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _mixed_bands(c: Ctx) -> Path:
    import rasterio
    root = c.chip_folder("mixed")
    with rasterio.open(root / "water" / "0.tif", "w", driver="GTiff", width=16, height=16, count=2,
                       dtype="uint16") as f:
        f.write(np.ones((2, 16, 16), "uint16"))
    return root


def _config_without_data(c: Ctx) -> Path:
    path = c.tmp / "nodata.yaml"
    path.write_text(yaml.safe_dump({"steps": 1}))
    return path


def _snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes (what must survive a refused call)."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ctx(small_chips, small_run, tmp_path_factory):
    return Ctx(small_chips, small_run, tmp_path_factory.mktemp("bad_input"))


@pytest.mark.parametrize("name, call, error, pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(ctx, name, call, error, pattern, tmp_path):
    ctx.tmp = tmp_path  # a scratch folder per case, so one case's files never excuse another's
    RESULTS["cases"] += 1
    with pytest.raises(error) as caught:
        call(ctx)
    message = str(caught.value)
    assert re.search(re.escape(pattern), message, re.IGNORECASE), f"message does not name the problem: {message}"
    assert "Traceback" not in message
    if error is CliFailed:
        assert caught.value.status == 2
    else:
        assert isinstance(caught.value, EosslError)  # one family users can catch
    RESULTS["clean"] += 1


def test_there_are_at_least_sixty_distinct_cases():
    names = [c[0] for c in CASES]
    assert len(set(names)) == len(names) >= 60


# ----------------------------------------------------------------------------- nothing is lost

def test_refused_writes_leave_the_users_files_as_they_were(ctx, tmp_path):
    ctx.tmp = tmp_path
    folder = ctx.user_folder("store.zarr")
    nc = ctx.file("notes.nc")
    before, nc_before = _snapshot(folder), nc.read_bytes()
    for argv in (("embed", ctx.ckpt, "eurosat_ms", "--out", folder),
                 ("embed", ctx.ckpt, "eurosat_ms", "--out", folder, "--overwrite"),
                 ("embed", ctx.ckpt, "eurosat_ms", "--out", nc)):
        with pytest.raises(CliFailed):
            run_cli(*argv)
    with pytest.raises(DataError):
        eossl.embed_to_zarr(ctx.model, ctx.scene_file(), folder, overwrite=True)
    assert _snapshot(folder) == before and nc.read_bytes() == nc_before


def test_eossls_own_output_is_replaced_and_overwrite_replaces_a_users_file(ctx, tmp_path):
    """Re-running a cell or a command must work: eossl's own embeddings are replaced without
    asking; a user's file only with --overwrite."""
    emb = eossl.embed(ctx.model, ctx.chips)
    path = eossl.save_embeddings(emb, tmp_path / "e.nc")
    eossl.save_embeddings(emb * 2, path)  # its own file: replaced
    np.testing.assert_allclose(eossl.open_embeddings(path).values, emb.values * 2, rtol=1e-6)
    store = tmp_path / "e.zarr"
    for _ in range(2):  # the second run replaces the store the first one wrote
        assert run_cli("embed", ctx.ckpt, "eurosat_ms", "--out", store) == 0
    theirs = tmp_path / "theirs.nc"
    theirs.write_text("old")
    assert run_cli("embed", ctx.ckpt, "eurosat_ms", "--out", theirs, "--overwrite") == 0
    assert eossl.open_embeddings(theirs).sizes["sample"] == 120
    assert not list(tmp_path.glob(".*.tmp")) and not list(tmp_path.glob(".*.old"))


# ----------------------------------------------------------------------------- right results

def test_an_infinite_pixel_is_an_invalid_pixel_not_a_lost_scene(ctx, tmp_path):
    """One +inf pixel: pretraining statistics stay finite, and embedding loses one patch, not the
    window around it."""
    scene = eossl.datasets.load_sample("slovenia_s2")["image"].isel(time=0).astype("float32")
    bad = scene.copy(deep=True)
    bad[0, 10, 10] = np.inf
    stats = eossl.band_stats(bad)
    assert np.isfinite(stats["mean"]).all() and np.isfinite(stats["std"]).all()
    run = eossl.pretrain(bad, method="mae", steps=1, batch_size=2, img_size=32, encoder=dict(TINY_ENCODER),
                         out=tmp_path / "inf", decoder_dim=32, decoder_depth=1, tensorboard=False)
    assert np.isfinite(run.history["loss"]).all()
    emb = eossl.embed(run.model, bad)                       # (y, x, dim) on the 8 px patch grid
    missing = ~np.isfinite(emb.values).all(axis=-1)
    assert missing.sum() == 1 and missing[10 // 8, 10 // 8]
    ok = eossl.embed(run.model, scene)
    assert np.isfinite(ok.values).all()


def test_a_yaml_float_without_a_dot_is_read_as_a_number(ctx, tmp_path):
    """YAML 1.1 reads ``lr: 1e-3`` as text; a config means the number."""
    path = tmp_path / "c.yaml"
    path.write_text(f"data: {{sample: eurosat_ms}}\nmethod: mae\nsteps: 1\nbatch_size: 4\nlr: 1e-3\n"
                    f"out: {tmp_path / 'r'}\nencoder: {json.dumps(dict(TINY_ENCODER))}\ntensorboard: false\n")
    assert cli.read_config(path)["lr"] == pytest.approx(1e-3)
    assert run_cli("pretrain", path) == 0


# ----------------------------------------------------------------------------- fine-tuning

FINETUNE_CASES = [
    ("finetune steps zero", dict(steps=0), "steps must be at least 1"),
    ("finetune batch_size zero", dict(batch_size=0), "batch_size must be at least 1"),
    ("finetune lr negative", dict(lr=-1.0), "lr must be a positive number"),
    ("finetune shots zero", dict(shots=0), "shots must be at least 1"),
    ("finetune test_fraction one", dict(test_fraction=1.0), "test_fraction must be"),
    ("finetune device bogus", dict(device="bogus"), "device must be one of"),
    ("finetune out is a file", dict(out="FILE"), "is an existing file, not a folder"),
]


@pytest.mark.parametrize("name, kwargs, pattern", FINETUNE_CASES, ids=[c[0] for c in FINETUNE_CASES])
def test_finetune_refuses_bad_settings_before_training(ctx, name, kwargs, pattern, tmp_path):
    RESULTS["cases"] += 1
    if kwargs.get("out") == "FILE":
        kwargs = {**kwargs, "out": _a_file(tmp_path)}
    with pytest.raises(EosslError) as caught:
        eossl.finetune(ctx.model, ctx.chips, task="classification", steps=kwargs.pop("steps", 2), **kwargs)
    assert re.search(re.escape(pattern), str(caught.value), re.IGNORECASE), str(caught.value)
    RESULTS["clean"] += 1


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "ft.txt"
    path.write_text("mine")
    return path
