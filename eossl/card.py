"""The card: what a later user needs to feed an encoder correctly, in one place.

Every checkpoint carries a card (``card.json`` beside the weights, and the same JSON inside the
safetensors file): the method and encoder that make the weights, the bands in order, the units
(DN or reflectance) and per-band statistics the encoder was trained on, how a chip's tokens are
pooled (``readout``), the recipe and the run's settings. This module is the card's one owner:

- :class:`Card` holds it: a dict with declared, checked keys and a schema version (a dict, so it
  is exactly the JSON it is stored as: ``json.dumps(card)`` and ``card["bands"]`` just work);
- :func:`training_card` / :func:`finetune_card` build it (pretraining and random-weight baselines
  / fine-tuned heads); :meth:`Card.from_dict` reads and validates one from a checkpoint;
- :func:`conform` and :func:`prepare` apply it: data with the card's bands in the card's order, in
  its units, normalised with its statistics. ``eossl.embed``, scene-scale embedding, band
  importance, fine-tuning and prediction all prepare their inputs with :func:`prepare`.

It sits above ``eossl.data`` (bands, units, statistics) and below the models, so every stage that
reads or writes a card may import it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import xarray as xr

from eossl.data.normalize import nodata_to_nan, normalize_raw
from eossl.data.units import DN_SCALE, dn_scale, guess_units, normalise_units
from eossl.errors import CheckpointError

# 1: the cards written before this module (a plain dict without "schema"); read as they are.
# 2: the same keys, plus "schema". A card from a newer eossl is refused with a clear message.
CARD_SCHEMA = 2
READOUTS = ("mean", "mean_std")
NORMALIZATION_KIND = "per-band standardisation, (x - mean) / std"


# The keys every card has, with the default a card read from an older eossl gets for a missing one.
# Others ride along: a run's ``step`` and ``train_seconds``; a fine-tuned head's ``task``,
# ``classes``, ``head``, ``base``, ``metrics``; a foreign file's ``source``, ``dn_scale``.
REQUIRED = ("method", "encoder", "bands", "normalization")
DEFAULTS = {
    "method_config": dict,    # the method's settings (mask_ratio, ...), enough to rebuild it
    "embedding_dim": None,    # width of what embed returns for a chip
    "readout": "mean",        # how embed pools a chip's token grid: "mean" or "mean_std"
    "recipe": None,           # the recipe the settings came from (None: chosen by hand)
    "sensor": "generic",
    "units": None,            # "DN", "reflectance" or None (unknown: no units check)
    "on_mismatch": None,      # data in the other units: "convert", "warn" or "error"
    "input_dtype": None,
    "config": dict,           # the run's full settings (PretrainConfig)
}


class Card(dict):
    """A checkpoint's card: a dict with declared keys (:data:`REQUIRED`, :data:`DEFAULTS`) and a
    ``schema`` version, checked when it is made, so a damaged or foreign card fails here with
    what is missing rather than as a KeyError three calls later.

    It is a dict so that it is what it is stored as: ``json.dumps(card)``, ``card["bands"]`` and
    ``{**card}`` work as on the JSON. The declared keys also read as attributes
    (``card.bands``, ``card.units``); :attr:`band_names` lists the bands in order.
    """

    def __init__(self, data=(), /, *, where="the card", **keys):
        super().__init__(data, **keys)
        schema = self.get("schema", 1)
        if not isinstance(schema, int) or schema > CARD_SCHEMA:
            raise CheckpointError(f"{where}: card schema {schema!r} is newer than this eossl reads "
                                  f"({CARD_SCHEMA}); upgrade eossl to load it")
        problems = card_problems(self)
        if problems:
            raise CheckpointError(f"{where}: its card cannot be used: " + "; ".join(problems)
                                  + ". Use the checkpoint as eossl wrote it, or train again")

    def __getattr__(self, name):
        # a key an older card lacks reads as its default; the dict itself stays what was stored
        if name in REQUIRED:
            return self[name]
        if name in DEFAULTS:
            value = self.get(name)
            default = DEFAULTS[name]
            return value if value is not None else (default() if callable(default) else default)
        if name == "schema":
            return self.get("schema", 1)
        raise AttributeError(f"a card has no {name!r}; its keys are {sorted(self)}")

    def __repr__(self):
        return (f"Card(method={self.method!r}, encoder={self.encoder.get('name')!r}, "
                f"bands={self.band_names}, units={self.units!r}, readout={self.readout!r})")

    @property
    def band_names(self) -> list[str]:
        return [b["name"] for b in self["bands"]]

    def replace(self, **changes) -> "Card":
        """A copy with ``changes`` applied; this card is left as it is."""
        return Card({**self, **changes})

    @classmethod
    def from_dict(cls, data, source="the card") -> "Card":
        """A card read from JSON (any schema up to :data:`CARD_SCHEMA`), or a
        :class:`CheckpointError` that names ``source`` and what is missing."""
        if isinstance(data, Card):
            return data
        if not isinstance(data, Mapping):
            raise CheckpointError(f"{source}: the card is not a mapping; the checkpoint is damaged")
        return cls(data, where=source)


def card_problems(card: Mapping) -> list[str]:
    """What makes ``card`` unusable for loading and embedding (empty when it is fine)."""
    get = card.get
    problems = []
    bands = get("bands")
    if not isinstance(bands, list) or not bands or not all(isinstance(b, dict) and "name" in b for b in bands):
        problems.append("'bands' (a list of {name: ...} entries) is missing or empty")
    norm = get("normalization")
    if not isinstance(norm, dict) or not all(isinstance(norm.get(k), list) for k in ("mean", "std")):
        problems.append("'normalization' (per-band mean and std) is missing")
    elif isinstance(bands, list) and bands and not len(norm["mean"]) == len(norm["std"]) == len(bands):
        problems.append(f"'normalization' has {len(norm['mean'])} means and {len(norm['std'])} stds for "
                        f"{len(bands)} bands")
    if not isinstance(get("encoder"), dict) or "name" not in get("encoder"):
        problems.append("'encoder' (the architecture) is missing")
    if not isinstance(get("method"), str):
        problems.append("'method' is missing")
    if get("readout") not in (None, *READOUTS):
        problems.append(f"'readout' is {get('readout')!r}, not one of {list(READOUTS)}")
    return problems


def card_of(model) -> tuple:
    """``(encoder, card)`` of a pretrained, loaded or fine-tuned model, or a clear error."""
    encoder = getattr(model, "encoder", model)
    card = getattr(model, "card", None)
    if card is None:
        raise CheckpointError("this model has no card (bands and normalisation); use the model from "
                              "eossl.pretrain(...).model or eossl.load_model(path)")
    return encoder, card


# ---------------------------------------------------------------------- building

def band_entries(da: xr.DataArray) -> list[dict]:
    """The card's ``bands``: each band's name, and its common name, wavelength and resolution
    when the data carry them."""
    bands = []
    for i, name in enumerate(da["band"].values.tolist()):
        entry = {"name": name}
        for coord, key in (("common_name", "common_name"), ("wavelength", "wavelength_nm"),
                           ("resolution", "resolution_m")):
            if coord in da.coords:
                value = da[coord].values[i]
                entry[key] = value.item() if hasattr(value, "item") else value
                if isinstance(entry[key], float) and math.isnan(entry[key]):
                    entry[key] = None
        bands.append(entry)
    return bands


def training_units(arrays: list[xr.DataArray]) -> str | None:
    """"DN" or "reflectance" when every training source agrees, else None (no units check)."""
    found = {normalise_units(da.attrs.get("units"))  # declared (e.g. by eossl.stac.load): no reading
             or guess_units(sample_values(da, 20_000), dtype=da.dtype) for da in arrays}
    return found.pop() if len(found) == 1 else None


def training_card(*, method: str, encoder, arrays: list[xr.DataArray], stats: xr.Dataset,
                  method_config: dict | None = None, readout: str = "mean", recipe: str | None = None,
                  config: dict | None = None) -> Card:
    """The card of an encoder trained (or randomly initialised) on ``arrays`` normalised with
    ``stats``: what :func:`eossl.pretrain` saves, and what random-weight baselines carry."""
    da = arrays[0]
    return Card(
        schema=CARD_SCHEMA,
        method=method,
        method_config=dict(method_config or {}),
        encoder=encoder.spec,
        embedding_dim=encoder.dim * (2 if readout == "mean_std" else 1),
        readout=readout,
        recipe=recipe,
        bands=band_entries(da),
        sensor=da.attrs.get("sensor", "generic"),
        normalization={"kind": NORMALIZATION_KIND,
                       "mean": stats["mean"].values.tolist(), "std": stats["std"].values.tolist()},
        # what eossl.embed compares new data with: DN vs reflectance, and what to do when they differ
        units=training_units(arrays),
        on_mismatch="convert" if da.attrs.get("sensor") in DN_SCALE else "warn",
        input_dtype=str(da.dtype),
        config=dict(config or {}),
    )


def finetune_card(base: Card, *, task: str, encoder, classes: list[dict], head: dict, base_path,
                  settings: dict) -> Card:
    """A fine-tuned checkpoint's card: the task and classes, and the base encoder's bands, units
    and normalisation (inputs must be prepared exactly as for the base), the head, how it trained."""
    base = Card.from_dict(base)
    return Card(
        schema=CARD_SCHEMA,
        method=f"finetune_{task}",
        task=task,
        classes=classes,
        bands=base.bands,
        normalization=base.normalization,
        sensor=base.sensor,
        input_dtype=base.input_dtype,
        units=base.units,
        on_mismatch=base.on_mismatch,
        encoder=encoder.spec,
        embedding_dim=encoder.dim,
        head=head,
        base={"method": base.method, "step": base.get("step"), "checkpoint": base_path},
        finetune=settings,
    )


# ---------------------------------------------------------------------- applying

def match_bands(da: xr.DataArray, card) -> xr.DataArray:
    """``da`` with exactly the card's bands in the card's order, or a clear error.

    Data whose bands carry no names (``band_1`` ... ``band_N``, what a file without band
    descriptions gives) and whose count equals the model's is taken to be in the model's band
    order, with a warning saying so; a different count is an error."""
    if not isinstance(card.get("bands"), list) or not card["bands"]:
        raise CheckpointError("the model's card lists no bands ('bands' missing or empty), so eossl cannot "
                              "tell which input channels it expects; the checkpoint is damaged or not "
                              "eossl's: load a foreign state dict with eossl.load_model(path, bands=[...])")
    want = [b["name"] if isinstance(b, dict) else str(b) for b in card["bands"]]
    have = da["band"].values.tolist()
    if have == want:
        return da
    missing = [b for b in want if b not in have]
    unnamed = have == [f"band_{i + 1}" for i in range(len(have))]
    if missing and unnamed and len(have) == len(want):
        warnings.warn(f"the data's {len(have)} bands have no names; using them as the model's bands in "
                      f"its order {want}. Name them (open with bands=[...]) to silence this", stacklevel=3)
        return da.assign_coords(band=want)
    if missing:
        hint = ""
        if unnamed:
            hint = (f" The data's bands have no names and their count ({len(have)}) differs from the "
                    f"model's ({len(want)}), so they cannot be the model's bands")
        raise CheckpointError(
            f"the model was trained on bands {want} but the data has {have}; missing {missing}. "
            "Give data with those bands (or open it with bands=[...] naming them)." + hint)
    return da.sel(band=want)  # same bands, other order: reorder by name


def sample_values(da: xr.DataArray, max_pixels: int = 20_000) -> np.ndarray:
    """A strided sample of ``da``'s values as ``(band, N)`` float64, NaN for nodata. From lazy
    (dask) data it reads a central window of a few dates / chips only, not every chunk.
    2 x 10^4 pixels put a band's median within a few percent (the checks look for factors of
    10 or shifts of 10 std) and keep the checks at a few ms of every embed."""
    if da.chunks is not None:
        window = {}
        for d in da.dims:
            n = da.sizes[d]
            if d in ("y", "x"):
                window[d] = slice(max(0, n // 2 - 128), n // 2 + 128)
            elif d != "band":
                window[d] = np.unique(np.linspace(0, n - 1, min(n, 3)).round().astype(int))
        da = da.isel(window)
    spatial = {d: da.sizes[d] for d in da.dims if d != "band"}
    total = int(np.prod(list(spatial.values()))) if spatial else 1
    step = max(1, int(np.ceil((total / max_pixels) ** (1 / max(1, len(spatial))))))
    small = da.isel({d: slice(None, None, step) for d in spatial}) if step > 1 else da
    values = np.asarray(small.transpose("band", ...).values, dtype="float64").reshape(da.sizes["band"], -1)
    return nodata_to_nan(values, da.attrs.get("nodata"))


def units_guard(da: xr.DataArray, card, sample: np.ndarray | None = None,
                on_mismatch: str | None = None):
    """The card to normalise ``da`` with: ``card`` itself when the units agree (or either is
    unknown), otherwise, as ``on_mismatch`` (default: the card's) says, a card whose statistics
    also convert the units (with a warning naming the conversion), a warning, or an error.

    Converting inside the statistics costs nothing: (x * f + o - mean) / std is
    (x - (mean - o) / f) / (std / f).
    """
    want = normalise_units(card.get("units"))
    if want is None:
        return card
    declared = normalise_units(da.attrs.get("units"))
    if declared == want:  # no pixel needs reading
        return card
    values = sample if sample is not None else sample_values(da)
    have = guess_units(values, dtype=da.dtype, attrs=da.attrs)
    if have is None or have == want:
        return card
    conversion = dn_scale(card)
    mode = on_mismatch or card.get("on_mismatch") or ("convert" if conversion else "warn")
    if mode not in ("convert", "warn", "error"):
        raise CheckpointError(f"on_mismatch={mode!r}: use 'convert', 'warn' or 'error'")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.round(np.nanmedian(values, axis=1)[:4], 4).tolist()
    problem = (f"the model expects {want} but the data look like {have} (band medians {medians}...; "
               f"different units)")
    if mode == "error":
        raise CheckpointError(problem + ". Convert the data to " + want + " first (Sentinel-2: "
                              "reflectance = DN / 10000), or load the model with on_mismatch='convert'")
    if mode == "convert" and conversion:
        scale, offset = conversion  # reflectance = DN * scale + offset
        f, o = (scale, offset) if want == "reflectance" else (1 / scale, -offset / scale)
        warnings.warn(f"{problem}: converting {have} to {want} (x * {f:g}{offset and f' + {o:g}' or ''}) "
                      "before embedding; pass data in the model's units to silence this", stacklevel=3)
        norm = card["normalization"]
        mean = (np.asarray(norm["mean"], dtype="float64") - o) / f
        std = np.asarray(norm["std"], dtype="float64") / f
        converted = {**norm, "mean": mean.tolist(), "std": std.tolist()}
        return type(card)({**card, "normalization": converted, "units": have})
    warnings.warn(problem + (f"; eossl knows no DN scale for sensor {card.get('sensor')!r} to convert"
                             if mode == "convert" else "")
                  + ". The embeddings will be meaningless: convert the data to " + want, stacklevel=3)
    return card


def check_units(da: xr.DataArray, card, sample: np.ndarray | None = None) -> None:
    """Warn when the data's values sit far outside the training distribution (e.g. reflectance
    0..1 given to a model trained on DN 0..10000): the most common silent failure."""
    mean = np.asarray(card["normalization"]["mean"], dtype="float64")
    std = np.asarray(card["normalization"]["std"], dtype="float64")
    values = sample if sample is not None else da.transpose("band", ...).values.reshape(len(mean), -1)
    if values.shape[1] > 100_000:  # a median of 10^5 pixels per band is plenty, and 10x cheaper
        values = values[:, :: values.shape[1] // 100_000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN bands, log10(0)
        median = np.nanmedian(values.astype("float64"), axis=1)
        z = np.nanmedian(np.abs(median - mean) / std)
        # A shift of many std, or a factor of 10+ in scale: reflectance vs DN differs by 1e4 but
        # only ~2 std on the wide distributions of real scenes, so the z-score alone misses it.
        # The ratio is only meaningful for bands whose training mean is well away from zero.
        away = np.abs(mean) > 0.5 * std
        ratio = np.abs(np.log10(np.abs(median[away]) / np.abs(mean[away])))
        scale = np.nanmedian(ratio) if ratio.size else np.nan
    if z > 10 or scale > 1:
        warnings.warn(
            f"the data's values do not look like what the model was trained on: band medians "
            f"{np.round(median[:4], 3).tolist()}... vs training means {np.round(mean[:4], 3).tolist()}... "
            "(different units, e.g. reflectance vs DN, or another scaling?)", stacklevel=3)


def conform(da: xr.DataArray, card, *, check_values: bool = True, on_mismatch: str | None = None,
            sample: np.ndarray | None = None):
    """``(da, card)`` ready to normalise: ``da`` with the card's bands in its order, and the card
    whose statistics fit ``da``'s units (converted as :func:`units_guard` says); it also warns
    when the values sit far from the training statistics (:func:`check_units`).
    ``check_values=False`` skips every check and conversion."""
    da = match_bands(da, card)
    if check_values:
        sample = sample_values(da) if sample is None else sample  # a strided sample, not every pixel
        card = units_guard(da, card, sample, on_mismatch=on_mismatch)
        check_units(da, card, sample)
    return da, card


def normalized(values: np.ndarray, card, band_axis: int, nodata=None) -> np.ndarray:
    """Raw ``values`` standardised with the card's statistics along ``band_axis``: float32, NaN
    where ``nodata`` (or NaN) was."""
    norm = card["normalization"]
    return normalize_raw(values, norm["mean"], norm["std"], band_axis, nodata)


def prepare(da: xr.DataArray, card, dims: tuple[str, ...] | None = None, *, check_values: bool = True,
            on_mismatch: str | None = None, fill: float | None = None) -> np.ndarray:
    """``da`` as the card's encoder sees it: its bands in its order, in its units, normalised with
    its statistics, as float32 in ``dims`` order (default: ``da``'s own). NaN marks nodata, or
    becomes ``fill`` (0: the band mean) when given."""
    da, card = conform(da, card, check_values=check_values, on_mismatch=on_mismatch)
    if dims is not None:
        da = da.transpose(*dims)
    arr = normalized(da.values, card, da.dims.index("band"), da.attrs.get("nodata"))
    return arr if fill is None else np.nan_to_num(arr, nan=fill)


def model_input(model, chips: xr.DataArray) -> np.ndarray:
    """Chips ``(sample, band, y, x)`` as ``model`` sees them (:func:`prepare` with the model's
    card), NaN as 0 (the band mean): float32 ``(N, C, H, W)``."""
    _, card = card_of(model)
    return prepare(chips, card, ("sample", "band", "y", "x"), fill=0.0)
