"""eossl.validate: parameter checks that name the parameter, the value and what is allowed."""

import math

import numpy as np
import pytest

from eossl import validate as check
from eossl.errors import EosslError, ParameterError


def test_integer_accepts_whole_numbers_and_refuses_the_rest():
    assert check.integer("steps", 3) == 3
    assert check.integer("steps", 3.0) == 3 and isinstance(check.integer("steps", 3.0), int)
    assert check.integer("steps", np.int64(4)) == 4
    for bad in ("abc", "3", 2.5, True, None, float("nan")):
        with pytest.raises(ParameterError, match="steps must be a whole number"):
            check.integer("steps", bad)
    with pytest.raises(ParameterError, match="batch_size must be at least 1, not 0"):
        check.integer("batch_size", 0, minimum=1)


def test_number_bounds_and_finiteness():
    assert check.number("lr", 1e-3, above=0) == pytest.approx(1e-3)
    with pytest.raises(ParameterError, match=r"lr must be a positive number \(> 0\), not -0.1"):
        check.number("lr", -0.1, above=0)
    for bad in (math.inf, math.nan, "1e-3", False):
        with pytest.raises(ParameterError, match="lr must be a finite number"):
            check.number("lr", bad, above=0)
    with pytest.raises(ParameterError, match="max_invalid must be >= 0 and < 1, not 1"):
        check.number("max_invalid", 1, minimum=0, below=1)
    assert check.number("max_invalid", 0, minimum=0, below=1) == 0.0


def test_choice_lists_what_is_allowed():
    assert check.choice("readout", "mean", ("mean", "mean_std")) == "mean"
    with pytest.raises(ParameterError, match=r"readout must be one of \['mean', 'mean_std'\], not 'cls'"):
        check.choice("readout", "cls", ("mean", "mean_std"))


def test_device_strings():
    assert check.device("auto") == "auto" and check.device("cpu") == "cpu"
    for bad in ("bogus", "cuda:x", "cpu:0", 0):
        with pytest.raises(ParameterError, match="device must be one of"):
            check.device(bad)
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match="no CUDA GPU"):
            check.device("cuda")


def test_parameter_errors_are_eossl_errors_and_value_errors():
    assert issubclass(ParameterError, EosslError) and issubclass(ParameterError, ValueError)


def test_old_spellings_warn_once_and_still_work(tmp_path):
    import warnings as _w
    from eossl.validate import _RENAMED_WARNED, warn_renamed
    _RENAMED_WARNED.discard(("colour", "color", "demo"))
    with pytest.warns(FutureWarning, match="demo: colour= is now spelled color="):
        warn_renamed("colour", "color", "demo")
    with _w.catch_warnings():
        _w.simplefilter("error")
        warn_renamed("colour", "color", "demo")          # once per process


def test_eossl_stac_and_liveplot_are_public():
    import importlib
    import eossl
    stac = importlib.import_module("eossl.stac")
    from eossl.stac import search
    assert stac is eossl.stac and search is eossl.stac.search
    assert eossl.LivePlot is importlib.import_module("eossl.train.callbacks").LivePlot
