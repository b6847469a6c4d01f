"""Two random views of a multispectral batch, for the joint-embedding methods (SimCLR, MoCo, BYOL).

The usual ImageNet recipe (colour jitter, grayscale, ImageNet mean/std) assumes three RGB bands;
here a batch has any number of bands, already standardised per band by the data's own statistics
(mean 0, std 1). Every op therefore treats each band on its own and never mixes bands:

- geometry: random resized crop, flips and 90-degree rotations (satellite images have no "up");
- radiometry: a random gain and offset per band (sensor calibration, haze, season), dropping a
  few bands to their mean (0) so no single band can be relied on, Gaussian noise, Gaussian blur.

Each op works on torch batches ``(B, C, H, W)`` on any device, draws its own random parameters for
every sample, keeps the shape, the band count and the dtype, and takes an optional
``torch.Generator`` for reproducible draws.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(shape, low: float, high: float, like: torch.Tensor, generator=None) -> torch.Tensor:
    """Uniform draws on ``generator``'s device, moved to ``like``'s device as float32."""
    device = generator.device if generator is not None else like.device
    u = torch.rand(shape, generator=generator, device=device).to(like.device)
    return low + (high - low) * u


def _normal(shape, like: torch.Tensor, generator=None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device).to(like.device)


def _chosen(batch: int, prob: float, like: torch.Tensor, generator=None) -> torch.Tensor:
    """(B,) booleans: which samples an op with probability ``prob`` applies to."""
    return _uniform((batch,), 0.0, 1.0, like, generator) < prob


def random_resized_crop(x: torch.Tensor, scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3),
                        generator=None) -> torch.Tensor:
    """Crop a random box from each sample and resize it back to (H, W), bilinearly.

    The box covers a fraction of the area drawn from ``scale`` with an aspect ratio drawn
    log-uniformly from ``ratio`` (as torchvision's RandomResizedCrop), and lies inside the image.
    One affine grid per sample and ``grid_sample`` do the whole batch at once; ``grid_sample``
    interpolates each band separately. ``scale=(1, 1), ratio=(1, 1)`` returns ``x`` itself.
    """
    B, C, H, W = x.shape
    area = _uniform((B,), scale[0], scale[1], x, generator)
    log_ratio = _uniform((B,), math.log(ratio[0]), math.log(ratio[1]), x, generator)
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)    # fraction of W
    height = torch.sqrt(area / aspect).clamp(max=1.0)   # fraction of H
    # Centre in grid units [-1, 1], so that the box stays inside: |centre| <= 1 - size.
    centre_x = (1 - width) * _uniform((B,), -1.0, 1.0, x, generator)
    centre_y = (1 - height) * _uniform((B,), -1.0, 1.0, x, generator)
    theta = torch.zeros(B, 2, 3, device=x.device)
    theta[:, 0, 0], theta[:, 0, 2] = width, centre_x
    theta[:, 1, 1], theta[:, 1, 2] = height, centre_y
    grid = F.affine_grid(theta, [B, C, H, W], align_corners=False)  # (B, H, W, 2)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out.to(x.dtype)


def random_flip_rotate(x: torch.Tensor, generator=None) -> torch.Tensor:
    """A random element of the square's symmetry group per sample: horizontal and vertical flips
    with probability 1/2 each, then a rotation by k * 90 degrees, k uniform in 0..3 (only 0 or
    180 degrees for non-square images, which keeps their shape). Pixels are moved, never mixed."""
    B, _, H, W = x.shape
    hflip = _chosen(B, 0.5, x, generator)[:, None, None, None]
    vflip = _chosen(B, 0.5, x, generator)[:, None, None, None]
    x = torch.where(hflip, x.flip(-1), x)
    x = torch.where(vflip, x.flip(-2), x)
    turns = (_uniform((B,), 0.0, 4.0, x, generator).long().clamp(max=3) if H == W
             else 2 * _chosen(B, 0.5, x, generator).long())
    out = x.clone()
    for k in (1, 2, 3):
        picked = turns == k
        if picked.any():
            out[picked] = torch.rot90(x[picked], k, dims=(-2, -1))
    return out


def band_gain_offset(x: torch.Tensor, gain_std: float = 0.1, offset_std: float = 0.1,
                     generator=None) -> torch.Tensor:
    """``x * (1 + N(0, gain_std)) + N(0, offset_std)`` with one gain and one offset per sample and
    band: the multispectral stand-in for colour jitter (calibration, haze, phenology)."""
    B, C = x.shape[:2]
    gain = 1 + gain_std * _normal((B, C), x, generator)
    offset = offset_std * _normal((B, C), x, generator)
    return (x * gain[:, :, None, None] + offset[:, :, None, None]).to(x.dtype)


def band_dropout(x: torch.Tensor, prob: float = 0.2, max_fraction: float = 0.5,
                 generator=None) -> torch.Tensor:
    """In a fraction ``prob`` of the samples, set between 1 and ``max_fraction`` of the bands (at
    least one band always survives) to 0, which is the band mean of standardised data: the
    encoder learns not to lean on any single band."""
    B, C = x.shape[:2]
    most = min(C - 1, int(max_fraction * C))
    if most < 1:
        return x
    n_dropped = 1 + (_uniform((B,), 0.0, 1.0, x, generator) * most).long().clamp(max=most - 1)  # (B,)
    # A random order of the bands per sample; the first n_dropped of that order go.
    order_rank = _uniform((B, C), 0.0, 1.0, x, generator).argsort(dim=1).argsort(dim=1)       # (B, C)
    dropped = (order_rank < n_dropped[:, None]) & _chosen(B, prob, x, generator)[:, None]     # (B, C)
    return x.masked_fill(dropped[:, :, None, None], 0)


def gaussian_noise(x: torch.Tensor, std: float = 0.05, prob: float = 0.5, generator=None) -> torch.Tensor:
    """Add ``N(0, std)`` pixel noise (in units of each band's std) to a fraction ``prob`` of the
    samples: sensor noise."""
    B = x.shape[0]
    noisy = _chosen(B, prob, x, generator)[:, None, None, None].to(x.dtype)
    return x + noisy * std * _normal(x.shape, x, generator).to(x.dtype)


def gaussian_blur(x: torch.Tensor, sigma=(0.1, 1.5), prob: float = 0.5, generator=None) -> torch.Tensor:
    """Blur a fraction ``prob`` of the samples with a Gaussian of standard deviation (pixels) drawn
    from ``sigma`` per sample: other ground resolutions and atmospheric blur. Separable, one
    kernel per sample shared by its bands, reflecting at the borders."""
    B, C, H, W = x.shape
    radius = min(math.ceil(3 * sigma[1]), H - 1, W - 1)
    if radius < 1:
        return x
    sigmas = _uniform((B,), sigma[0], sigma[1], x, generator)                   # (B,)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets[None] / sigmas[:, None]) ** 2)          # (B, K)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(C, dim=0)  # (B*C, K)
    # Every (sample, band) plane is its own conv group, so bands never mix.
    planes = x.float().reshape(1, B * C, H, W)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel[:, None, None, :], groups=B * C)          # rows
    planes = F.conv2d(planes, kernel[:, None, :, None], groups=B * C)          # columns
    blurred = planes.reshape(B, C, H, W).to(x.dtype)
    return torch.where(_chosen(B, prob, x, generator)[:, None, None, None], blurred, x)


@dataclass
class ViewConfig:
    """Strength of each op in :class:`MultispectralViews`; 0 (or scale 1) switches an op off.

    The defaults are milder than SimCLR's ImageNet recipe: chips are small (32-64 px) and
    standardised bands carry the signal that colour carries in photos.
    """

    crop_scale: tuple[float, float] = (0.25, 1.0)   # fraction of the area kept by the crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range of the crop box
    flip_rotate: bool = True
    blur_prob: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 1.5)    # pixels
    gain_std: float = 0.1
    offset_std: float = 0.1                         # in units of the band's std
    band_dropout_prob: float = 0.2
    band_dropout_max_fraction: float = 0.5
    noise_prob: float = 0.5
    noise_std: float = 0.05

    def __post_init__(self):
        # Ranges come back from JSON checkpoint cards as lists.
        self.crop_scale, self.crop_ratio = tuple(self.crop_scale), tuple(self.crop_ratio)
        self.blur_sigma = tuple(self.blur_sigma)
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class MultispectralViews:
    """``views(x) -> (view1, view2)``: two independent random augmentations of the batch ``x``
    (B, C, H, W), each op with its own parameters for every sample.

    Order: crop, flips/rotations, blur, per-band gain/offset, band dropout, noise (blur before
    noise, so the noise stays sharp; dropout after the gain, so dropped bands sit exactly at 0).
    """

    def __init__(self, config: ViewConfig | None = None, generator: torch.Generator | None = None,
                 **overrides):
        self.config = dataclasses.replace(config or ViewConfig(), **overrides)
        self.generator = generator

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        cfg, g = self.config, self.generator
        if cfg.crop_scale != (1.0, 1.0):
            x = random_resized_crop(x, cfg.crop_scale, cfg.crop_ratio, generator=g)
        if cfg.flip_rotate:
            x = random_flip_rotate(x, generator=g)
        if cfg.blur_prob > 0:
            x = gaussian_blur(x, cfg.blur_sigma, cfg.blur_prob, generator=g)
        if cfg.gain_std > 0 or cfg.offset_std > 0:
            x = band_gain_offset(x, cfg.gain_std, cfg.offset_std, generator=g)
        if cfg.band_dropout_prob > 0:
            x = band_dropout(x, cfg.band_dropout_prob, cfg.band_dropout_max_fraction, generator=g)
        if cfg.noise_prob > 0 and cfg.noise_std > 0:
            x = gaussian_noise(x, cfg.noise_std, cfg.noise_prob, generator=g)
        return x

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.augment(x), self.augment(x)
