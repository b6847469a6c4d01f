"""The command line: eossl pretrain CONFIG.yaml, eossl methods, config checking."""

from __future__ import annotations

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
