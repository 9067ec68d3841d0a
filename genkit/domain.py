"""The protocol a domain implements, and the small data types it exchanges with the engine.

A domain (image, audio, text, or a third party's) is a ``Domain`` subclass registered through the
``genkit_register_domains`` hook. The engine owns the adversarial loop; the domain owns everything
that knows what a sample *is*: its data, its two networks, its latent distribution, and how its
samples are written to files. Nothing in the engine names a domain.

Where each kind of state lives (docs/architecture.md):

- settings: the domain's ``Options`` dataclass (typed, validated, saved in ``RUN/config.toml``);
- what the data is: ``Data`` (its description is saved in ``RUN/data.json``);
- per-run state the domain computes (normalisation statistics, a tokenizer, a baseline's results):
  ``Data.state``, saved with every checkpoint through ``Domain.state_dict`` and restored through
  ``Domain.load_state_dict`` on resume and when a run is opened for sampling;
- in-memory helpers that are rebuilt at each load (labels, an oracle model): ``Data.extra``, never saved.

This module imports no torch, so that ``genkit --help`` stays fast; the methods that build models
import torch inside.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn


@dataclass(frozen=True)
class Option:
    """*Deprecated* (declare an ``Options`` dataclass with ``genkit.option`` fields instead).

    A domain option of the first plugin API: ``Option(name, default, help, choices)``. A domain that still
    declares ``options = (Option(...), ...)`` keeps working; its methods receive a typed object that can also
    be read as a mapping (``options["name"]``).
    """

    name: str
    default: Any
    help: str = ""
    choices: Sequence[Any] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


@dataclass(frozen=True)
class NoOptions:
    """The options of a domain that has none."""


@dataclass
class Data:
    """What ``Domain.load_data`` returns.

    ``train`` is a map-style dataset whose items are ``(x, cond)`` pairs (``cond`` a class index or any
    tensor; ignored when ``conditional`` is false; it may be None or missing when unconditional). A
    ``torch.utils.data.TensorDataset`` is fastest: the engine then gathers whole batches with one index
    operation. ``conditional``, ``num_classes``, ``class_names`` and ``source`` are saved in ``RUN/data.json``;
    ``state`` with every checkpoint (tensors, numbers, strings, lists and dicts of those); ``extra`` never.
    """

    train: Any
    conditional: bool = False
    num_classes: int = 0
    class_names: list[str] = field(default_factory=list)
    test: Any = None
    transform: Callable[[Any], Any] | None = None  # applied to each real batch on the device (e.g. uint8 -> float)
    source: str = ""  # a human-readable description of where the data came from
    state: dict[str, Any] = field(default_factory=dict)  # per-run domain state, saved with every checkpoint
    extra: dict[str, Any] = field(default_factory=dict)  # in-memory helpers, rebuilt at each load, never saved
    cond_dim: int = 0  # > 0 (set by genkit under --condition SOURCE): the models take a (B, cond_dim) condition


@dataclass
class StepContext:
    """Everything a domain's step, phase or evaluation code may need, in one object.

    ``generator`` is the trained generator in the step and in phases, and the sampling generator (the EMA
    copy under ``--ema``) in ``evaluate``. ``device`` is where models, samples and ``rng`` live.
    """

    generator: nn.Module
    discriminator: nn.Module
    loss: Any  # the genkit.Loss in use
    step: int
    total_steps: int
    batch_size: int
    device: torch.device
    rng: torch.Generator  # the engine's latent RNG: draw from it to keep runs exactly resumable
    options: Any  # the domain's Options instance
    data: Data
    real: torch.Tensor | None = None
    cond: torch.Tensor | None = None
    cache_dir: Path | None = None  # where a domain keeps derived files (GENKIT_CACHE), e.g. a reference classifier

    @classmethod
    def create(cls, config: Any, generator: nn.Module, discriminator: nn.Module, loss: Any,
               device: torch.device, rng: torch.Generator, data: Data, step: int = 0,
               cache_dir: Path | None = None) -> StepContext:
        """The context of a run with resolved ``config`` (a ``genkit.config.RunConfig``)."""
        from .run import cache_dir as default_cache_dir

        return cls(generator=generator, discriminator=discriminator, loss=loss, step=step,
                   total_steps=config.train.steps, batch_size=config.train.batch_size, device=device, rng=rng,
                   options=config.options, data=data, cache_dir=Path(cache_dir or default_cache_dir()))


@dataclass(frozen=True)
class Phase:
    """A training phase a domain runs before adversarial training (stylegan3 keeps a list of phases too).

    The engine calls ``getattr(domain, method)(ctx, batches, steps, control)`` with ``--pretrain-steps`` steps,
    where ``batches()`` returns the next real ``(x, cond)`` batch and ``control`` is a :class:`PhaseControl`.
    The method returns ``{metric: float}``, logged at step 0. The engine checkpoints after the last phase.
    """

    name: str
    method: str
    help: str = ""


class PhaseControl:
    """Handed to a phase: report progress with ``control.step(n, stats)`` (or ``control(n, stats)``), and stop
    cooperatively: return from the phase as soon as ``control.stop_requested`` is true (Ctrl-C, SIGTERM)."""

    def __init__(self, on_step: Callable[[int, Mapping[str, float]], None], stop: Callable[[], bool]):
        self._on_step, self._stop = on_step, stop
        self.steps_done = 0

    def step(self, n: int = 1, stats: Mapping[str, float] | None = None) -> None:
        self.steps_done += n
        self._on_step(n, stats or {})

    __call__ = step  # the first plugin API's progress(n, stats)

    @property
    def stop_requested(self) -> bool:
        return self._stop()


class Domain:
    """Base class of a domain. Override the methods marked *required*; the rest have defaults.

    ``Options`` is a frozen dataclass of ``genkit.option`` fields: the domain's own settings (model size,
    data shape, ...), each a flag of ``genkit run DOMAIN`` and a key of the ``[DOMAIN]`` config table; every
    method receives the resolved instance. ``recipe`` holds the domain's defaults for engine settings (keys of
    ``genkit.config.TrainConfig``: loss, lr_g, steps, ...) and for its options; ``presets`` name alternative
    bundles of both (``{"paper": {"steps": ..., "model_size": ...}}``); every domain has the preset ``default``;
    ``data_recipes`` holds the recipe of a named ``--data`` (applied between ``recipe`` and the preset).
    Capabilities are declared: ``evaluates`` (``evaluate`` returns metrics) and ``phases``.
    """

    name: str = ""
    summary: str = ""
    paper: str = ""
    Options: type = NoOptions
    options: tuple[Option, ...] = ()  # deprecated: the first plugin API's Option tuples
    recipe: dict[str, Any] = {}
    # Recipes of named built-in data sets, layered over ``recipe`` when ``--data`` is that name (``recipe``
    # itself is the default data's); e.g. text's ``{"oracle": {...}}``.
    data_recipes: dict[str, dict[str, Any]] = {}
    presets: dict[str, dict[str, Any]] = {}
    data_names: tuple[str, ...] = ()  # built-in --data names, listed in --help
    data_help: str = ""  # what --data takes besides the built-in names, for --help (default: "a folder or a file")
    phases: tuple[Phase, ...] = ()  # run in order before adversarial training, --pretrain-steps steps each
    evaluates: bool = False  # evaluate() returns metrics: genkit eval, --eval-every, best_metric
    best_metric: tuple[str, str] | None = None  # (metric from evaluate, "min" or "max"): marks checkpoints/best
    # Values for options added after a run was saved: a saved config.toml that lacks one of these keys was
    # written when the option did not exist, and the old behaviour is this value, not today's default.
    legacy_defaults: dict[str, Any] = {}
    # Option values the domain keeps as the SOURCE of another run's --condition: a source's data is rebuilt from its
    # --condition-data at every load of that run, so a later change of default must not reach it (its vocabulary,
    # its sequence length) and break a saved cross-modal run.
    source_options: dict[str, Any] = {}
    # Tensors that weights files of an earlier version hold and today's models do not: skipped when loading.
    legacy_weight_keys: tuple[str, ...] = ()
    sample_ext: str = ""  # extension of the per-sample files genkit sample writes (".png", ".wav", ".txt")
    # A TARGET of --condition SOURCE: build_models honours data.cond_dim (docs/plugins.md, Cross-modal conditions).
    # A SOURCE implements condition_encoder(options, data, dim) and condition_example(value, options, data).
    vector_condition: bool = False

    # -- settings -----------------------------------------------------------------------------------
    def resolve_options(self, options: Any, data: Data) -> Any:
        """Replace ``None`` ("auto") option values by the values in use now that ``data`` is loaded.

        Called once per new run, before ``RUN/config.toml`` is written; return ``dataclasses.replace(options, ...)``.
        """
        return options

    def recipe_for(self, data: str | None, given: Mapping[str, Any]) -> dict[str, Any]:
        """A further recipe layer for this run, over ``recipe`` and under the preset: by default the entry of
        ``data_recipes`` for ``--data`` (``None`` = the default data, whose recipe is ``recipe`` itself).
        ``given`` holds the settings the user gave (flags and ``--config`` values), e.g. text's ``model``."""
        return dict(self.data_recipes.get(data, {})) if data is not None else {}

    def upgrade_options(self, saved: dict[str, Any], data_meta: Mapping[str, Any]) -> dict[str, Any]:
        """Turn the ``[DOMAIN]`` table of a config saved by an earlier version into today's option values.

        The default fills missing keys from ``legacy_defaults``; ``data_meta`` is the run's ``data.json``.
        """
        return {**{k: v for k, v in self.legacy_defaults.items() if k not in saved}, **saved}

    # -- data ---------------------------------------------------------------------------------------
    def default_data(self, options: Any) -> str:
        """The ``--data`` value used when the user gives none (must work offline)."""
        if self.data_names:
            return self.data_names[0]
        raise NotImplementedError(f"domain {self.name!r} must define default_data or data_names")

    def load_data(self, spec: str, options: Any, *, cache_dir: Path) -> Data:
        """*Required.* Load ``--data SPEC``. Raise ``GenkitError`` naming the path on bad input."""
        raise NotImplementedError

    # -- models -------------------------------------------------------------------------------------
    def build_models(self, options: Any, data: Data) -> tuple[nn.Module, nn.Module]:
        """*Required.* Return ``(generator, discriminator)``, freshly initialised under the global seed.

        The generator is called as ``generator(z, cond)`` and the discriminator as
        ``discriminator(x, cond)`` returning one logit per sample (``cond`` is None when unconditional).
        """
        raise NotImplementedError

    def sample_latent(self, n: int, options: Any, *, rng: torch.Generator, device: torch.device) -> torch.Tensor:
        """*Required.* Draw ``n`` latent vectors from the domain's prior, using ``rng`` only."""
        raise NotImplementedError

    def sample_shape(self, options: Any, data: Data) -> tuple[int, ...]:
        """The shape of one generated sample (shown by ``genkit info``)."""
        return ()

    # -- the adversarial step (defaults cover continuous domains) ------------------------------------
    def fake(self, generator: nn.Module, z: torch.Tensor, cond: torch.Tensor | None,
             ctx: StepContext) -> torch.Tensor:
        """The generator's output as the discriminator sees it (differentiable w.r.t. the generator)."""
        return generator(z, cond)

    def generator_loss(self, z: torch.Tensor, cond: torch.Tensor | None,
                       ctx: StepContext) -> torch.Tensor | None:
        """Return a custom generator loss (e.g. REINFORCE), or None to use the registered loss on D(fake)."""
        return None

    # -- output -------------------------------------------------------------------------------------
    def sampler(self, generator: nn.Module, discriminator: nn.Module | None, options: Any) -> nn.Module:
        """The module samples are drawn from (snapshots, evaluations, ``genkit sample``): ``generator`` itself by
        default. A domain may wrap it, e.g. to choose among candidates with the discriminator (the audio domain's
        ``--candidates``); the wrapper must leave the discriminator's mode and state as it found them.
        ``discriminator`` is None unless ``sampler_uses_discriminator`` is true."""
        return generator

    def sampler_uses_discriminator(self, options: Any) -> bool:
        """True when ``sampler`` needs the discriminator, which ``genkit sample`` then loads too."""
        return False

    def generate(self, generator: nn.Module, z: torch.Tensor, cond: torch.Tensor | None,
                 options: Any) -> torch.Tensor:
        """Samples for writing to disk (no gradients). Defaults to ``generator(z, cond)``."""
        return generator(z, cond)

    def snapshot_size(self, options: Any) -> int:
        """How many samples a snapshot shows (the image domain's 10 x 10 grid is 100)."""
        return 100

    def snapshot_conditions(self, n: int, data: Data) -> torch.Tensor | None:
        """Conditions for a batch of ``n`` samples (snapshots, genkit sample, evaluation): class ``i % num_classes``."""
        if not data.conditional:
            return None
        import torch

        if data.num_classes <= 0:
            from .errors import GenkitError

            raise GenkitError(f"domain {self.name!r}: conditional data with num_classes 0; the domain must "
                              "override snapshot_conditions")
        return torch.arange(n) % data.num_classes

    def write_snapshot(self, samples: torch.Tensor, cond: torch.Tensor | None, path: Path,
                       options: Any, data: Data) -> list[Path]:
        """*Required.* Write one snapshot (a grid, a folder of WAVs...) at ``path`` (no extension); return files."""
        raise NotImplementedError

    def write_samples(self, samples: torch.Tensor, cond: torch.Tensor | None, out_dir: Path,
                      options: Any, data: Data) -> list[Path]:
        """*Required.* Write each sample as its own file in ``out_dir``; return the files."""
        raise NotImplementedError

    def evaluate(self, ctx: StepContext) -> dict[str, float]:
        """Metrics of ``ctx.generator`` (the EMA copy when on), at ``--eval-every`` and at the end.

        Declare ``evaluates = True`` when overriding this."""
        return {}

    def export(self, generator: nn.Module, run_dir: Path, options: Any, data: Data) -> list[Path]:
        """Optional: write the trained generator in a domain-native format at the end of a run."""
        return []

    # -- per-run state and what sampling needs -------------------------------------------------------
    def state_dict(self, data: Data) -> dict[str, Any]:
        """The per-run state saved with every checkpoint (default: ``data.state``)."""
        return dict(data.state)

    def load_state_dict(self, data: Data, state: Mapping[str, Any]) -> None:
        """Restore what ``state_dict`` returned into ``data`` (on resume and when a run is opened for sampling)."""
        data.state.update(state)

    def upgrade_state(self, data: Data, checkpoint: Path, options: Any) -> None:
        """Recover per-run state from a checkpoint written before domains had ``state_dict`` (one without
        ``domain_state``), e.g. values an earlier version kept in a model buffer. Default: nothing to recover."""

    def save_data_meta(self, data: Data, run_dir: Path) -> dict[str, Any]:
        """Describe ``data`` for ``RUN/data.json``: what ``genkit sample`` needs without loading the examples."""
        return default_data_meta(data, legacy=bool(getattr(self, "_legacy_api", False)))

    def load_data_meta(self, meta: Mapping[str, Any], run_dir: Path) -> Data:
        """Rebuild a ``Data`` without its examples from ``save_data_meta``'s output, for sampling."""
        return data_from_meta(meta)

    # -- derived ------------------------------------------------------------------------------------
    def all_presets(self) -> dict[str, dict[str, Any]]:
        return {"default": {}, **self.presets}

    def option_defaults(self) -> dict[str, Any]:
        from .options import settings

        return {s.name: s.default for s in settings(self.Options)}


