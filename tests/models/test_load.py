"""eossl.load_model: a checkpoint back into the same model, or a clear CheckpointError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import eossl
from eossl.errors import CheckpointError
from eossl.checkpoint import save_checkpoint


@pytest.fixture(scope="module")
def loaded(tiny_run):
    return eossl.load_model(tiny_run.checkpoint_path.parent.parent)


def test_load_model_gives_identical_weights_and_embeddings(tiny_run, loaded, chips):
    assert type(loaded) is type(tiny_run.model)
    assert not loaded.training
    ref = tiny_run.model.state_dict()
    got = loaded.state_dict()
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.equal(ref[k], got[k]), k
    few = chips.isel(sample=slice(0, 20))
    a = eossl.embed(tiny_run.model, few)
    b = eossl.embed(loaded, few)
    np.testing.assert_array_equal(a.values, b.values)


def test_load_model_attaches_the_card(tiny_run, loaded):
    card = loaded.card
    assert card == json.loads(json.dumps(tiny_run.model.card))
    assert card["method"] == "mae"
    assert [b["name"] for b in card["bands"]] == list(eossl.data.bands.EUROSAT_MS_BANDS)
    assert card["step"] == 6
    assert card["encoder"]["embed_dim"] == loaded.encoder.dim == 48


@pytest.mark.parametrize("where", ["run", "folder", "file"])
def test_load_model_accepts_run_folder_checkpoint_folder_and_file(tiny_run, where):
    file = tiny_run.checkpoint_path
    path = {"run": file.parent.parent, "folder": file.parent, "file": file}[where]
    model = eossl.load_model(str(path))
    assert model.card["step"] == 6


@pytest.mark.parametrize("change", [{"depth": 2}, {"embed_dim": 64}, {"patch_size": 16}])
def test_weights_for_another_architecture_raise_checkpoint_error(tiny_run, tmp_path, change):
    card = {**tiny_run.model.card, "encoder": {**tiny_run.model.card["encoder"], **change}}
    save_checkpoint(tmp_path, tiny_run.model, card)
    with pytest.raises(CheckpointError, match="do not fit") as info:
        eossl.load_model(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_card_that_cannot_be_built_raises_checkpoint_error(tiny_run, tmp_path):
    card = {**tiny_run.model.card, "method": "no_such_method"}
    save_checkpoint(tmp_path, tiny_run.model, card)
    with pytest.raises(CheckpointError, match="cannot build"):
        eossl.load_model(tmp_path)


def test_missing_checkpoint_raises_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no eossl checkpoint"):
        eossl.load_model(tmp_path)


# ----------------------------------------------------------------------------- community checkpoints
# The files are written here in the layouts the published weights use (random weights, real key
# names and shapes): torchgeo's SENTINEL2_ALL_* (timm state dicts), the original SSL4EO-S12 MoCo /
# MoCo v3 / DINO / MAE checkpoints, and plain timm checkpoints.

import argparse  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import warnings  # noqa: E402

import timm  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from eossl.models.backbones import ALIASES  # noqa: E402
from eossl.models.load import SSL4EO_S2_BANDS, PretrainedModel  # noqa: E402


@pytest.fixture(scope="module")
def rn50():
    """A timm ResNet-50 with 13 input bands and a classifier, as torchgeo's files hold it."""
    torch.manual_seed(0)
    return timm.create_model("resnet50", in_chans=13, num_classes=10).eval()


