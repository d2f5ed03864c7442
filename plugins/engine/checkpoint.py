"""Training checkpoints in safetensors (weights, optimizer and scheduler tensors) plus JSON.

No pickle anywhere: optimizer state tensors are flattened into a safetensors file and
the rest of the state (hyper-parameters, step counters, data position) goes to JSON.
A checkpoint folder is written next to the old one and swapped in by rename.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from reasonrl.core.io import atomic_write_json

STATE_JSON = "trainer_state.json"


def save_checkpoint(folder: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler, state: dict[str, Any]) -> None:
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name, module in modules.items():
        tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(tensors, str(staging / f"{name}.safetensors"))  # cloned: tied weights may not share storage
    opt_tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
    save_file(opt_tensors, str(staging / "optimizer.safetensors"))
    atomic_write_json(staging / STATE_JSON, {
        "state": state, "optimizer": opt_meta, "scheduler": scheduler.state_dict() if scheduler else None,
    })
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(staging, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, modules: dict[str, torch.nn.Module], optimizer, scheduler) -> dict[str, Any]:
    folder = Path(folder)
    meta = json.loads((folder / STATE_JSON).read_text())
    for name, module in modules.items():
        tensors = load_file(str(folder / f"{name}.safetensors"))
        module.load_state_dict(tensors, strict=False)
    optimizer.load_state_dict(unflatten_optimizer_state(load_file(str(folder / "optimizer.safetensors")), meta["optimizer"]))
    if scheduler is not None and meta["scheduler"] is not None:
        scheduler.load_state_dict(meta["scheduler"])
    return meta["state"]


def has_checkpoint(folder: Path) -> bool:
    return (Path(folder) / STATE_JSON).exists()


def flatten_optimizer_state(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entry in state_dict["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{param_id}.{key}"] = value.contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for flat_key, value in tensors.items():
        param_id, key = flat_key.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, entry in meta["scalars"].items():
        state.setdefault(int(param_id), {}).update(entry)
    return {"state": state, "param_groups": meta["param_groups"]}
