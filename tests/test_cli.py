"""The command line: eossl pretrain CONFIG.yaml, eossl embed, eossl evaluate, eossl methods, config checking."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

import eossl
from eossl.cli import load_data, main, read_config
from eossl.errors import EosslError

from _tiny import TINY_ENCODER


def _config(tmp_path, **overrides):
    config = {"data": [{"sample": "eurosat_ms"}], "method": "mae", "encoder": dict(TINY_ENCODER),
              "steps": 4, "batch_size": 8, "checkpoint_every": 2, "out": str(tmp_path / "run"),
              "method_config": {"decoder_dim": 32, "decoder_depth": 1}}
    config.update(overrides)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_pretrain_from_a_config_writes_checkpoint_and_resolved_config(tmp_path, capsys):
    assert main(["pretrain", str(_config(tmp_path))]) == 0
    out = tmp_path / "run"
    assert "checkpoint:" in capsys.readouterr().out
    model = eossl.load_model(out)
    assert model.card["step"] == 4 and model.card["method_config"]["decoder_dim"] == 32
    assert len(pd.read_csv(out / "history.csv")) == 4
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["data"] == [{"sample": "eurosat_ms"}] and saved["steps"] == 4
    # fully resolved: every pretrain argument with the value the run used
    assert read_config(out / "config.yaml") == saved  # a valid config itself
    assert {"lr", "min_lr", "weight_decay", "grad_clip", "warmup_steps", "seed", "img_size",
            "tensorboard"} <= set(saved)
    assert saved["encoder"] == {**TINY_ENCODER, "in_chans": 13, "img_size": 64}
    assert saved["warmup_steps"] == 1 and saved["method_config"]["decoder_dim"] == 32
    assert saved["method_config"] == model.card["method_config"]


def test_resolved_config_reruns_the_run(tmp_path):
    assert main(["pretrain", str(_config(tmp_path)), "--steps", "2"]) == 0
    resolved = tmp_path / "run" / "config.yaml"
    assert yaml.safe_load(resolved.read_text())["steps"] == 2
    assert main(["pretrain", str(resolved), "--steps", "3"]) == 0  # the same run, resumed
    assert pd.read_csv(tmp_path / "run" / "history.csv")["step"].tolist() == [1, 2, 3]
    assert yaml.safe_load(resolved.read_text())["steps"] == 3


def test_resolved_config_is_written_before_the_first_checkpoint(tmp_path, monkeypatch):
    """A run killed after its first checkpoint already has its config beside it."""
    import eossl.train.loop as loop
    seen = []

    def save(self):
        seen.append((self.out / "config.yaml").exists())
        raise RuntimeError("killed")  # stands in for a kill at the first save

    monkeypatch.setattr(loop.Trainer, "save", save)
    with pytest.raises(RuntimeError, match="killed"):
        main(["pretrain", str(_config(tmp_path))])
    assert seen == [True]


def test_command_line_overrides_and_resume(tmp_path):
    path = _config(tmp_path)
    assert main(["pretrain", str(path), "--steps", "2"]) == 0
    assert eossl.load_model(tmp_path / "run").card["step"] == 2
    assert main(["pretrain", str(path), "--steps", "5"]) == 0  # resumes the same out folder
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert history["step"].tolist() == [1, 2, 3, 4, 5]


def test_unknown_keys_are_refused_with_the_known_ones(tmp_path, capsys):
    path = _config(tmp_path, stepz=3)
    with pytest.raises(EosslError, match=r"unknown key\(s\) \['stepz'\]; known keys: .*'steps'"):
        read_config(path)
    assert main(["pretrain", str(path)]) == 2
    assert "unknown key(s) ['stepz']" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # nothing started


def test_config_naming_missing_data_fails_before_training(tmp_path, capsys):
    for data, message in [([{"chips": str(tmp_path / "no_chips")}], "not a folder"),
                          ([{"scene": str(tmp_path / "no.tif")}], "no such file"),
                          ([{"sample": "no_such_sample"}], "no bundled sample 'no_such_sample'")]:
        assert main(["pretrain", str(_config(tmp_path, data=data))]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_config_without_data_or_unreadable(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("method: mae\n")
    with pytest.raises(EosslError, match="no 'data' entry"):
        read_config(path)
    path.write_text("data: [unclosed\n")
    with pytest.raises(EosslError, match="cannot read the config"):
        read_config(path)
    with pytest.raises(EosslError, match="cannot read the config"):
        read_config(tmp_path / "missing.yaml")


def test_data_entries(tmp_path):
    from eossl.datasets import sample_dir
    chips = load_data({"chips": str(sample_dir() / "eurosat_ms"), "max_per_class": 2})
    assert chips.sizes["sample"] == 20 and chips.attrs["sensor"] == "sentinel2_l1c"
    stack = load_data({"sample": "slovenia_s2"})  # a Dataset sample gives its image
    assert stack.dims == ("time", "band", "y", "x")
    scene = load_data({"scene": str(sample_dir() / "taizhou_change" / "taizhou_20000101_L7.tif")})
    assert scene.dims == ("band", "y", "x")
    files = sorted((sample_dir() / "slovenia_s2").glob("slovenia_date*.tif"))[:2]
    assert load_data({"stack": [str(f) for f in files]}).sizes["time"] == 2
    assert len(load_data([{"sample": "eurosat_ms"}, {"sample": "slovenia_s2"}])) == 2
    with pytest.raises(EosslError, match="exactly one of"):
        load_data({"sample": "eurosat_ms", "chips": "x"})


def test_methods_lists_every_method(capsys):
    assert main(["methods"]) == 0
    printed = capsys.readouterr().out
    for name in eossl.methods():
        assert name in printed


# ----------------------------------------------------------------------------- embed / evaluate

import json  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from eossl.cli import open_data, save_embeddings_any  # noqa: E402
from eossl.errors import DataError  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tiny_run):
    return tiny_run.checkpoint_path.parent.parent


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_embed_writes_what_eossl_embed_gives(model_dir, tiny_run, chips, tmp_path, capsys, suffix):
    out = tmp_path / f"emb{suffix}"
    assert main(["embed", str(model_dir), "eurosat_ms", "--out", str(out), "--batch-size", "50",
                 "--device", "cpu"]) == 0
    assert f"-> {out}" in capsys.readouterr().out
    got = eossl.open_embeddings(out)
    want = eossl.embed(tiny_run.model, chips)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-6)
    np.testing.assert_array_equal(got["label"].values, chips["label"].values)
    assert got.attrs["bands"] == want.attrs["bands"]
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary leftovers


def test_embed_a_scene_file_chunk_by_chunk_into_zarr(model_dir, tiny_run, tmp_path, capsys):
    from eossl.datasets import sample_dir
    scene = sorted((sample_dir() / "slovenia_s2").glob("slovenia_date*.tif"))[0]
    out = tmp_path / "scene.zarr"
    argv = ["embed", str(model_dir), str(scene), "--out", str(out), "--window", "32", "--chunk", "64"]
    assert main(argv) == 0
    emb = xr.open_zarr(out, decode_coords="all")["embedding"]
    opened = eossl.open_scene(scene)
    want = eossl.embed(tiny_run.model, opened, window=32)
    assert emb.dims == ("y", "x", "dim") and emb.rio.crs == opened.rio.crs
    np.testing.assert_allclose(emb.values, want.values, rtol=1e-4, atol=1e-5)
    assert main(argv) == 0  # finished store, same model and scene: resumes (nothing left to do)
    other = tmp_path / "other_run"
    eossl.pretrain(eossl.datasets.load_sample("eurosat_ms"), method="mae", steps=1, batch_size=4, encoder=dict(TINY_ENCODER),
                   decoder_dim=32, decoder_depth=1, out=other, seed=5, tensorboard=False)
    capsys.readouterr()
    assert main(["embed", str(other), str(scene), "--out", str(out), "--window", "32", "--chunk", "64"]) == 2
    assert "another model" in capsys.readouterr().err  # refused, nothing changed
    np.testing.assert_allclose(xr.open_zarr(out, decode_coords="all")["embedding"].values, want.values, rtol=1e-4, atol=1e-5)
    assert main(["embed", str(other), str(scene), "--out", str(out), "--window", "32", "--chunk", "64",
                 "--overwrite"]) == 0


def test_embed_with_a_foreign_checkpoint_and_its_options(tmp_path, chips):
    import timm
    import torch
    net = timm.create_model("resnet18", in_chans=4)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    out = tmp_path / "e.nc"
    assert main(["embed", str(tmp_path / "r18.pth"), "eurosat_ms", "--out", str(out), "--encoder", "resnet18",
                 "--bands", "B04,B03,B02,B08", "--normalisation", "ssl4eo"]) == 0
    emb = eossl.open_embeddings(out)
    assert emb.shape == (120, 512) and emb.attrs["bands"] == ["B04", "B03", "B02", "B08"]


def test_a_failed_write_leaves_the_previous_output_whole(model_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "emb.zarr"
    assert main(["embed", str(model_dir), "eurosat_ms", "--out", str(out)]) == 0
    before = eossl.open_embeddings(out).values

    def broken(self, store, **kwargs):  # writes part of a store, then fails (disk full, kill)
        os.makedirs(store, exist_ok=True)
        (Path(store) / ".zgroup").write_text("{}")
        raise OSError("No space left on device")

    monkeypatch.setattr(xr.Dataset, "to_zarr", broken)
    with pytest.raises(OSError, match="No space"):
        main(["embed", str(model_dir), "eurosat_ms", "--out", str(out)])
    np.testing.assert_array_equal(eossl.open_embeddings(out).values, before)
    assert [p.name for p in tmp_path.iterdir()] == ["emb.zarr"]


def test_evaluate_embeddings_with_chip_labels_or_a_csv(model_dir, tmp_path, capsys, chips):
    emb_path = tmp_path / "emb.nc"
    assert main(["embed", str(model_dir), "eurosat_ms", "--out", str(emb_path)]) == 0
    capsys.readouterr()
    table_path = tmp_path / "table.csv"
    assert main(["evaluate", str(emb_path), "eurosat_ms", "--shots", "1", "5", "--repeats", "3",
                 "--out", str(table_path)]) == 0
    printed = capsys.readouterr().out
    assert "kNN" in printed and "logistic" in printed and "120 samples, 10 classes" in printed
    table = pd.read_csv(table_path)
    assert sorted(set(table["shots"])) == [1, 5] and set(table["probe"]) == {"kNN", "logistic"}
    expected = eossl.probe(eossl.open_embeddings(emb_path), chips["label"].values, shots=[1, 5], repeats=3)
    np.testing.assert_allclose(table["accuracy"], expected["accuracy"])
    # labels from a CSV, matched by file name (rows shuffled)
    labels = pd.DataFrame({"file": chips["file"].values, "label": chips["label"].values}).sample(frac=1, random_state=0)
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert main(["evaluate", str(emb_path), str(tmp_path / "labels.csv"), "--shots", "1", "5", "--repeats", "3",
                 "--out", str(tmp_path / "t2.csv")]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t2.csv"), table)


def test_evaluate_a_model_directly(model_dir, capsys):
    assert main(["evaluate", str(model_dir), "eurosat_ms", "--shots", "2", "--repeats", "2"]) == 0
    assert "logistic" in capsys.readouterr().out


def test_evaluate_and_embed_errors_name_the_problem(model_dir, tmp_path, capsys):
    cases = [
        (["embed", str(tmp_path / "none.pth"), "eurosat_ms", "--out", str(tmp_path / "e.nc")], "no such file"),
        (["embed", str(model_dir), str(tmp_path / "nothing"), "--out", str(tmp_path / "e.nc")],
         "no such file or folder (nor a bundled sample"),
        (["embed", str(model_dir), "eurosat_ms", "--out", str(tmp_path / "e.tif")], "give a .nc or .zarr"),
        (["evaluate", str(tmp_path / "none.nc"), "eurosat_ms"], "no such embeddings file"),
        (["evaluate", str(model_dir), "eurosat_ms", "--shots", "50"], "use fewer shots"),
        (["evaluate", str(model_dir), "slovenia_s2"], "needs labelled chips"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err, argv
    emb = tmp_path / "emb.nc"
    main(["embed", str(model_dir), "eurosat_ms", "--out", str(emb)])
    (tmp_path / "bad.csv").write_text("name,class\na,b\n")
    assert main(["evaluate", str(emb), str(tmp_path / "bad.csv")]) == 2
    assert "needs a 'label' column" in capsys.readouterr().err
    assert not (tmp_path / "e.nc").exists()


def test_open_data_kinds(tmp_path):
    from eossl.datasets import sample_dir
    assert open_data("sample:eurosat_ms").dims == ("sample", "band", "y", "x")
    assert open_data(str(sample_dir() / "eurosat_ms")).sizes["sample"] == 120
    with pytest.raises(DataError, match="no such file"):
        open_data(str(tmp_path / "x.tif"))


def test_save_embeddings_any_refuses_other_suffixes(tmp_path, tiny_run, chips):
    emb = eossl.embed(tiny_run.model, chips.isel(sample=[0, 1]))
    with pytest.raises(EosslError, match=".nc or .zarr"):
        save_embeddings_any(emb, tmp_path / "e.csv")
    path = save_embeddings_any(emb, tmp_path / "e.zarr")
    assert json.loads((path / ".zmetadata").read_text())  # a consolidated zarr (format 2) store


def test_pretrain_minutes_on_the_command_line_replaces_the_steps(tmp_path):
    path = _config(tmp_path)  # the config says steps: 4
    assert main(["pretrain", str(path), "--minutes", "0.02"]) == 0
    card = eossl.load_model(tmp_path / "run").card
    assert card["config"]["minutes"] == 0.02 and card["config"]["steps"] is None
    assert 1.2 <= card["train_seconds"]
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["minutes"] == 0.02 and saved["steps"] is None
    with pytest.raises(SystemExit):  # both at once: argparse refuses
        main(["pretrain", str(path), "--minutes", "1", "--steps", "2"])