def labels_are_classes(labels: Sequence[int], names: Sequence[str], source: str = "") -> bool:
    """Whether the labels a loader read from the data's names (sub-folders, ``label_`` file-name prefixes) look
    like classes: at least two, and at most half of them given to a single example. Names that each go with one
    file (a recorder's take numbers, Freesound's ``12345__user__title.wav``, time stamps) are identifiers, not
    classes: a class-conditional model of them would learn one class an example. For such names a warning
    naming ``source`` says that the data is treated as unlabelled, and False is returned; a domain keeps them
    when the user asks for ``--conditional``."""
    if len(names) < 2:
        return False
    single = sum(1 for n in Counter(int(label) for label in labels).values() if n == 1)
    if single * 2 > len(names):
        from .errors import warn

        warn(f"{source or 'the data'}: {single} of its {len(names)} names from sub-folders or file-name prefixes "
             "hold one example each: identifiers, not classes, so the data is treated as unlabelled "
             "(--conditional to use them as classes; put each class in its own sub-folder to label it)")
        return False
    return True


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def default_data_meta(data: Data, legacy: bool = False) -> dict[str, Any]:
    """What ``genkit sample`` needs to know about the data, as JSON (written to ``RUN/data.json``).

    Domains declared with the first plugin API also get their JSON-able ``extra`` values saved here, as then.
    """
    meta: dict[str, Any] = {
        "conditional": data.conditional,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "source": data.source,
    }
    if legacy:
        meta["extra"] = {k: v for k, v in data.extra.items() if _jsonable(v)}
    return meta


def data_from_meta(meta: Mapping[str, Any]) -> Data:
    """The ``Data`` that ``data.json`` describes (no examples); an earlier genkit's ``extra`` lands in ``state``."""
    return Data(train=None, conditional=bool(meta.get("conditional")), num_classes=int(meta.get("num_classes", 0)),
                class_names=list(meta.get("class_names", [])), source=meta.get("source", ""),
                state=dict(meta.get("extra", {})), extra=dict(meta.get("extra", {})))