@pytest.fixture(scope="module")
def vits():
    torch.manual_seed(1)
    return timm.create_model("vit_small_patch16_224", in_chans=13, num_classes=0).eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory, rn50, vits):
    d = tmp_path_factory.mktemp("community")
    sd = rn50.state_dict()
    torch.save(sd, d / "resnet50_sentinel2_all_moco.pth")  # torchgeo: timm keys, fc included
    moco = {f"module.encoder_q.{k}": v for k, v in sd.items() if not k.startswith("fc.")}
    moco.update({"module.encoder_q.fc.0.weight": torch.randn(2048, 2048), "module.encoder_q.fc.0.bias":
                 torch.randn(2048), "module.encoder_q.fc.2.weight": torch.randn(128, 2048),
                 "module.queue": torch.randn(128, 64), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    moco.update({f"module.encoder_k.{k}": v.clone() for k, v in list(sd.items())[:10]})
    torch.save({"epoch": 99, "arch": "resnet50", "state_dict": moco, "optimizer": {"state": {}}},
               d / "B13_rn50_moco_0099_ckpt.pth")
    vsd = vits.state_dict()
    dino = {f"module.backbone.{k}": v for k, v in vsd.items()}
    dino["module.head.mlp.0.weight"] = torch.randn(2048, 384)
    torch.save({"student": {k: v.clone() for k, v in dino.items()}, "teacher": dino, "epoch": 100,
                "args": argparse.Namespace(arch="vit_small", patch_size=16)}, d / "B13_vits16_dino_0099_ckpt.pth")
    v3 = {f"module.base_encoder.{k}": v.contiguous() for k, v in vsd.items()}
    v3["module.base_encoder.head.0.weight"] = torch.randn(4096, 384)
    v3["module.predictor.0.weight"] = torch.randn(4096, 256)
    save_file(v3, str(d / "vits16_moco_v3.safetensors"))
    return d


def _direct(model, chips_13):
    """Pooled features straight from a timm model on SSL4EO-normalised (DN / 10000) chips."""
    x = torch.from_numpy(chips_13.sel(band=SSL4EO_S2_BANDS).values.astype("float32") / 10000.0)
    with torch.no_grad():
        fm = model.forward_features(x)  # (B, D, h, w) for ResNets, (B, 1 + L, D) for ViTs
    return (fm.mean(dim=(2, 3)) if fm.ndim == 4 else fm[:, 1:].mean(dim=1)).numpy()


def test_torchgeo_resnet50_state_dict_loads_with_the_ssl4eo_card(files, rn50, chips):
    model = eossl.load_model(files / "resnet50_sentinel2_all_moco.pth")
    assert isinstance(model, PretrainedModel) and not model.training
    for k, v in model.encoder.model.state_dict().items():
        assert torch.equal(v, rn50.state_dict()[k]), k
    card = model.card
    assert card["encoder"]["name"] == "resnet50" and card["encoder"]["in_chans"] == 13
    assert [b["name"] for b in card["bands"]] == SSL4EO_S2_BANDS
    assert SSL4EO_S2_BANDS[7:10] == ["B08", "B8A", "B09"]  # B8A after B08, unlike EuroSAT files
    assert card["units"] == "DN" and card["sensor"] == "sentinel2_l1c" and card["dn_scale"] == 1e-4
    assert card["normalization"]["mean"] == [0.0] * 13 and card["normalization"]["std"] == [10000.0] * 13
    assert card["source"]["assumed"] == ["bands", "normalization"]
    assert card["embedding_dim"] == 2048
    # EuroSAT chips (B8A last) are reordered by name and divided by 10000, as torchgeo does
    few = chips.isel(sample=[0, 40, 100])
    emb = eossl.embed(model, few)
    assert emb.shape == (3, 2048)
    np.testing.assert_allclose(emb.values, _direct(rn50, few), rtol=1e-4, atol=1e-5)


def test_original_ssl4eo_moco_checkpoint_gives_the_same_encoder(files, rn50):
    model = eossl.load_model(files / "B13_rn50_moco_0099_ckpt.pth")
    assert model.card["method"] == "moco"
    for k, v in model.encoder.model.state_dict().items():
        assert torch.equal(v, rn50.state_dict()[k]), k


def test_dino_teacher_vit_small_loads_and_embeds_any_window(files, vits, chips):
    model = eossl.load_model(files / "B13_vits16_dino_0099_ckpt.pth")  # holds an argparse.Namespace
    assert model.card["method"] == "dino"
    spec = model.card["encoder"]
    assert ALIASES.get(spec["name"], spec["name"]) == "vit_small_patch16_224"  # args.arch: "vit_small"
    assert (spec["patch_size"], spec["img_size"], spec["in_chans"]) == (16, 224, 13)
    for k, v in model.encoder.model.state_dict().items():
        assert torch.equal(v, vits.state_dict()[k]), k
    few = chips.isel(sample=[3, 77])
    emb = eossl.embed(model, few)  # 64 px chips on a 224 px model: position embeddings resampled
    assert emb.shape == (2, 384) and np.isfinite(emb.values).all()
    scene = eossl.embed(model, chips.isel(sample=3))
    assert scene.shape == (4, 4, 384)


def test_moco_v3_vit_in_a_foreign_safetensors_file(files, vits):
    model = eossl.load_model(files / "vits16_moco_v3.safetensors")
    assert model.card["method"] == "moco_v3" and model.card["source"]["format"] == "safetensors"
    assert torch.equal(model.encoder.model.pos_embed, vits.pos_embed)


def test_mae_checkpoint_of_a_non_standard_vit_is_read_from_its_shapes(tmp_path):
    vit = timm.create_model("vit_small_patch16_224", in_chans=4, img_size=32, patch_size=8, embed_dim=64,
                            depth=2, num_heads=1, mlp_ratio=2.0, num_classes=0)
    state = dict(vit.state_dict())
    state.update({"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.randn(32, 64),
                  "decoder_blocks.0.norm1.weight": torch.ones(32), "decoder_pred.weight": torch.randn(4 * 64, 32)})
    torch.save({"model": state, "epoch": 3}, tmp_path / "mae.pth")
    model = eossl.load_model(tmp_path / "mae.pth", bands=["B02", "B03", "B04", "B08"],
                             normalization={"mean": 0.0, "std": 1.0, "scale": 1e-4})
    spec = model.card["encoder"]
    assert model.card["method"] == "mae"
    assert (spec["embed_dim"], spec["depth"], spec["patch_size"], spec["img_size"], spec["mlp_ratio"]) == \
        (64, 2, 8, 32, 2.0)
    assert spec["num_heads"] == 1  # the weights do not say; timm's 64-wide heads
    # scale folded into the statistics: (x * 1e-4 - 0) / 1 == (x - 0) / 1e4
    assert model.card["normalization"]["std"] == [10000.0] * 4
    assert model.card["sensor"] == "sentinel2_l2a"  # S2 names without B10


def test_plain_timm_checkpoint_with_config_json(tmp_path, chips):
    net = timm.create_model("resnet18", in_chans=4, num_classes=5)
    folder = tmp_path / "timm_resnet18"
    folder.mkdir()
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps({
        "architecture": "resnet18", "num_classes": 5,
        "pretrained_cfg": {"mean": [1000, 900, 800, 2500], "std": [500, 500, 600, 900], "input_size": [4, 224, 224]}}))
    with pytest.raises(CheckpointError, match=r"pass bands=\[...\] with 4 names"):
        eossl.load_model(folder)
    model = eossl.load_model(folder, bands=["B04", "B03", "B02", "B08"])
    assert model.card["encoder"]["name"] == "resnet18"
    assert model.card["normalization"]["mean"] == [1000, 900, 800, 2500]
    assert model.card["units"] is None
    emb = eossl.embed(model, chips.isel(sample=[0, 1]))
    assert emb.shape == (2, 512)
    # a timm training checkpoint: {"arch", "state_dict"}, encoder named by the file
    torch.save({"arch": "resnet18", "state_dict": net.state_dict(), "epoch": 1}, tmp_path / "train.pth.tar")
    model = eossl.load_model(tmp_path / "train.pth.tar", bands=["B04", "B03", "B02", "B08"],
                             normalization=eossl.band_stats(chips))
    assert model.card["encoder"]["name"] == "resnet18"
    stats = eossl.band_stats(chips).sel(band=["B04", "B03", "B02", "B08"])
    np.testing.assert_allclose(model.card["normalization"]["mean"], stats["mean"].values)


def test_caller_can_name_architecture_bands_and_normalisation(files, rn50):
    order = list(reversed(SSL4EO_S2_BANDS))
    model = eossl.load_model(files / "resnet50_sentinel2_all_moco.pth", encoder="resnet50", bands=order,
                             normalisation="ssl4eo", units="DN", on_mismatch="error")
    assert [b["name"] for b in model.card["bands"]] == order
    assert model.card["on_mismatch"] == "error" and model.card["source"]["assumed"] == []
    with pytest.raises(CheckpointError, match="13 bands but 3 band names"):
        eossl.load_model(files / "resnet50_sentinel2_all_moco.pth", bands=["B02", "B03", "B04"])
    with pytest.raises(CheckpointError, match="units="):
        eossl.load_model(files / "resnet50_sentinel2_all_moco.pth", units="kelvin")
    with pytest.raises(CheckpointError, match="normalisation="):
        eossl.load_model(files / "resnet50_sentinel2_all_moco.pth", normalisation="imagenet")


class _RunsCode:
    """A pickle payload that would create a file if it were ever unpickled with code execution."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_that_runs_code_is_refused_and_never_run(tmp_path, writer):
    target = tmp_path / "pwned"
    path = tmp_path / "weights.pth"
    payload = {"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": _RunsCode(target)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))  # GLOBAL opcodes, as torch writes
    with pytest.raises(CheckpointError, match="refused.*run code") as info:
        eossl.load_model(path)
    if writer == "torch.save":  # the zip format names the global it refused
        assert "posix.system" in str(info.value) or "os.system" in str(info.value)
    assert not target.exists()


def test_truncated_files_are_reported_as_damaged(files, tmp_path):
    for name in ("resnet50_sentinel2_all_moco.pth", "vits16_moco_v3.safetensors"):
        data = (files / name).read_bytes()
        cut = tmp_path / name
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(CheckpointError, match="damaged or truncated.*again"):
            eossl.load_model(cut)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="damaged"):
        eossl.load_model(garbage)


def test_weights_of_another_architecture_are_counted_and_named(files, tmp_path):
    net = timm.create_model("resnet18", in_chans=13)
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    with pytest.raises(CheckpointError, match=r"do not fit a resnet50 encoder \(\d+ of \d+ match; \d+ weights "
                       r"missing \(e.g. \['layer1.0.conv3.weight'.*with other shapes.*Pass encoder="):
        eossl.load_model(tmp_path / "r18.pth", encoder="resnet50")
    with pytest.raises(CheckpointError, match=r"\(0 of \d+ match; \d+ weights missing .*; 15\d unexpected \(e.g. "
                       r"\['cls_token'"):
        eossl.load_model(files / "B13_vits16_dino_0099_ckpt.pth", encoder="resnet50")
    with pytest.raises(CheckpointError, match=r"other shapes \(e.g. conv1.weight: file \(64, 13, 7, 7\) vs "
                       r"model \(64, 4, 7, 7\)\)"):
        eossl.load_model(files / "resnet50_sentinel2_all_moco.pth", encoder={"name": "resnet50", "in_chans": 4},
                         bands=["B02", "B03", "B04", "B08"], normalization="ssl4eo")
    save_file({"weird.weight": torch.zeros(3, 3)}, str(tmp_path / "weird.safetensors"))
    with pytest.raises(CheckpointError, match="cannot tell the architecture.*encoder='resnet50'"):
        eossl.load_model(tmp_path / "weird.safetensors")


def test_foreign_arguments_are_refused_for_eossl_checkpoints(tiny_run, tmp_path):
    with pytest.raises(CheckpointError, match="already records.*drop \\['bands'\\]"):
        eossl.load_model(tiny_run.checkpoint_path, bands=["B01"])
    model = eossl.load_model(tiny_run.checkpoint_path, on_mismatch="error")
    assert model.card["on_mismatch"] == "error"
    (tmp_path / "x.onnx").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unknown checkpoint type"):
        eossl.load_model(tmp_path / "x.onnx")
    with pytest.raises(CheckpointError, match="no such file"):
        eossl.load_model(tmp_path / "nope.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert eossl.load_model(tiny_run.checkpoint_path).card["units"] == "DN"
