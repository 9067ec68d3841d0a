"""Checkpoint folders: weights in safetensors, everything else in a ``state.pt`` that loads with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only; nothing is unpickled).

Layout (the pointers ``latest`` and ``best`` beside these folders belong to ``genkit.Run``)::

    RUN/checkpoints/step-00001000/generator.safetensors
                                 discriminator.safetensors
                                 generator_ema.safetensors   (when --ema is on)
                                 state.pt                    (step, optimizers, RNG states, data position,
                                                              config, the domain's per-run state)

A checkpoint folder is written under a temporary name and renamed into place, so an interrupted save never
leaves a half-written checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model

from .errors import GenkitError
from .files import atomic_write

MODEL_FILES = {"generator": "generator.safetensors", "discriminator": "discriminator.safetensors",
               "generator_ema": "generator_ema.safetensors"}
STATE_FILE = "state.pt"


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def save_checkpoint(root: Path, step: int, models: dict[str, torch.nn.Module], state: dict[str, Any]) -> Path:
    """Write ``root/step-NNNNNNNN`` atomically and return it."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        for key, module in models.items():
            save_model(module, str(tmp / MODEL_FILES[key]))
        torch.save(state, tmp / STATE_FILE)

    return atomic_write(Path(root) / step_dir_name(step), write)


def load_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GenkitError(f"{path}: checkpoint state not found") from None
    except Exception as exc:  # corrupt or foreign file
        raise GenkitError(f"{path}: not a readable genkit checkpoint state ({exc.__class__.__name__})") from None


def load_weights(module: torch.nn.Module, path: Path, device: torch.device | str = "cpu",
                 ignore: Iterable[str] = ()) -> None:
    """Load safetensors weights into ``module``; keys in ``ignore`` (held by files of an earlier version) are skipped."""
    try:
        missing, unexpected = load_model(module, str(path), strict=False, device=str(device))
    except FileNotFoundError:
        raise GenkitError(f"{path}: weights file not found") from None
    except Exception as exc:
        raise GenkitError(f"{path}: cannot load weights ({str(exc).splitlines()[0][:200]})") from None
    unexpected = [k for k in unexpected if k not in set(ignore)]
    if missing or unexpected:
        raise GenkitError(f"{path}: weights do not match the model (missing {sorted(missing)[:3]}, "
                          f"unexpected {sorted(unexpected)[:3]})")


def check_state_value(value: Any, key: str) -> None:
    """Refuse (naming ``key``) what ``torch.load(weights_only=True)`` could not read back."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_state_value(v, f"{key}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise GenkitError(f"domain state key {key}.{k!r} is not a string or an integer")
            check_state_value(v, f"{key}.{k}")
        return
    raise GenkitError(f"domain state {key!r} is a {type(value).__name__}; a checkpoint holds only tensors, numbers, "
                      "strings, lists and dicts (serialise it in Domain.state_dict)")
