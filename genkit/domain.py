"""The protocol a domain implements, and the small data types it exchanges with the engine.

A domain (image, audio, text, or a third party's) is a ``Domain`` subclass registered through the
``genkit_register_domains`` hook. The engine owns the adversarial loop; the domain owns everything
that knows what a sample *is*: its data, its two networks, its latent distribution, and how its
samples are written to files. Nothing in the engine names a domain.

This module imports no torch, so that ``genkit --help`` stays fast; the methods that build models
import torch inside.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass(frozen=True)
class Option:
    """A domain option: becomes ``--name`` on ``genkit run DOMAIN`` and a key of the ``[DOMAIN]`` config table."""

    name: str  # python name, e.g. "size"; the flag is --size, the config key "size"
    default: Any  # also fixes the type: bool, int, float or str
    help: str = ""
    choices: Sequence[Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass
class Data:
    """What ``Domain.load_data`` returns.

    ``train`` is a map-style dataset whose items are ``(x, cond)`` pairs (``cond`` a class index or any
    tensor; ignored when ``conditional`` is false). A ``torch.utils.data.TensorDataset`` is fastest: the
    engine then gathers whole batches with one index operation.
    """

    train: Any
    conditional: bool = False
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    test: Any = None
    transform: Callable[[Any], Any] | None = None  # applied to each real batch on the device (e.g. uint8 -> float)
    source: str = ""  # a human-readable description of where the data came from
    extra: dict[str, Any] = field(default_factory=dict)  # domain-private (a tokenizer, a sample rate, ...)


@dataclass
class StepContext:
    """Everything a domain's optional generator-loss or evaluation code may need, in one object."""

    generator: "nn.Module"
    discriminator: "nn.Module"
    loss: Any  # the genkit.Loss in use
    step: int
    total_steps: int
    batch_size: int
    device: "torch.device"
    rng: "torch.Generator"  # the engine's latent RNG: draw from it to keep runs exactly resumable
    options: Mapping[str, Any]
    data: Data
    real: "torch.Tensor | None" = None
    cond: "torch.Tensor | None" = None


