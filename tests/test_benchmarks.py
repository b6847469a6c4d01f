"""The benchmark scripts run and print their tables (timings are not checked, only that they work)."""

from __future__ import annotations

import os
import subprocess
import sys

from _tiny import REPO


def _run(*args):
    out = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "EOSSL_PROGRESS": "0"})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_bench_pretrain_prints_its_table():
    text = _run("benchmarks/bench_pretrain.py", "--steps", "2", "--configs",
                "default: ViT-tiny/8, 6 blocks, 64 px")
    assert "| config | batch | device | images/s | peak memory (MiB) | params (M) |" in text
    row = [line for line in text.splitlines() if line.startswith("| default")][0]
    images_per_s = float(row.split("|")[4])
    assert images_per_s > 0


def test_bench_pretrain_times_eossl_mae_against_the_plain_reference():
    text = _run("benchmarks/bench_pretrain.py", "--vs-reference", "--rounds", "2", "--ref-batch", "4")
    assert "| model | ms / step | images/s | speed vs reference | rounds faster |" in text
    for ours_name, ref_name in (("| eossl MAE", "| plain timm MAE"), ("| eossl spectral MAE", "| plain SatMAE")):
        ours = [line for line in text.splitlines() if line.startswith(ours_name)][0]
        ref = [line for line in text.splitlines() if line.startswith(ref_name)][0]
        assert float(ours.split("|")[2]) > 0 and ref.split("|")[4].strip() == "1.00x"


def _copy_transformer(ref, vit):
    """eossl's timm ViT class token, blocks and final norm into a reference model."""
    ref.cls_token.data.copy_(vit.cls_token.data)
    for mine, theirs in zip(ref.blocks, vit.blocks):
        mine.load_state_dict(theirs.state_dict())
    ref.norm.load_state_dict(vit.norm.state_dict())


def test_plain_reference_mae_loss_matches_eossl_mae_on_the_same_weights_and_mask():
    """The yardstick computes the same thing: with eossl's weights copied in and the same random
    mask, the reference's loss equals eossl's MAE loss."""
    import sys
    import torch
    sys.path.insert(0, "benchmarks")
    from bench_pretrain import plain_mae
    from eossl.models.registry import build_method
    torch.manual_seed(0)
    spec = dict(name="vit_tiny", in_chans=4, img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=2)
    ours = build_method("mae", spec, dict(decoder_dim=16, decoder_depth=1, decoder_heads=2)).eval()
    ref = plain_mae(in_chans=4, img_size=16, patch=4, dim=32, depth=2, heads=2, dec_dim=16, dec_depth=1,
                    dec_heads=2).eval()
    vit = ours.encoder.model
    ref.patch_embed.load_state_dict(vit.patch_embed.state_dict())
    _copy_transformer(ref, vit)
    ref.pos_embed.copy_(vit.pos_embed.data)
    for name in ("decoder_embed", "decoder_norm", "decoder_pred"):
        getattr(ref, name).load_state_dict(getattr(ours, name).state_dict())
    ref.mask_token.data.copy_(ours.mask_token.data)
    ref.decoder_blocks[0].load_state_dict(ours.decoder_blocks[0].state_dict())
    imgs = torch.randn(3, 4, 16, 16)
    with torch.no_grad():
        torch.manual_seed(5)
        a = ours(imgs)[0]
        torch.manual_seed(5)
        b = ref(imgs)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_plain_reference_spectral_mae_loss_matches_eossl_spectral_mae():
    """The spectral yardstick computes the same thing as models/spectral.py: with eossl's weights
    copied in and the same random mask, the two losses are equal."""
    import sys
    import torch
    sys.path.insert(0, "benchmarks")
    from bench_pretrain import plain_spectral_mae
    from eossl.models.registry import build_method
    torch.manual_seed(0)
    groups = [[0, 2], [1, 3, 4]]
    spec = dict(name="vit_tiny", in_chans=5, img_size=16, patch_size=4, depth=2, embed_dim=32, num_heads=2)
    ours = build_method("spectral_mae", spec, dict(band_groups=groups, decoder_dim=16, decoder_depth=1,
                                                   decoder_heads=2)).eval()
    ref = plain_spectral_mae(groups, img_size=16, patch=4, dim=32, depth=2, heads=2, dec_dim=16, dec_depth=1,
                             dec_heads=2).eval()
    enc, vit = ours.encoder, ours.encoder.model
    for mine, theirs in zip(ref.patch_embed, enc.group_patch_embeds):
        mine.proj.load_state_dict(theirs.state_dict())
    ref.channel_embed.data.copy_(enc.group_pos_embed.data[None])
    _copy_transformer(ref, vit)
    for name in ("decoder_embed", "decoder_norm", "decoder_blocks"):
        getattr(ref, name).load_state_dict(getattr(ours, name).state_dict())
    ref.mask_token.data.copy_(ours.mask_token.data)
    ref.decoder_channel_embed.data.copy_(ours.decoder_group_pos_embed.data[None])
    ref.decoder_pred.load_state_dict(ours.decoder_preds.state_dict())
    imgs = torch.randn(3, 5, 16, 16)
    with torch.no_grad():
        torch.manual_seed(5)
        a = ours.training_step(imgs)[0]
        torch.manual_seed(5)
        b = ref(imgs)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_bench_embed_prints_its_table():
    text = _run("benchmarks/bench_embed.py", "--rounds", "1", "--sizes", "2")
    assert ("| input | eossl (img/s) | bare forward (img/s) | overhead % | outside the encoder % "
            "| numpy peak (MiB) |") in text
    assert "embed: 480 chips" in text and "embed: scene 13 x 202 x 200" in text
    assert "embed_to_zarr, 512 px chunks: scene 13 x 202 x 200" in text


