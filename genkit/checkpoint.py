"""Checkpoints: weights in safetensors, everything else in a ``state.pt`` that loads with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only; nothing is unpickled).

Layout::

    RUN/checkpoints/step-00001000/generator.safetensors
                                 discriminator.safetensors
                                 generator_ema.safetensors   (when --ema is on)
                                 state.pt                    (step, optimizers, RNG states, data position, config)
    RUN/checkpoints/latest                                   (text: the name of the newest folder)

A checkpoint folder is written under a temporary name and renamed into place, and ``latest`` is replaced
atomically, so an interrupted save never leaves a half-written checkpoint behind ``latest``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from .errors import GenkitError

MODEL_FILES = {"generator": "generator.safetensors", "discriminator": "discriminator.safetensors",
               "generator_ema": "generator_ema.safetensors"}
STATE_FILE = "state.pt"
LATEST = "latest"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(root: Path, step: int, models: dict[str, torch.nn.Module], state: dict[str, Any]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for key, module in models.items():
        save_model(module, str(tmp / MODEL_FILES[key]))
    torch.save(state, tmp / STATE_FILE)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    latest_tmp = root / f".{LATEST}.tmp"
    latest_tmp.write_text(final.name + "\n", encoding="utf-8")
    os.replace(latest_tmp, root / LATEST)
    return final


def prune_checkpoints(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints, never the one ``best`` or ``latest`` names."""
    if keep <= 0 or not root.is_dir():
        return []
    protected = {(root / name).read_text(encoding="utf-8").strip() for name in (LATEST, "best") if (root / name).is_file()}
    found = sorted(p for p in root.glob("step-*") if p.is_dir())
    removed = [p for p in found[:-keep] if p.name not in protected]
    for p in removed:
        shutil.rmtree(p)
    return removed


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (a run's ``checkpoints/`` folder), or None."""
    pointer = root / LATEST
    if pointer.is_file():
        candidate = root / pointer.read_text(encoding="utf-8").strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    found = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
    return found[-1] if found else None


def load_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GenkitError(f"{path}: checkpoint state not found") from None
    except Exception as exc:  # corrupt or foreign file
        raise GenkitError(f"{path}: not a readable genkit checkpoint state ({exc.__class__.__name__})") from None


def load_weights(module: torch.nn.Module, path: Path, device: torch.device | str = "cpu") -> None:
    try:
        missing, unexpected = load_model(module, str(path), strict=False, device=str(device))
    except FileNotFoundError:
        raise GenkitError(f"{path}: weights file not found") from None
    except Exception as exc:
        raise GenkitError(f"{path}: cannot load weights ({str(exc).splitlines()[0][:200]})") from None
    if missing or unexpected:
        raise GenkitError(f"{path}: weights do not match the model (missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]})")
