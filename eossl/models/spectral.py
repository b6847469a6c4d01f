"""Spectral masked autoencoder: a MAE whose tokens are (band group x patch), after SatMAE's
group-channel model (Cong et al. 2022, "SatMAE", NeurIPS).

A plain MAE embeds all C bands of a patch into one token, so hiding a patch hides every band at
once and the model only learns to fill space from space. Here the bands are split into groups
(e.g. Sentinel-2's 10 m visible/NIR bands, its red-edge bands, its SWIR bands), each group has its
own patch embedding, and a patch becomes G tokens, one per group. Hiding tokens independently
across groups leaves, at many places, some groups visible and others hidden: the model has to
predict a group's pixels from the other groups at the same place, which is the relation between
bands (red edge from red and NIR, SWIR from the visible bands...). ``masking="withhold"`` makes
that the whole task: it hides entire groups and the model rebuilds them from the rest.

Shapes: B batch, C bands, H/W pixels, p patch size, G groups, h/w patch grid, L = h*w patches,
N = G*L tokens (group-major: all patches of group 0, then group 1, ...), D encoder width,
E decoder width, P prefix (class) tokens.

Band groups are lists of band indices into the data's band order, passed as
``eossl.pretrain(data, method="spectral_mae", band_groups=[[1, 2, 3, 7], [4, 5, 6, 12], [10, 11]])``.
Without them, :func:`default_band_groups` picks groups from the data's band names. A band may be
left out of every group (SatMAE drops the 60 m atmospheric bands): it is then never seen.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from eossl.errors import DataError
from eossl.models.backbones import Encoder, check_layers
from eossl.models.losses import embedding_std
from eossl.models.mae import MAE, cached_positions, norm_pix_target, take_tokens

# Groups by band name: the same native resolution and spectral region go together (SatMAE's
# Sentinel-2 grouping, plus the atmospheric bands it drops as a group of their own).
_SENTINEL2_GROUPS = (("B02", "B03", "B04", "B08"),   # 10 m visible and NIR
                     ("B05", "B06", "B07", "B8A"),   # 20 m red edge and narrow NIR
                     ("B11", "B12"),                 # 20 m SWIR
                     ("B01", "B09", "B10"))          # 60 m aerosol, water vapour, cirrus
_LANDSAT_TM_GROUPS = (("B1", "B2", "B3", "B4"),      # Landsat 4-7: visible and NIR
                      ("B5", "B7"),                  # SWIR
                      ("B6",),                       # thermal
                      ("B8",))                       # panchromatic (ETM+)
_LANDSAT_OLI_GROUPS = (("B2", "B3", "B4", "B5"),     # Landsat 8-9: visible and NIR
                       ("B6", "B7"),                 # SWIR
                       ("B1", "B9"),                 # coastal aerosol, cirrus
                       ("B10", "B11"),               # thermal
                       ("B8",))                      # panchromatic
# Landsat 4-7 and 8-9 share names B1..B8 with other meanings; the sensor (or a B9..B11 band)
# tells them apart, and 4-7 is the guess when nothing does.
_TABLES = {"sentinel2": _SENTINEL2_GROUPS, "landsat_tm": _LANDSAT_TM_GROUPS,
           "landsat_oli": _LANDSAT_OLI_GROUPS}
_SENSOR_TABLES = {"sentinel2_l1c": "sentinel2", "sentinel2_l2a": "sentinel2", "landsat5": "landsat_tm",
                  "landsat7": "landsat_tm", "landsat8": "landsat_oli", "landsat9": "landsat_oli"}


def even_band_groups(count: int) -> list[list[int]]:
    """Contiguous groups of about three bands, at least two groups when there are two bands or
    more (with a single group there is no other band to predict from). Neighbouring bands in a
    file are usually neighbours in wavelength, so contiguous groups are spectrally coherent."""
    n_groups = min(count, max(2, round(count / 3)))
    return [[int(i) for i in part] for part in np.array_split(np.arange(count), n_groups)]


def default_band_groups(band_names, sensor: str | None = None) -> list[list[int]]:
    """Band groups (lists of indices into ``band_names``) for known sensors, else an even split.

    Sentinel-2 names (``B01``..``B12``, ``B8A``) are grouped as SatMAE does, in whatever order the
    data has them (EuroSAT's B8A-last or the canonical order). Landsat names (``B1``..``B11``) use
    the Landsat 4-7 grouping unless ``sensor`` is ``landsat8``/``landsat9`` or a band only those
    have (B9..B11) is present. Names the table does not know form one last group. With no known
    name at all the bands are split evenly (:func:`even_band_groups`).

    >>> default_band_groups(["B1", "B2", "B3", "B4", "B5", "B7"])
    [[0, 1, 2, 3], [4, 5]]
    """
    names = [str(n).upper() for n in band_names]
    table_name = _SENSOR_TABLES.get(sensor or "")
    if table_name is None:
        known = {name: sum(n in g for g in table for n in names) for name, table in _TABLES.items()}
        if {"B9", "B10", "B11"} & set(names):
            known["landsat_tm"] = 0
        table_name = max(known, key=known.get)  # the first table among equals: S2, then TM
        if known[table_name] == 0:
            return even_band_groups(len(names))
    groups = [[names.index(n) for n in group if n in names] for group in _TABLES[table_name]]
    grouped = {i for g in groups for i in g}
    unknown = [i for i in range(len(names)) if i not in grouped]
    return [g for g in groups + [unknown] if g]


def _checked_groups(band_groups, in_chans: int) -> list[list[int]]:
    """``band_groups`` as plain int lists (JSON-able for the checkpoint card), or a ValueError."""
    groups = [[int(i) for i in group] for group in band_groups]
    if not groups or not all(groups):
        raise ValueError(f"band_groups must be a non-empty list of non-empty lists of band indices; got {band_groups}")
    for group in groups:
        if len(set(group)) != len(group) or min(group) < 0 or max(group) >= in_chans:
            raise ValueError(f"band group {group} must hold distinct band indices 0..{in_chans - 1} "
                             f"(the encoder has {in_chans} bands)")
    return groups


class GroupedEncoder(Encoder):
    """A ViT :class:`Encoder` whose tokens are (band group x patch).

    Each group has its own patch embedding (a Conv2d over the group's bands with kernel = stride =
    p); a token gets the fixed sine-cosine code of its patch position (shared by the groups) plus a
    learned code of its group. The timm ViT's class token, blocks and norms are the shared
    transformer; its own all-band patch embedding and learned positions are replaced, so they are
    removed. ``feature_map`` averages the G group tokens at each patch, so ``embed`` gets one
    vector per place as from any encoder, and ``spec`` stays the plain encoder's spec.
    """

    def __init__(self, band_groups, **spec):
        super().__init__(**spec)
        if not self.is_vit:
            raise ValueError("GroupedEncoder needs a ViT (its tokens are band groups x patches); "
                             f"got {self.spec['name']!r}: use encoder='vit_tiny' or 'vit_small'")
        self.band_groups = _checked_groups(band_groups, self.in_chans)
        self.model.patch_embed = None
        self.model.pos_embed = None  # timm's _pos_embed then only prepends the prefix tokens
        self.group_patch_embeds = nn.ModuleList(
            nn.Conv2d(len(group), self.dim, kernel_size=self.patch_size, stride=self.patch_size)
            for group in self.band_groups)
        # "pos_embed" in the name: no weight decay, like the ViT's own positions.
        self.group_pos_embed = nn.Parameter(torch.zeros(len(self.band_groups), self.dim))
        nn.init.normal_(self.group_pos_embed, std=0.02)

    def group_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, G, L, D) tokens with patch positions and group codes added."""
        h, w = x.shape[2] // self.patch_size, x.shape[3] // self.patch_size
        tokens = torch.stack([embed(x[:, group]).flatten(2).transpose(1, 2)  # (B, L, D) each
                              for embed, group in zip(self.group_patch_embeds, self.band_groups)],
                             dim=1)  # (B, G, L, D)
        return tokens + cached_positions(self, (h, w), tokens)[None, None] + self.group_pos_embed[None, :, None]

    def transform(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N', D) tokens (any subset, positions already added) -> (B, P + N', D) through the
        prefix tokens, blocks and final norm of the ViT."""
        vit = self.model
        x = vit._pos_embed(tokens)  # (B, P + N', D): prepends the class token
        x = vit.norm_pre(vit.patch_drop(x))
        return vit.norm(vit.blocks(x))

    def feature_map(self, x: torch.Tensor, layers: str = "last") -> torch.Tensor:
        """(B, C, H, W) -> (B, D, h, w): the mean of the group tokens at each patch;
        ``layers="all"``: (B, D * (depth + 2), h, w), that mean at every stage."""
        check_layers(layers, self)
        B, _, H, W = x.shape
        h, w = H // self.patch_size, W // self.patch_size
        tokens = self.group_tokens(x)  # (B, G, L, D)
        G, L = tokens.shape[1:3]

        def per_patch(out):  # (B, P + G*L, D) -> (B, D, h, w)
            out = out[:, self.num_prefix_tokens:].reshape(B, G, L, self.dim).mean(dim=1)  # (B, L, D)
            return out.transpose(1, 2).reshape(B, self.dim, h, w)
        if layers == "last":
            return per_patch(self.transform(tokens.flatten(1, 2)))
        vit = self.model
        stages = self.stages(vit.norm_pre(vit.patch_drop(vit._pos_embed(tokens.flatten(1, 2)))))
        return torch.cat([per_patch(t) for t in stages], dim=1)


class SpectralMAE(nn.Module):
    """Masked autoencoding over band-group tokens: learns how bands relate (see the module doc).

    Args:
        encoder: a ViT :class:`Encoder`; it is rebuilt as a :class:`GroupedEncoder` with the same
            spec (the card keeps the plain spec, so ``load_model`` rebuilds the same model).
        band_groups: lists of band indices; ``None`` splits evenly (:func:`even_band_groups`).
            Through ``eossl.pretrain`` the default comes from the data's band names instead
            (:meth:`check_data`, :func:`default_band_groups`).
        masking: ``"random"`` hides ``mask_ratio`` of all tokens, independently across groups;
            ``"withhold"`` hides ``mask_ratio`` of the groups (at least one, never all) at every
            patch, so the model rebuilds whole groups from the others.
        norm_pix_loss: each hidden token's target is standardised by its own mean and spread.
    """

    method = "spectral_mae"
    input_kind = "image"
    MASKINGS = ("random", "withhold")

    def __init__(self, encoder: Encoder, band_groups=None, masking: str = "random",
                 mask_ratio: float = 0.75, decoder_dim: int = 128, decoder_depth: int = 2,
                 decoder_heads: int = 4, norm_pix_loss: bool = True):
        super().__init__()
        if not encoder.is_vit:
            raise ValueError("the spectral MAE needs a ViT encoder (its tokens are band groups x "
                             f"patches); got {encoder.spec['name']!r}: use encoder='vit_tiny' or 'vit_small'")
        if masking not in self.MASKINGS:
            raise ValueError(f"masking must be one of {self.MASKINGS}, got {masking!r}")
        if not 0.0 < mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be between 0 and 1, got {mask_ratio}")
        if band_groups is None:
            band_groups = even_band_groups(encoder.in_chans)
        self.encoder = GroupedEncoder(band_groups, **encoder.spec)
        self.band_groups = self.encoder.band_groups
        if masking == "withhold" and len(self.band_groups) < 2:
            raise ValueError("masking='withhold' hides whole band groups and needs at least two; "
                             f"got band_groups={self.band_groups}")
        self.config = dict(band_groups=self.band_groups, masking=masking, mask_ratio=mask_ratio,
                           decoder_dim=decoder_dim, decoder_depth=decoder_depth,
                           decoder_heads=decoder_heads, norm_pix_loss=norm_pix_loss)
        self.masking, self.mask_ratio, self.norm_pix_loss = masking, mask_ratio, norm_pix_loss
        self.patch_size = p = self.encoder.patch_size

        self.decoder_embed = nn.Linear(self.encoder.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_group_pos_embed = nn.Parameter(torch.zeros(len(self.band_groups), decoder_dim))
        self.decoder_blocks = nn.ModuleList(
            [Block(decoder_dim, decoder_heads, mlp_ratio=4.0) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        # One head per group: a token rebuilds only its own group's bands.
        self.decoder_preds = nn.ModuleList(nn.Linear(decoder_dim, len(group) * p * p)
                                           for group in self.band_groups)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.decoder_group_pos_embed, std=0.02)

    @classmethod
    def check_data(cls, arrays, config: dict) -> None:
        """Refuse band groups that name bands the data lacks. Without ``band_groups`` in
        ``config``, fill them in from the data's band names and sensor: the trainer builds the
        method from this same dict, so the card records the groups the model was trained with."""
        names = arrays[0]["band"].values.tolist()
        groups = config.get("band_groups")
        if groups is None:
            config["band_groups"] = default_band_groups(names, arrays[0].attrs.get("sensor"))
            return
        needed = max((max(group) for group in groups if group), default=-1) + 1
        if needed > len(names):
            raise DataError(f"band_groups {groups} use band index {needed - 1}, so they need at least "
                            f"{needed} bands, but the data has {len(names)} ({names}); band indices "
                            "count from 0 in the data's band order")

    # ------------------------------------------------------------------ shapes

    def patchify(self, imgs: torch.Tensor) -> torch.Tensor:
        """(B, c, H, W) -> (B, L, c*p*p), each token flattened as (band, row, column)."""
        return F.unfold(imgs, kernel_size=self.patch_size, stride=self.patch_size).transpose(1, 2)

    def hide(self, tokens: torch.Tensor):
        """Choose the hidden tokens. tokens (B, G, L, D) -> kept (B, N_keep, D), mask (B, G, L)
        with 1 = hidden, ids_restore (B, G*L) to put (kept, hidden) back in token order."""
        B, G, L, D = tokens.shape
        if self.masking == "random":
            kept, mask, ids_restore = MAE.random_masking(tokens.flatten(1, 2), self.mask_ratio)  # (B, N_keep, D)
            return kept, mask.reshape(B, G, L), ids_restore
        # withhold: mask whole groups, i.e. MAE's masking with a group's L tokens as one item
        n_hidden = min(G - 1, max(1, round(G * self.mask_ratio)))
        kept, group_mask, group_restore = MAE.random_masking(tokens.flatten(2), n_hidden / G)  # (B, G_keep, L*D)
        kept = kept.reshape(B, -1, D)                                       # (B, G_keep*L, D)
        mask = group_mask[:, :, None].expand(B, G, L)                       # (B, G, L)
        within = torch.arange(L, device=tokens.device)
        ids_restore = (group_restore[:, :, None] * L + within).flatten(1)   # (B, G*L)
        return kept, mask, ids_restore

    # ------------------------------------------------------------------ stages

    def forward_encoder(self, imgs: torch.Tensor):
        """(B, C, H, W) -> latent (B, P + N_keep, D), mask (B, G, L), ids_restore (B, G*L)."""
        tokens = self.encoder.group_tokens(imgs)  # (B, G, L, D)
        kept, mask, ids_restore = self.hide(tokens)
        return self.encoder.transform(kept), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor, grid) -> list[torch.Tensor]:
        """Mask tokens in the hidden places, positions and group codes, decoder blocks; returns
        one prediction per group, (B, L, c_g*p*p) with c_g the group's band count."""
        P = self.encoder.num_prefix_tokens
        x = self.decoder_embed(latent)  # (B, P + N_keep, E)
        B, _, E = x.shape
        G, (h, w) = len(self.band_groups), grid
        n_hidden = ids_restore.shape[1] - (x.shape[1] - P)
        tokens = torch.cat([x[:, P:], self.mask_token.expand(B, n_hidden, E)], dim=1)  # (B, N, E) shuffled
        tokens = take_tokens(tokens, ids_restore)                                       # (B, N, E) in order
        tokens = (tokens.reshape(B, G, h * w, E)                                       # (B, G, L, E)
                  + cached_positions(self, grid, tokens)[None, None]
                  + self.decoder_group_pos_embed[None, :, None])
        x = torch.cat([x[:, :P], tokens.flatten(1, 2)], dim=1)  # (B, P + N, E)
        for block in self.decoder_blocks:
            x = block(x)
        x = self.decoder_norm(x)[:, P:].reshape(B, G, h * w, E)  # (B, G, L, E)
        return [head(x[:, g]) for g, head in enumerate(self.decoder_preds)]

    def forward_loss(self, imgs: torch.Tensor, preds: list[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the hidden tokens, each token's error averaged over its own
        group's pixels (so every hidden token weighs the same, whatever its group's band count)."""
        errors = []
        for group, pred in zip(self.band_groups, preds):
            target = self.patchify(imgs[:, group])  # (B, L, c_g*p*p)
            if self.norm_pix_loss:
                target = norm_pix_target(target)
            errors.append(((pred.float() - target) ** 2).mean(dim=-1))  # (B, L)
        per_token = torch.stack(errors, dim=1)  # (B, G, L)
        return (per_token * mask).sum() / mask.sum().clamp(min=1)

    def forward(self, imgs: torch.Tensor):
        """(B, C, H, W) -> loss, per-group predictions, mask (B, G, L), latent."""
        grid = (imgs.shape[2] // self.patch_size, imgs.shape[3] // self.patch_size)
        latent, mask, ids_restore = self.forward_encoder(imgs)
        preds = self.forward_decoder(latent, ids_restore, grid)
        return self.forward_loss(imgs, preds, mask), preds, mask, latent

    # ------------------------------------------------------------------ trainer interface

    def training_step(self, imgs: torch.Tensor):
        """One batch -> (loss, logs); ``emb_std`` of the mean visible token per image."""
        loss, _, mask, latent = self.forward(imgs)
        pooled = latent[:, self.encoder.num_prefix_tokens:].mean(dim=1)  # (B, D)
        return loss, {"emb_std": embedding_std(pooled)}


METHODS = {
    "spectral_mae": (SpectralMAE, "Spectral masked autoencoder (SatMAE): rebuild hidden band groups "
                     "of a patch from the other groups and places, learning how bands relate",
                     dict(name="vit_tiny", patch_size=8, depth=4)),
}
