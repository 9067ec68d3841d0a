"""Checkpoint folders: weights in safetensors, everything else in a ``state.pt`` that loads with
``torch.load(weights_only=True)`` (tensors, numbers, strings, lists and dicts only; nothing is unpickled).

Layout (the pointers ``latest`` and ``best`` beside these folders belong to ``genkit.Run``)::

    RUN/checkpoints/step-00001000/generator.safetensors
                                 discriminator.safetensors
                                 generator_ema.safetensors   (when --ema is on)
                                 state.pt                    (step, optimizers, RNG states, data position,
                                                              config, the domain's per-run state, and the
                                                              weights' checksums: ``weights_digest``)

A checkpoint folder is written under a temporary name and renamed into place, so an interrupted save never
leaves a half-written checkpoint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
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


def weights_digest(weights: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """The SHA-256 (hex) of a set of weights' content: each tensor's name, dtype, shape and bytes, in name order.

    It is the same for a module and for the safetensors file ``save_model`` wrote from it: tensors that share
    storage (tied weights) count once, under the name that sorts first, which is the one safetensors keeps.
    Checkpoints record it for every weights file (verified on load) and provenance records carry the generator's.
    """
    tensors = weights.state_dict() if isinstance(weights, torch.nn.Module) else weights
    h = hashlib.sha256()
    seen: set[tuple[Any, Any, str]] = set()
    for name in sorted(tensors):
        t = tensors[name].detach()
        key = (t.untyped_storage().data_ptr() + t.storage_offset() * t.element_size(), t.numel(), str(t.dtype))
        if t.numel() and key in seen:  # a tied weight: the same tensor under a second name
            continue
        seen.add(key)
        t = t.to("cpu").contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """``weights_digest`` of a safetensors file's tensors."""
    from safetensors.torch import load_file

    try:
        return weights_digest(load_file(str(path)))
    except FileNotFoundError:
        raise GenkitError(f"{path}: weights file not found") from None
    except Exception as exc:
        raise GenkitError(f"{path}: cannot read weights ({str(exc).splitlines()[0][:200]})") from None


def save_checkpoint(root: Path, step: int, models: dict[str, torch.nn.Module], state: dict[str, Any]) -> Path:
    """Write ``root/step-NNNNNNNN`` atomically and return it; ``state["checksums"]`` gets each weights file's
    ``weights_digest``."""

    def write(tmp: Path) -> None:
        tmp.mkdir()
        checksums = {}
        for key, module in models.items():
            save_model(module, str(tmp / MODEL_FILES[key]))
            checksums[MODEL_FILES[key]] = weights_digest(module)
        torch.save({**state, "checksums": checksums}, tmp / STATE_FILE)

    path = Path(root) / step_dir_name(step)
    try:
        return atomic_write(path, write)
    except (OSError, RuntimeError) as exc:  # a full disk reaches torch.save as RuntimeError("... file write failed")
        import errno
        import shutil

        try:
            full = shutil.disk_usage(root).free < 64 * 2**20 or getattr(exc, "errno", None) == errno.ENOSPC
        except OSError:
            full = False
        why = "no space left on the device" if full else f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"
        raise GenkitError(f"cannot write the checkpoint {path} ({why}); nothing half-written was kept and the "
                          "previous checkpoint is intact") from None


def load_state(ckpt: Path) -> dict[str, Any]:
    path = ckpt / STATE_FILE
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise GenkitError(f"{path}: checkpoint state not found") from None
    except Exception as exc:  # corrupt or foreign file
        raise GenkitError(f"{path}: not a readable genkit checkpoint state ({exc.__class__.__name__})") from None


def verify_weights(path: Path, state: Mapping[str, Any]) -> None:
    """Raise ``GenkitError`` when the weights file ``path`` does not have the checksum its checkpoint's ``state``
    recorded (a corrupt or edited file). Checkpoints written before genkit 0.3 record none: nothing to check."""
    expected = state.get("checksums", {}).get(Path(path).name)
    if expected is not None and file_digest(path) != expected:
        raise GenkitError(f"{path}: the weights do not match the checksum recorded when they were saved "
                          "(the file is corrupt or was modified)")


def load_weights(module: torch.nn.Module, path: Path, device: torch.device | str = "cpu",
                 ignore: Iterable[str] = (), state: Mapping[str, Any] | None = None) -> None:
    """Load safetensors weights into ``module``; keys in ``ignore`` (held by files of an earlier version) are skipped.
    With the checkpoint's ``state``, the file's checksum is verified first (``verify_weights``)."""
    if state is not None:
        verify_weights(path, state)
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
