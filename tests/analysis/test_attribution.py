"""eossl.band_importance: occlusion, gradient x input and band-group attention, per scene/patch/class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import TINY_ENCODER

import eossl
from eossl.analysis.attribution import _explicit_attention
from eossl.analysis.probe import scene_labels
from eossl.errors import DataError


@pytest.fixture(scope="module")
def models(chips, tmp_path_factory):
    """Untrained tiny models (random weights are enough to test the attribution arithmetic)."""
    out = tmp_path_factory.mktemp("attribution")
    vit = eossl.pretrain(chips, method="mae", steps=0, img_size=32, encoder=dict(TINY_ENCODER), out=out / "vit")
    spectral = eossl.pretrain(chips, method="spectral_mae", steps=0, img_size=32, encoder=dict(TINY_ENCODER),
                              out=out / "spectral")
    return vit.model, spectral.model


@pytest.fixture(scope="module")
def few(chips):
    return chips.isel(sample=slice(0, 120, 12))  # one chip of each of the 10 classes


def _blind(model, k):
    """A copy of ``model`` whose first layer ignores input band ``k``."""
    import copy
    blind = copy.deepcopy(model)
    enc = blind.encoder
    with torch.no_grad():
        if hasattr(enc, "band_groups"):
            for g, group in enumerate(enc.band_groups):
                if k in group:
                    enc.group_patch_embeds[g].weight[:, group.index(k)] = 0.0
        else:
            enc.model.patch_embed.proj.weight[:, k] = 0.0
    return blind


@pytest.mark.parametrize("method", ["occlusion", "gradient"])
@pytest.mark.parametrize("which", [0, 1])
def test_a_band_the_first_layer_ignores_gets_no_importance(models, few, method, which):
    model = models[which]
    k = 5  # B06 in the EuroSAT order
    imp = eossl.band_importance(_blind(model, k), few, method=method)
    assert imp.sel(band="B06").item() < 1e-5
    others = imp.drop_sel(band="B06")
    assert (others > 1e-3).all(), imp.values  # every band the model sees moves the embedding
    full = eossl.band_importance(model, few, method=method)
    assert full.sel(band="B06").item() > 1e-3  # the unmodified model does rely on it


def test_gradient_is_the_first_order_occlusion(models, few):
    """For a small change of one band, |J v| / |e| matches the finite embedding change."""
    model = models[0]
    from eossl.analysis.attribution import _gradient
    from eossl.card import model_input
    x = torch.from_numpy(model_input(model, few))
    enc = model.encoder.eval()
    grad = _gradient(enc, x, pooled=True)  # (B, C)
    eps = 1e-3
    with torch.no_grad(), _explicit_attention(enc):
        ref = enc(x)
        for c in (0, 7):
            scaled = x.clone()
            scaled[:, c] *= 1 - eps  # move band c a little towards its mean
            finite = (ref - enc(scaled)).norm(dim=1) / ref.norm(dim=1) / eps
            np.testing.assert_allclose(grad[:, c].numpy(), finite.numpy(), rtol=0.05, atol=1e-4)


def test_output_format_for_chips(models, few, chips):
    model = models[0]
    scene = eossl.band_importance(model, few, method="occlusion", per="scene")
    assert scene.name == "importance" and scene.dims == ("band",)
    assert scene["band"].values.tolist() == chips["band"].values.tolist()
    np.testing.assert_allclose(scene["wavelength"].values, chips["wavelength"].values)
    assert scene.attrs["method"] == "occlusion" and scene.attrs["per"] == "scene"
    patch = eossl.band_importance(model, few, per="patch")
    assert patch.dims == ("sample", "band") and patch.shape == (10, 13)
    assert patch["label"].values.tolist() == few["label"].values.tolist()
    np.testing.assert_allclose(patch.mean("sample").values, scene.values, rtol=1e-5)
    per_class = eossl.band_importance(model, few, per="class")
    assert per_class.dims == ("class", "band") and per_class.shape == (10, 13)
    assert per_class["count"].values.tolist() == [1] * 10
    row = per_class.sel({"class": "Forest"}).values
    np.testing.assert_allclose(row, patch.values[few["label"].values == "Forest"][0], rtol=1e-6)


def test_per_class_with_given_labels_averages_their_chips(models, few):
    labels = np.array(["a", "b"] * 5)
    patch = eossl.band_importance(models[0], few, per="patch")
    out = eossl.band_importance(models[0], few, per="class", labels=labels)
    assert out["class"].values.tolist() == ["a", "b"] and out["count"].values.tolist() == [5, 5]
    np.testing.assert_allclose(out.sel({"class": "a"}).values, patch.values[labels == "a"].mean(axis=0), rtol=1e-5)


def test_scene_per_patch_is_on_the_embedding_grid_with_crs(models, slovenia):
    model = models[0]
    scene = slovenia["image"].isel(time=3)
    emb = eossl.embed(model, scene)
    imp = eossl.band_importance(model, scene, method="gradient", per="patch")
    assert imp.dims == ("band", "y", "x") and imp.shape == (13, emb.sizes["y"], emb.sizes["x"])
    np.testing.assert_allclose(imp["x"].values, emb["x"].values)
    np.testing.assert_allclose(imp["y"].values, emb["y"].values)
    assert imp.rio.crs == scene.rio.crs and np.isfinite(imp.values).all()
    assert imp["band"].values.tolist() == [b["name"] for b in model.card["bands"]]  # the model's order
    labels = scene_labels(slovenia["lulc"], emb)
    per_class = eossl.band_importance(model, scene, method="gradient", per="class", labels=labels)
    assert "forest" in per_class["class"].values and "" not in per_class["class"].values
    forest = labels.values == "forest"
    np.testing.assert_allclose(per_class.sel({"class": "forest"}).values,
                               imp.values[:, forest].mean(axis=1), rtol=1e-5)


def test_scene_nodata_patches_get_nan(models, slovenia):
    scene = slovenia["image"].isel(time=3).astype("float32").copy()
    scene[:, :8, :8] = np.nan  # the first patch of the grid
    imp = eossl.band_importance(models[0], scene, per="patch")
    assert np.isnan(imp.values[:, 0, 0]).all() and np.isfinite(imp.values[:, 1:, 1:]).all()
    whole = eossl.band_importance(models[0], scene, per="scene")
    assert np.isfinite(whole.values).all()


def test_attention_shares_per_group(models, few):
    model = models[1]
    imp = eossl.band_importance(model, few, method="attention", per="patch")
    groups = model.encoder.band_groups
    assert imp.dims == ("sample", "band") and "group" in imp.coords
    names = imp["band"].values.tolist()
    shares = np.stack([imp.values[:, names.index(imp["band"].values[g[0]])] for g in groups], axis=1)
    np.testing.assert_allclose(shares.sum(axis=1), 1.0, rtol=1e-5)  # one share per group, summing to 1
    for g, group in enumerate(groups):
        assert (imp["group"].values[group] == g).all()
        np.testing.assert_allclose(imp.values[:, group], imp.values[:, [group[0]]].repeat(len(group), 1))
    assert imp.attrs["band_groups"] == [[names[i] for i in g] for g in groups]


def test_attention_leaves_a_band_in_no_group_at_zero(chips, tmp_path):
    groups = [[1, 2, 3, 7], [4, 5, 6, 12], [10, 11]]  # B01, B09, B10 in no group (SatMAE drops them)
    run = eossl.pretrain(chips, method="spectral_mae", steps=0, img_size=32, encoder=dict(TINY_ENCODER),
                         band_groups=groups, out=tmp_path / "m")
    imp = eossl.band_importance(run.model, chips.isel(sample=[0, 50]), method="attention")
    for band in ("B01", "B09", "B10"):
        assert imp.sel(band=band).item() == 0 and imp["group"].sel(band=band).item() == -1
    assert imp.sel(band="B02").item() > 0


def test_attention_hook_reads_the_real_softmax(models, few):
    """The shares come from the weights timm computes: the encoder's output is unchanged by the
    switch to explicit attention, and the weights read are row-stochastic."""
    from eossl.card import model_input
    enc = models[1].encoder.eval()
    x = torch.from_numpy(model_input(models[1], few[:2]))
    before = [m.fused_attn for m in enc.modules() if hasattr(m, "fused_attn")]
    with torch.no_grad():
        fused = enc.feature_map(x)
        seen = []
        with _explicit_attention(enc) as layers:
            hooks = [m.attn_drop.register_forward_hook(lambda mod, i, o: seen.append(o)) for m in layers]
            explicit = enc.feature_map(x)
            for h in hooks:
                h.remove()
    torch.testing.assert_close(fused, explicit, rtol=1e-4, atol=1e-5)
    assert len(seen) == len(enc.model.blocks)
    torch.testing.assert_close(seen[0].sum(-1), torch.ones_like(seen[0].sum(-1)))
    assert [m.fused_attn for m in layers] == before  # the switch is undone


def test_attention_on_a_plain_model_is_a_clear_error(models, few):
    with pytest.raises(DataError, match="band-group models"):
        eossl.band_importance(models[0], few, method="attention")


def test_reflectance_given_to_a_dn_model_is_converted_with_one_honest_warning(models, few):
    """The model card says DN; chips in reflectance are converted (as eossl.embed does), with the
    conversion warning only, not also the "values do not look like the training data" one."""
    import warnings
    model = models[0]
    reference = eossl.band_importance(model, few, method="occlusion")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = eossl.band_importance(model, few.astype("float32") / 10000.0, method="occlusion")
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert any("converting reflectance to DN" in m for m in messages), messages
    assert not any("do not look like" in m for m in messages), messages
    np.testing.assert_allclose(converted.values, reference.values, rtol=1e-2, atol=1e-3)


def test_bad_arguments_are_data_errors(models, few, slovenia):
    model = models[0]
    with pytest.raises(DataError, match="method must be one of"):
        eossl.band_importance(model, few, method="shap")
    with pytest.raises(DataError, match="per must be one of"):
        eossl.band_importance(model, few, per="pixel")
    with pytest.raises(DataError, match="pick one date"):
        eossl.band_importance(model, slovenia["image"])
    with pytest.raises(DataError, match="3 labels for 10 chips"):
        eossl.band_importance(model, few, per="class", labels=["a", "b", "c"])
    with pytest.raises(DataError, match="scene_labels"):
        eossl.band_importance(model, slovenia["image"].isel(time=0), per="class")
    with pytest.raises(eossl.CheckpointError, match="missing"):
        eossl.band_importance(model, few.isel(band=slice(0, 5)))