def test_bench_methods_prints_probes_next_to_both_floors():
    text = _run("benchmarks/bench_methods.py", "--seconds", "1", "--methods", "mae", "--repeats", "1",
                "--img-size", "32", "--no-shared")
    assert "| method | encoder | steps | seconds | kNN@1 | logistic@1 | kNN@5 |" in text
    for row in ("| raw band mean/std (no learning) |", "| mae | vit_tiny |", "| mae: random weights |"):
        assert row in text


def test_bench_methods_takes_an_encoder_for_every_method():
    text = _run("benchmarks/bench_methods.py", "--seconds", "1", "--methods", "relative_position", "--repeats", "1",
                "--img-size", "32", "--no-shared", "--encoder",
                '{"name": "vit_tiny", "patch_size": 4, "depth": 1, "embed_dim": 48, "num_heads": 2}')
    assert "| relative_position | vit_tiny/4, depth 1 |" in text
    assert "| relative_position: random weights | vit_tiny/4, depth 1 |" in text


def test_bench_gpu_runs_on_cpu_as_a_smoke_test():
    text = _run("benchmarks/bench_gpu.py", "--batch", "2", "--steps", "1", "--img-size", "32",
                "--encoder", "vit_tiny")
    assert "| model | batch | compile | device | images/s | GFLOP/step | MFU % |" in text
    row = [line for line in text.splitlines() if line.startswith("| MAE vit_tiny/16")][0]
    assert float(row.split("|")[6]) > 0  # FLOPs were counted


def test_bench_change_prints_cva_next_to_embedding_scores():
    text = _run("benchmarks/bench_change.py", "--quick")
    assert "| pair | patch px | patches (changed) | CVA AUC | CVA F1 | random AUC | random F1 | MAE AUC |" in text
    row = [line for line in text.splitlines() if line.startswith("| Taizhou")][0]
    cva_auc = float(row.split("|")[4])
    assert cva_auc > 0.9  # the strong spectral baseline on the bundled pair


def test_bench_finetune_compares_pretrained_and_random_for_every_task():
    text = _run("benchmarks/bench_finetune.py", "--quick")
    assert "| task | labels | metric | MAE-pretrained | random init | difference |" in text
    for task in ("| classification |", "| segmentation |", "| change |"):
        assert task in text
    assert "machine:" in text