class Domain:
    """Base class of a domain. Override the methods marked *required*; the rest have defaults.

    ``options`` are the domain's own settings (model size, data shape, ...). ``recipe`` holds the domain's
    default training settings (keys of ``genkit.config.TrainConfig``: loss, lr_g, steps, ...). ``presets``
    name alternative bundles of both (``{"paper": {"steps": ..., "model_size": ...}}``); every domain has
    the preset ``default``.
    """

    name: str = ""
    summary: str = ""
    paper: str = ""
    options: tuple[Option, ...] = ()
    recipe: dict[str, Any] = {}
    presets: dict[str, dict[str, Any]] = {}
    best_metric: tuple[str, str] | None = None  # (metric from evaluate, "min" or "max"): marks checkpoints/best
    # Values for options added after a run was saved: a saved config.toml that lacks one of these keys was
    # written when the option did not exist, and the old behaviour is this value, not today's default.
    legacy_defaults: dict[str, Any] = {}
    sample_ext: str = ""  # extension of the per-sample files genkit sample writes (".png", ".wav", ".txt")

    # -- data ---------------------------------------------------------------------------------------
    def default_data(self, options: Mapping[str, Any]) -> str:
        """The ``--data`` value used when the user gives none (must work offline)."""
        raise NotImplementedError

    def load_data(self, spec: str, options: Mapping[str, Any], *, cache_dir: Path) -> Data:
        """*Required.* Load ``--data SPEC``. Raise ``GenkitError`` naming the path on bad input."""
        raise NotImplementedError

    # -- models -------------------------------------------------------------------------------------
    def build_models(self, options: Mapping[str, Any], data: Data) -> "tuple[nn.Module, nn.Module]":
        """*Required.* Return ``(generator, discriminator)``, freshly initialised under the global seed.

        The generator is called as ``generator(z, cond)`` and the discriminator as
        ``discriminator(x, cond)`` returning one logit per sample (``cond`` is None when unconditional).
        """
        raise NotImplementedError

    def sample_latent(self, n: int, options: Mapping[str, Any], *, rng: "torch.Generator",
                      device: "torch.device") -> "torch.Tensor":
        """*Required.* Draw ``n`` latent vectors from the domain's prior, using ``rng`` only."""
        raise NotImplementedError

    def sample_shape(self, options: Mapping[str, Any], data: Data) -> tuple[int, ...]:
        """The shape of one generated sample (shown by ``genkit info``)."""
        return ()

    # -- the adversarial step (defaults cover continuous domains) ------------------------------------
    def fake(self, generator: "nn.Module", z: "torch.Tensor", cond: "torch.Tensor | None",
             ctx: StepContext) -> "torch.Tensor":
        """The generator's output as the discriminator sees it (differentiable w.r.t. the generator)."""
        return generator(z, cond)

    def generator_loss(self, z: "torch.Tensor", cond: "torch.Tensor | None",
                       ctx: StepContext) -> "torch.Tensor | None":
        """Return a custom generator loss (e.g. REINFORCE), or None to use the registered loss on D(fake)."""
        return None

    def pretrain(self, ctx: StepContext, batches: Callable[[], Any], steps: int,
                 progress: Callable[[int, dict], None]) -> dict[str, float]:
        """Optional phase run once before adversarial training (e.g. maximum likelihood for text)."""
        return {}

    # -- output -------------------------------------------------------------------------------------
    def generate(self, generator: "nn.Module", z: "torch.Tensor",
                 cond: "torch.Tensor | None", options: Mapping[str, Any]) -> "torch.Tensor":
        """Samples for writing to disk (no gradients). Defaults to ``generator(z, cond)``."""
        return generator(z, cond)

    def snapshot_size(self, options: Mapping[str, Any]) -> int:
        """How many samples a snapshot shows (the image domain's 10 x 10 grid is 100)."""
        return 100

    def snapshot_conditions(self, n: int, data: Data) -> "torch.Tensor | None":
        """Conditions for the fixed snapshot batch: by default class ``i % num_classes``."""
        if not data.conditional:
            return None
        import torch

        if data.num_classes <= 0:
            raise NotImplementedError(f"domain {self.name!r} must override snapshot_conditions")
        return torch.arange(n) % data.num_classes

    def write_snapshot(self, samples: "torch.Tensor", cond: "torch.Tensor | None", path: Path,
                       options: Mapping[str, Any], data: Data) -> list[Path]:
        """*Required.* Write one snapshot (a grid, a folder of WAVs...) at ``path`` (no extension); return files."""
        raise NotImplementedError

    def write_samples(self, samples: "torch.Tensor", cond: "torch.Tensor | None", out_dir: Path,
                      options: Mapping[str, Any], data: Data) -> list[Path]:
        """*Required.* Write each sample as its own file in ``out_dir``; return the files."""
        raise NotImplementedError

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        """Optional metrics of ``ctx.generator`` (the EMA copy when on), logged at eval steps and the end."""
        return {}

    def export(self, generator: "nn.Module", run_dir: Path, options: Mapping[str, Any], data: Data) -> list[Path]:
        """Optional: write the trained generator in a domain-native format at the end of a run."""
        return []

    def save_data_meta(self, data: Data, run_dir: Path) -> dict[str, Any]:
        """Describe ``data`` for ``RUN/data.json`` (override to also save e.g. a tokenizer in ``run_dir``)."""
        return default_data_meta(data)

    def load_data_meta(self, meta: Mapping[str, Any], run_dir: Path) -> Data:
        """Rebuild a ``Data`` without its examples from ``save_data_meta``'s output, for sampling."""
        return data_from_meta(meta)

    # -- derived ------------------------------------------------------------------------------------
    def all_presets(self) -> dict[str, dict[str, Any]]:
        return {"default": {}, **self.presets}

    def option_defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def default_data_meta(data: Data) -> dict[str, Any]:
    """What ``genkit sample`` needs to know about the data, as JSON (written to ``RUN/data.json``)."""
    return {
        "conditional": data.conditional,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "source": data.source,
        "extra": {k: v for k, v in data.extra.items() if _jsonable(v)},
    }


def data_from_meta(meta: Mapping[str, Any]) -> Data:
    return Data(train=None, conditional=bool(meta.get("conditional")), num_classes=int(meta.get("num_classes", 0)),
                class_names=list(meta.get("class_names", [])), source=meta.get("source", ""),
                extra=dict(meta.get("extra", {})))
