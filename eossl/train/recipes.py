"""Recipes: the settings that learn best for a budget and the data, picked when no method is named.

``eossl.pretrain(data, minutes=10)`` with no ``method`` uses a recipe: method, encoder size, patch
size, view size, batch size, learning rate, sampling and readout, all chosen by measurement
(``benchmarks/bench_quality.py``), not by taste. ``eossl.recipes()`` lists them with what each
reached in that benchmark. Anything passed to ``pretrain`` explicitly wins over the recipe.

Why these settings (from the benchmark's exploration; numbers in the README):
- the method: place contrast (:mod:`eossl.models.place`), because its date pairs teach what stays
  put across seasons; MAE, SimCLR and the rest tied their random weights on CPU minutes;
- 4 px patches on 32 px views: 64 tokens per view, enough grid for small chips; 8 px patches on
  the same budget leave 16 tokens and learn less;
- a small ViT (2 blocks, width 64): on 2 CPU cores it takes ~4x more steps than ViT-tiny/8 with 6
  blocks in the same minutes, and in short budgets steps matter more than width;
- ``balance="sources"``: every source equally often, so the small BigEarthNet patches and the
  Slovenia stack are seen as often as each large OSCD city;
- readout ``"mean"``: the mean of the last block's tokens, chosen on a selection set that is not
  the reported one (16 px chips of the Slovenia stack with their majority land cover): there the
  mean probed 1-2 points above the mean and std of the tokens. On EuroSAT the mean and std is
  higher (see the README); we report the choice the selection set made;
- ``dense_weight=1`` (``cpu_base``): a token-level term beside the place contrast
  (:func:`eossl.models.place.dense_nt_xent`): each token of one date must find the token over the
  same ground on the other date among that place's tokens. The pooled contrast alone says nothing
  about single tokens, and change detection compares single tokens; with the term the OSCD change
  AUC of the last block rose from 0.861 to 0.870 (mean of 7 cities), the selection set's probes
  moved +1.9 / +0.3 points at 5 / 10 labels and -3.9 at 1 label (a weak set: two classes), at
  ~25 % fewer steps in the same minutes.
"""

from __future__ import annotations

import pandas as pd

from eossl.errors import DataError, ParameterError

# What each recipe reached in benchmarks/bench_quality.py on the 199 EuroSAT-MS chips (logistic
# probe, 5 labels per class, 10 draws): written here by hand from the benchmark's table, so that
# eossl.recipes() can show it without running anything.
RECIPES = {
    "cpu_small": dict(
        description="place contrast, ViT with 4 px patches, 2 blocks, width 64, 32 px views: "
                    "learns within minutes on a laptop CPU",
        method="place_contrast",
        encoder=dict(name="vit_tiny", patch_size=4, depth=2, embed_dim=64, num_heads=2),
        img_size=32, batch_size=64, lr=2e-3, balance="sources", readout="mean",
        method_config=dict(max_shift=8, temperature=0.2),
        benchmark="not measured yet",
    ),
    "cpu_base": dict(
        description="place contrast with a token-level term, ViT with 4 px patches, 4 blocks, width 96, "
                    "32 px views: for budgets of 5 minutes or more",
        method="place_contrast",
        encoder=dict(name="vit_tiny", patch_size=4, depth=4, embed_dim=96, num_heads=3),
        img_size=32, batch_size=64, lr=1e-3, balance="sources", readout="mean",
        method_config=dict(max_shift=8, temperature=0.2, dense_weight=1.0),
        benchmark="EuroSAT-MS logistic@5 74.6 % (band stats 67.4, random weights 54.8); "
                  "10 min on 2 CPU cores, 2026-12-07",
    ),
}
DEFAULT_RECIPE = "cpu_base"
# Below this budget the smaller encoder learns more: it takes ~3x the steps in the same time, and
# in 150 s it was ahead; after 10 minutes it had stopped improving and the larger one was ahead.
SMALL_BUDGET_MINUTES = 5.0


def default_recipe_name(minutes: float | None) -> str:
    """``cpu_base`` for a time budget of 5 minutes or more, else ``cpu_small`` (also for step
    budgets, whose length in time is unknown up front)."""
    return DEFAULT_RECIPE if minutes is not None and minutes >= SMALL_BUDGET_MINUTES else "cpu_small"


def recipes() -> pd.DataFrame:
    """The recipes ``pretrain`` can use, one row each: method, encoder, view size, batch, lr, readout
    and the result each reached in ``benchmarks/bench_quality.py``."""
    rows = []
    for name, r in RECIPES.items():
        enc = r["encoder"]
        rows.append({"recipe": name, "default": {"cpu_small": "budgets under 5 min", "cpu_base": "5 min or more"}.get(name, ""), "method": r["method"],
                     "encoder": f"{enc['name']}/{enc['patch_size']}, depth {enc.get('depth', '-')}, "
                                f"width {enc.get('embed_dim', '-')}",
                     "img_size": r["img_size"], "batch_size": r["batch_size"], "lr": r["lr"],
                     "readout": r["readout"], "benchmark": r["benchmark"], "description": r["description"]})
    return pd.DataFrame(rows).set_index("recipe")


def smallest_side(arrays) -> int:
    """The smallest height or width among the training arrays (chips, scenes, stacks)."""
    return min(min(da.sizes["y"], da.sizes["x"]) for da in arrays)


def resolve_recipe(arrays, name: str | None = None, minutes: float | None = None) -> dict:
    """The settings of recipe ``name`` (default: :func:`default_recipe_name` for the budget) fitted
    to ``arrays``.

    The view size shrinks for data smaller than the recipe's window (view + shift), in steps of the
    patch size, so 24 px chips still train; the band count comes from the data at build time, so any
    number of bands works. Raises :class:`DataError` when the data is too small for any view.
    """
    name = name or default_recipe_name(minutes)
    if name not in RECIPES:
        raise ParameterError(f"unknown recipe {name!r}; available: {sorted(RECIPES)} (see eossl.recipes())")
    r = {k: (dict(v) if isinstance(v, dict) else v) for k, v in RECIPES[name].items()
         if k not in ("description", "benchmark")}
    patch = r["encoder"]["patch_size"]
    shift = r["method_config"].get("max_shift", 0)
    side = smallest_side(arrays)
    if side < r["img_size"] + shift:
        shift = min(shift, side // 5)          # keep most of a small image for the view itself
        view = (side - shift) // patch * patch
        if view < 2 * patch:
            raise DataError(f"the data is {side} px on its smallest side; recipe {name!r} needs at least "
                            f"{2 * patch + 1} px (two {patch} px patches and a shift). Use larger chips "
                            "or scenes, or name a method and img_size yourself")
        r["img_size"], r["method_config"]["max_shift"] = view, shift
    r["recipe"] = name
    return r