def test_bench_loading_prints_delivery_against_consumption():
    text = _run("benchmarks/bench_loading.py", "--quick")
    assert "| source | path | open + decode (CPU s) | patches/s per core | cores to feed default MAE" in text
    rows = [line for line in text.splitlines() if line.startswith(("| local", "| in memory"))]
    assert [r.split("|")[1].strip() for r in rows] == ["local GeoTIFF"] * 2 + ["local COG"] * 2 + \
        ["local STAC"] * 2 + ["in memory"] * 2
    assert all(float(r.split("|")[4]) > 0 for r in rows)  # every path delivered patches


def test_bench_analysis_quick_prints_scene_and_search_tables(shared_data):
    text = _run("benchmarks/bench_analysis.py", "--quick")
    assert "| scene (px) | scene as float32 (MiB) | chunk (px) | where | seconds | Mpixels/s | patches/s |" in text
    assert "| vectors | data | index | build (s) | ms/query | recall@10 |" in text
    ivf = [line for line in text.splitlines() if "IVFFlat" in line]
    assert len(ivf) == 4 and all(0 < float(r.split("|")[6]) <= 1 for r in ivf)  # recall@10 measured
    scene = [line for line in text.splitlines() if line.startswith("| 512 x 512")]
    assert len(scene) == 2 and all(float(r.split("|")[7]) > 0 for r in scene)  # patches/s


def test_bench_position_signal_prints_border_pixel_accuracy_next_to_chance():
    text = _run("benchmarks/bench_position_signal.py", "--quick")
    assert "| scene | window | tile px | gap px | pairs | MLP on border pixels, held-out half acc % | chance % |" in text
    rows = [line for line in text.splitlines() if line.startswith("| taizhou")]
    assert len(rows) == 2 and all(0 <= float(r.split("|")[6]) <= 100 for r in rows)
    assert "| encoder | tile px | grid | gap px | steps | seeds | s per run | west -> east acc % | chance % |" in text
    method = [line for line in text.splitlines() if line.startswith("| ViT 1 block")]
    assert len(method) == 2 and all(0 <= float(r.split("|")[8].split("±")[0]) <= 100 for r in method)


def test_bench_quality_prints_the_recipe_next_to_both_floors(tmp_path):
    text = _run("benchmarks/bench_quality.py", "--quick", "--repeats", "2", "--out", str(tmp_path))
    assert "| encoder | pretrain s | steps | kNN@1 | logistic@1 |" in text
    for row in ("| raw band mean/std (no learning) |", "| recipe, readout mean |",
                "| random weights, readout mean |", "| recipe, readout mean_std |"):
        assert row in text
    assert "vs band stats" in text and "| classification | 5 chips / class | accuracy |" in text
    assert "## Selection set:" in text and text.index("## Selection set:") < text.index("## Few-label probes")
    again = _run("benchmarks/bench_quality.py", "--quick", "--repeats", "2", "--out", str(tmp_path),
                 "--skip-finetune")  # the finished run is reused, not retrained
    assert "| recipe, readout mean |" in again and "fine-tuning" not in again


def test_bench_umap_prints_eossl_next_to_plain_umap_learn():
    text = _run("benchmarks/bench_umap.py", "--quick", "--sizes", "800", "--plain-max", "800",
                "--max-fit", "300")
    assert "| points | vectors | method | seconds | kNN preservation |" in text
    assert "| 800 | 800 real | eossl.umap (fit on 300, place 500) |" in text
    assert "| 800 | 800 real | umap-learn on every point |" in text


def test_bench_umap_cold_times_a_fresh_processs_first_umap():
    text = _run("benchmarks/bench_umap.py", "--cold")
    assert "| fresh process | first UMAP, 400 points (s) |" in text
    rows = [line for line in text.splitlines() if line.startswith(("| umap-learn alone", "| eossl.umap"))]
    assert len(rows) == 3 and all(float(r.split("|")[2]) > 0 for r in rows)


def test_bench_overlay_quick_prints_the_redraw_table():
    text = _run("benchmarks/bench_overlay.py", "--quick", "--rounds", "1")
    assert "| patches | similar (ms) | render every time (ms) | update_overlay, full (ms) |" in text
    row = [line for line in text.splitlines() if line.startswith("| 10,000")][0]
    assert float(row.split("|")[4]) > 0
