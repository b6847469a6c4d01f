"""Grid and random windows over scenes, stacks and chip sets, skipping nodata / NaN.

Two views of the same idea:
- :func:`grid_patches` / :func:`random_patches` return an xarray ``(sample, band, y, x)`` of windows
  with each window's position (``row``, ``col``, centre ``x_center`` / ``y_center`` in the scene CRS);
- :class:`PatchSampler` draws normalised training batches ``(B, C, H, W)`` straight from memory,
  which is what the trainer uses.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from eossl.data.normalize import nodata_to_nan, normalize_array, stats_of
from eossl.errors import DataError


def window_starts(length: int, window: int, stride: int | None = None) -> list[int]:
    """Window starts covering [0, length) every ``stride`` px (default: ``window``, no overlap),
    the last window flush with the end (overlap instead of padding). The one tiler: embed,
    scene-scale embedding, band importance and tiled prediction all cut their windows here."""
    stride = window if stride is None else stride
    if stride < 1:
        raise DataError(f"window stride must be at least 1 px, got {stride}")
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return starts


def tile_size(length: int, window: int, p: int) -> int:
    """The window along one axis: a multiple of the patch size ``p``, no bigger than the scene."""
    size = min(window, (length // p) * p)
    if size < p:
        raise DataError(f"the scene is {length} px along one axis, smaller than one {p} px patch of this encoder")
    return (size // p) * p


def _as_images(da: xr.DataArray) -> tuple[np.ndarray, str]:
    """Any supported layout as float32 ``(N, C, H, W)`` with NaN for nodata; plus its kind."""
    if "band" not in da.dims:
        raise DataError(f"array with dims {da.dims} has no 'band' dimension")
    nodata = da.attrs.get("nodata")
    if da.ndim == 3:
        arr, kind = da.transpose("band", "y", "x").values[None], "scene"  # (1, C, H, W)
    elif da.ndim == 4:
        lead = [d for d in da.dims if d not in ("band", "y", "x")][0]
        arr = da.transpose(lead, "band", "y", "x").values  # (N or T, C, H, W)
        kind = "chips" if lead == "sample" else "stack"
    else:
        raise DataError(f"expected (band, y, x), (time, band, y, x) or (sample, band, y, x), got {da.dims}")
    return nodata_to_nan(arr.astype("float32", copy=False), nodata), kind


def _valid_integral(images: np.ndarray) -> np.ndarray:
    """Summed-area table of 'every band finite' per pixel: (N, H+1, W+1)."""
    valid = np.isfinite(images).all(axis=1).astype("int32")  # (N, H, W)
    table = np.zeros((valid.shape[0], valid.shape[1] + 1, valid.shape[2] + 1), dtype="int64")
    table[:, 1:, 1:] = valid.cumsum(1).cumsum(2)
    return table


def _valid_fraction(table, n, rows, cols, size) -> np.ndarray:
    s = table[n, rows + size, cols + size] - table[n, rows, cols + size] \
        - table[n, rows + size, cols] + table[n, rows, cols]
    return s / float(size * size)


def _check_size(da: xr.DataArray, size: int) -> None:
    h, w = da.sizes["y"], da.sizes["x"]
    if h < size or w < size:
        src = da.attrs.get("source", "the scene")
        raise DataError(f"{src}: is {h}x{w} px, smaller than one {size}x{size} patch; "
                        "use a smaller patch size or a larger scene")


def _windows_to_xarray(da, images, picks, size) -> xr.DataArray:
    """picks: (image index, row, col) triples -> (sample, band, y, x) DataArray with positions."""
    n_idx, rows, cols = (np.array(v) for v in zip(*picks)) if picks else (np.zeros(0, int),) * 3
    data = np.stack([images[n, :, r:r + size, c:c + size] for n, r, c in picks]) if picks else \
        np.zeros((0, images.shape[1], size, size), "float32")
    coords = {k: v for k, v in da.coords.items() if v.dims == ("band",)}
    coords.update(row=("sample", rows), col=("sample", cols), source_index=("sample", n_idx))
    if da.ndim == 3 or "sample" not in da.dims:
        xs, ys = da["x"].values, da["y"].values
        # midway between the first and last pixel centres: the window's centre for odd and even sizes
        coords.update(x_center=("sample", (xs[cols] + xs[cols + size - 1]) / 2 if len(cols) else xs[:0]),
                      y_center=("sample", (ys[rows] + ys[rows + size - 1]) / 2 if len(rows) else ys[:0]))
    lead = [d for d in da.dims if d not in ("band", "y", "x")]
    if lead and lead[0] in da.coords:
        coords[lead[0]] = ("sample", da[lead[0]].values[n_idx])
    if "label" in da.coords:
        coords["label"] = ("sample", da["label"].values[n_idx])
    out = xr.DataArray(data, dims=("sample", "band", "y", "x"), coords=coords, name="patches",
                       attrs={k: v for k, v in da.attrs.items() if k in ("sensor", "source")})
    out.attrs["patch_size"] = size
    if da.rio.crs is not None:
        out.attrs["crs"] = da.rio.crs.to_string()
    return out


def grid_patches(da: xr.DataArray, size: int, stride: int | None = None,
                 max_invalid: float = 0.0) -> xr.DataArray:
    """Windows of ``size`` px on a regular grid (``stride`` defaults to ``size``), keeping those
    with at most ``max_invalid`` fraction of nodata/NaN pixels."""
    _check_size(da, size)
    stride = stride or size
    images, _ = _as_images(da)
    table = _valid_integral(images)
    if table[:, -1, -1].sum() == 0:
        raise DataError(f"{da.attrs.get('source', 'the scene')}: every pixel is NaN or nodata; no patches")
    h, w = images.shape[2:]
    rows, cols = np.meshgrid(np.arange(0, h - size + 1, stride), np.arange(0, w - size + 1, stride),
                             indexing="ij")
    picks = []
    for n in range(images.shape[0]):
        frac = _valid_fraction(table, n, rows.ravel(), cols.ravel(), size)
        keep = frac >= 1.0 - max_invalid
        picks += [(n, r, c) for r, c in zip(rows.ravel()[keep], cols.ravel()[keep])]
    return _windows_to_xarray(da, images, picks, size)


def random_patches(da: xr.DataArray, size: int, n: int, seed: int = 0,
                   max_invalid: float = 0.0) -> xr.DataArray:
    """``n`` windows of ``size`` px at random positions (and random dates/chips), each with at most
    ``max_invalid`` fraction of nodata/NaN pixels."""
    _check_size(da, size)
    images, _ = _as_images(da)
    sampler = _WindowPicker(images, size, max_invalid, da.attrs.get("source", "the data"))
    picks = sampler.pick(n, np.random.default_rng(seed))
    return _windows_to_xarray(da, images, picks, size)


class _WindowPicker:
    """Draws valid window positions by rejection sampling on the summed-area table."""

    def __init__(self, images: np.ndarray, size: int, max_invalid: float, source: str):
        self.images, self.size, self.max_invalid, self.source = images, size, max_invalid, source
        self.table = _valid_integral(images)
        if self.table[:, -1, -1].sum() == 0:
            raise DataError(f"{source}: every pixel is NaN or nodata; nothing to learn from")

    def pick(self, n: int, rng: np.random.Generator) -> list[tuple[int, int, int]]:
        N, _, h, w = self.images.shape
        out, tries = [], 0
        while len(out) < n:
            m = max(2 * (n - len(out)), 16)
            idx = rng.integers(0, N, m)
            rows = rng.integers(0, h - self.size + 1, m)
            cols = rng.integers(0, w - self.size + 1, m)
            ok = _valid_fraction(self.table, idx, rows, cols, self.size) >= 1.0 - self.max_invalid
            out += [(int(a), int(b), int(c)) for a, b, c in zip(idx[ok], rows[ok], cols[ok])]
            tries += m
            if not out and tries > 200 * n + 1000:
                raise DataError(f"{self.source}: no {self.size}x{self.size} window with at most "
                                f"{self.max_invalid:.0%} nodata/NaN pixels; use a smaller patch size "
                                "or allow more invalid pixels (max_invalid)")
        return out[:n]


def align_bands(sources: list[xr.DataArray]) -> list[xr.DataArray]:
    """Put every source in the first one's band order (EuroSAT files keep B8A last, most
    Sentinel-2 products put it after B08); sources with other band sets are an error."""
    bands = sources[0]["band"].values.tolist()
    out = [sources[0]]
    for s in sources[1:]:
        theirs = s["band"].values.tolist()
        if sorted(theirs) != sorted(bands):
            raise DataError(f"sources have different bands: {bands} vs {theirs}")
        out.append(s if theirs == bands else s.sel(band=bands))
    return out


class PatchSampler:
    """Normalised random training windows ``(B, C, size, size)`` from scenes, stacks and chip sets.

    Several sources may be mixed (e.g. unlabeled chips and a scene with the same bands); each
    batch draws windows from all of them, ``balance="pixels"`` in proportion to their pixel count,
    ``"sources"`` from every source equally often (so 14 small patches are not drowned by one
    large city, and a large city does not decide what the encoder learns). Dates of a stack are
    treated as separate images. NaN / nodata pixels that remain (``max_invalid`` > 0) become 0
    after normalisation, i.e. the band mean.
    """

    def __init__(self, data, size: int, stats: xr.Dataset | None = None, max_invalid: float = 0.0,
                 augment: bool = True, balance: str = "pixels"):
        if balance not in ("pixels", "sources"):
            raise ValueError(f"balance must be 'pixels' or 'sources', not {balance!r}")
        sources = list(data) if isinstance(data, (list, tuple)) else [data]
        if not sources:
            raise DataError("no data given to sample patches from")
        sources = align_bands(sources)
        bands = sources[0]["band"].values.tolist()
        for s in sources:
            _check_size(s, size)
        self.bands, self.size, self.augment = bands, size, augment
        self.stats = stats if stats is not None else stats_of(sources)
        if "band" in self.stats.coords:  # statistics in another band order, or of more bands
            missing = [b for b in bands if b not in self.stats["band"].values.tolist()]
            if missing:
                raise DataError(f"the statistics have no entry for bands {missing}")
            self.stats = self.stats.sel(band=bands)
        self.pickers, weights, self.kinds = [], [], []
        for s in sources:
            images, kind = _as_images(s)
            self.kinds.append(kind)
            images = normalize_array(images, self.stats["mean"].values, self.stats["std"].values, 1)
            self.pickers.append(_WindowPicker(images, size, max_invalid, s.attrs.get("source", "data")))
            weights.append(images.shape[0] * (images.shape[2] - size + 1) * (images.shape[3] - size + 1)
                           if balance == "pixels" else 1.0)
        self.weights = np.array(weights, dtype="float64") / np.sum(weights)

    def sample(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """A batch ``(B, C, size, size)`` float32, NaN replaced by 0 (the band mean)."""
        counts = rng.multinomial(batch_size, self.weights)
        windows = []
        for picker, count in zip(self.pickers, counts):
            for n, r, c in picker.pick(int(count), rng) if count else []:
                windows.append(picker.images[n, :, r:r + self.size, c:c + self.size])
        batch = np.stack(windows)  # (B, C, S, S)
        if self.augment:  # flips and 90-degree turns: safe for any band count
            if rng.random() < 0.5:
                batch = batch[..., ::-1]
            batch = np.rot90(batch, k=int(rng.integers(4)), axes=(2, 3))
        return np.nan_to_num(np.ascontiguousarray(batch), nan=0.0)

    def sample_pairs(self, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Two looks at each of ``batch_size`` places: ``(B, 2, C, size, size)``.

        From a stack the second look is the same window on another date (drawn at random among
        the dates where the window is valid too), so the pair differs by season, weather and sun;
        from a single scene or a chip it is the same window again (methods then make the two
        looks differ by their own crops and turns). Both looks share the sampler's flip and turn.
        """
        counts = rng.multinomial(batch_size, self.weights)
        pairs = []
        for picker, kind, count in zip(self.pickers, self.kinds, counts):
            if not count:
                continue
            T = picker.images.shape[0]
            is_stack = kind == "stack" and T > 1
            for n, r, c in picker.pick(int(count), rng):
                other = n
                if is_stack:
                    dates = rng.permutation(T)
                    valid = _valid_fraction(picker.table, dates, np.full(T, r), np.full(T, c), self.size)
                    ok = [int(d) for d, v in zip(dates, valid) if d != n and v >= 1.0 - picker.max_invalid]
                    other = ok[0] if ok else n
                window = (slice(None), slice(r, r + self.size), slice(c, c + self.size))
                pairs.append(np.stack([picker.images[n][window], picker.images[other][window]]))
        batch = np.stack(pairs)  # (B, 2, C, S, S)
        if self.augment:
            if rng.random() < 0.5:
                batch = batch[..., ::-1]
            batch = np.rot90(batch, k=int(rng.integers(4)), axes=(3, 4))
        return np.nan_to_num(np.ascontiguousarray(batch), nan=0.0)

    def sample_series(self, batch_size: int, rng: np.random.Generator, length: int = 2) -> np.ndarray:
        """Windows at the same place on ``length`` different dates: ``(B, T, C, size, size)``.

        Dates are drawn at random from each stack (in time order); a window is kept when it is
        valid on every drawn date. Only stacks ``(time, band, y, x)`` can give these.
        """
        stacks = [i for i, (kind, p) in enumerate(zip(self.kinds, self.pickers))
                  if kind == "stack" and p.images.shape[0] >= length]
        if not stacks:
            have = ", ".join(f"{k} with {p.images.shape[0]} image(s)" for k, p in zip(self.kinds, self.pickers))
            raise DataError(f"this method needs a stack (time, band, y, x) with at least {length} dates "
                            f"of the same place; the data holds: {have}. Use eossl.open_stack or a "
                            "multi-date sample such as load_sample('slovenia_s2')")
        weights = self.weights[stacks] / self.weights[stacks].sum()
        out, tries = [], 0
        while len(out) < batch_size:
            picker = self.pickers[stacks[rng.choice(len(stacks), p=weights)]]
            T, _, h, w = picker.images.shape
            dates = np.sort(rng.choice(T, length, replace=False))
            r, c = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
            ok = _valid_fraction(picker.table, dates, np.full(length, r), np.full(length, c), self.size)
            tries += 1
            if np.all(ok >= 1.0 - picker.max_invalid):
                out.append(picker.images[dates, :, r:r + self.size, c:c + self.size])  # (T, C, S, S)
            elif tries > 1000 * batch_size:
                raise DataError(f"no {self.size}x{self.size} window is valid on {length} dates at once; "
                                "allow more invalid pixels (max_invalid) or use a smaller window")
        batch = np.stack(out)  # (B, T, C, S, S)
        if self.augment:  # the same flip / turn for every date, so dates stay aligned
            if rng.random() < 0.5:
                batch = batch[..., ::-1]
            batch = np.rot90(batch, k=int(rng.integers(4)), axes=(3, 4))
        return np.nan_to_num(np.ascontiguousarray(batch), nan=0.0)

