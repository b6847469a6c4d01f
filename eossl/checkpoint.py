"""Checkpoint I/O (every layer may import it): one safetensors file (weights, optimiser state, card) written atomically.

Layout of a run folder::

    runs/x/checkpoint/checkpoint.safetensors   # model.* weights, optim.* state; card + trainer
                                               # state as JSON in the safetensors metadata
    runs/x/checkpoint/card.json                # the same card, for people to read
    runs/x/history.csv                         # one row per logged step

Everything that must agree (weights, card, step, optimiser) lives in the one file, written to a
temporary name and renamed over the old one: a run killed mid-write leaves the previous
checkpoint whole. No pickle is involved anywhere.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from eossl.card import Card
from eossl.errors import CheckpointError
from eossl.outputs import atomic_write_bytes, atomic_write_file

CHECKPOINT_FILE = "checkpoint.safetensors"
CARD_FILE = "card.json"
FORMAT = "eossl-checkpoint/1"


def resolve(path) -> Path:
    """A run folder, a checkpoint folder or the .safetensors file itself -> the file."""
    p = Path(path)
    for candidate in (p, p / CHECKPOINT_FILE, p / "checkpoint" / CHECKPOINT_FILE):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{path}: no eossl checkpoint here (looked for {CHECKPOINT_FILE} in it "
                          "and in its 'checkpoint' folder)")


def save_checkpoint(folder, model: torch.nn.Module, card: dict, optimizer=None,
                    trainer_state: dict | None = None) -> Path:
    """Write ``folder/checkpoint.safetensors`` (+ ``card.json``) atomically; returns the file."""
    folder = Path(folder)
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "card": json.dumps(card)}
    if optimizer is not None:
        state = optimizer.state_dict()
        for idx, entries in state["state"].items():
            for name, value in entries.items():
                t = value if torch.is_tensor(value) else torch.tensor(value)
                tensors[f"optim.{idx}.{name}"] = t.detach().cpu().contiguous()
        meta["optim_groups"] = json.dumps(state["param_groups"])
    if trainer_state is not None:
        meta["trainer"] = json.dumps(trainer_state)
        rng = torch.get_rng_state()
        tensors["rng.torch"] = rng
    # to a temporary name, fsync, rename: a kill mid-write leaves the previous checkpoint whole,
    # and the next save removes the killed write's temporary file
    atomic_write_file(_mkdir(folder) / CHECKPOINT_FILE, lambda tmp: save_file(tensors, tmp, metadata=meta))
    atomic_write_bytes(folder / CARD_FILE, json.dumps(card, indent=2).encode())
    return folder / CHECKPOINT_FILE


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_checkpoint(path, *, optimizer: bool = False) -> dict:
    """Read a checkpoint: ``{"card", "model" (state dict), "trainer", "optim", "rng"}``."""
    file = resolve(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{file}: not an eossl checkpoint (format {meta.get('format')!r})")
            out = {"card": json.loads(meta["card"]), "file": file,
                   "trainer": json.loads(meta["trainer"]) if "trainer" in meta else None,
                   "model": {k[6:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.")}}
            if optimizer:
                state: dict = {}
                for k in f.keys():
                    if k.startswith("optim."):
                        _, idx, name = k.split(".", 2)
                        state.setdefault(int(idx), {})[name] = f.get_tensor(k)
                groups = json.loads(meta["optim_groups"]) if "optim_groups" in meta else None
                out["optim"] = {"state": state, "param_groups": groups} if groups else None
                out["rng"] = f.get_tensor("rng.torch") if "rng.torch" in f.keys() else None
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        if isinstance(err, CheckpointError):
            raise
        raise CheckpointError(f"{file}: damaged or truncated checkpoint ({err}); "
                              "use an earlier copy or train again") from None
    out["card"] = Card.from_dict(out["card"], source=file)  # a hand-edited card fails here, named
    return out


def read_card(path) -> Card:
    """Only the card of a checkpoint (cheap: reads the header, not the weights)."""
    file = resolve(path)
    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{file}: damaged or truncated checkpoint ({err})") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not an eossl checkpoint")
    try:
        card = json.loads(meta.get("card", ""))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{file}: damaged checkpoint: its card is not JSON ({err})") from None
    return Card.from_dict(card, source=file)
