"""A run's configuration: the engine's settings (``TrainConfig``) and the domain's typed ``Options``.

One layered resolution, later layers win::

    engine defaults < domain recipe < domain.recipe_for(data, given) < preset < --config FILE < flags
    (or genkit.train(**settings))

and, for ``--resume``, a final layer over the saved config that accepts the settings marked ``resumable``
and refuses every other one by name. ``RUN/config.toml`` holds resolved values only (no placeholders):
``genkit run DOMAIN --config RUN/config.toml`` reproduces the run.

File layout::

    domain = "image"
    preset = "default"
    data = "mnist5k"

    [train]          # TrainConfig fields
    steps = 3000
    ...

    [image]          # the domain's options (table named after the domain)
    size = 28
    ...
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .errors import GenkitError
from .options import AUTO, Setting, option, settings, to_dict

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class TrainConfig:
    """The engine's settings, shared by every domain (a domain's ``recipe`` sets its own defaults)."""

    steps: int = option(2000, "Generator updates to train for (each after --n-critic discriminator updates).",
                        gt=0, resumable=True)
    batch_size: int = option(64, "Examples per batch.", gt=0)
    loss: str = option("ns", "Adversarial loss: a name from the loss registry (genkit plugins lists them).")
    lr_g: float = option(2e-4, "Generator learning rate (Adam).", gt=0)
    lr_d: float = option(2e-4, "Discriminator learning rate (Adam).", gt=0)
    beta1: float = option(0.5, "Adam beta1 for both networks.", ge=0, lt=1)
    beta2: float = option(0.999, "Adam beta2 for both networks.", ge=0, lt=1)
    n_critic: int = option(1, "Discriminator updates per generator update.", gt=0)
    gp: float | None = option(None, "Gradient-penalty weight.", ge=0, auto="the loss's: 10 for wgan-gp, else 0")
    r1: float | None = option(None, "R1 penalty weight on real data (0 = off).", ge=0,
                              auto="the loss's: 0 unless it carries R1")
    lecam: float = option(0.0, "LeCam regulariser weight (Tseng et al. 2021, for small data sets): D's outputs on "
                               "real and generated data are held near moving averages of each other (0 = off; "
                               "the paper: 0.3 with the hinge loss).", ge=0)
    mismatch: float = option(0.0, "Matching-aware discriminator (Reed et al. 2016, labelled data): the share of D's "
                                  "fake-side loss given to real examples shown with another example's class, so "
                                  "that D learns to reject an example that does not fit its label (0 = off; the "
                                  "paper: 0.5).", ge=0, le=1)
    ema: float = option(0.0, "EMA decay of the generator used for samples (0 = off, e.g. 0.999).", ge=0, lt=1)
    standing_stats: int = option(0, "Batch-norm statistics of the generator used for samples, recomputed over N "
                                    "batches of fresh latents at the weights as they are (BigGAN's standing "
                                    "statistics) instead of the running averages kept in training (0 = those).",
                                 ge=0, resumable=True)
    seed: int = option(0, "Random seed (same seed, same run).", ge=0)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.", resumable=True)
    threads: int = option(0, "CPU threads torch may use within an operation (0 = torch's default: one per core). "
                             "On a shared machine, 1 or 2 avoids a many-fold slow-down.", ge=0, resumable=True)
    checkpoint_every: int = option(500, "Steps between checkpoints (0 = only at the end).", ge=0, resumable=True)
    keep_checkpoints: int = option(0, "Keep only the newest N checkpoints, plus the best (0 = all).", ge=0,
                                   resumable=True)
    sample_every: int = option(500, "Steps between sample snapshots (0 = only at the end).", ge=0, resumable=True)
    log_every: int = option(50, "Steps between metrics.jsonl lines.", gt=0, resumable=True)
    eval_every: int = option(0, "Steps between domain evaluations (0 = only at the end).", ge=0, resumable=True)
    on_nan: Literal["stop", "skip"] = option("stop", "When a loss is NaN or infinite: stop the run (keeping the last "
                                                     "good checkpoint) or skip that batch's update.", resumable=True)
    nan_skips: int = option(10, "With --on-nan skip: the most updates skipped in a row before the run stops.", gt=0,
                            resumable=True)
    eval_at_start: bool = option(False, "Also evaluate before the first training step (after any pre-training "
                                        "phase), the baseline of a metric curve.", resumable=True)
    pretrain_steps: int = option(0, "Steps of each training phase the domain declares before adversarial training "
                                    "(e.g. text's maximum-likelihood phase).", ge=0)
    init_from: str = option("", "Start from another run's weights (transfer learning): a run directory (its latest "
                                "checkpoint) or a checkpoint folder; '' = from scratch. config.toml records the "
                                "checkpoint folder used.")
    condition: str = option("", "Condition the generator on another domain's examples (cross-modal): the SOURCE "
                                "domain whose condition encoder embeds a paired example of each sample's class; "
                                "'' = off.")
    condition_data: str = option("", "With --condition: the SOURCE domain's --data ('' = its default).")
    condition_from: str = option("", "With --condition: take the condition encoder from an earlier cross-modal run "
                                     "(a run directory or checkpoint folder with the same --condition and "
                                     "--condition-dim) and keep it frozen; '' = train it jointly with D. config.toml "
                                     "records the checkpoint folder used.")
    condition_warmup: int = option(1000, "With --condition: steps that train the condition encoder alone to name each "
                                        "paired example's key before adversarial training (0 = none; not with "
                                        "--condition-from).", ge=0)
    condition_gain: float = option(3.0, "With --condition: the factor the unit-norm embedding is multiplied by where "
                                        "it joins the generator's input (the discriminator's projection takes it "
                                        "unscaled).", gt=0)
    condition_dim: int = option(128, "With --condition: dimension of the condition embedding (unit L2 norm).", gt=0)
    pairs: str = option("", "With --condition: your own pairs, a .csv or .jsonl manifest with one column per domain "
                            "(TARGET's examples, their SOURCE examples) and an optional key column; '' = pairs by "
                            "class of --data and --condition-data. config.toml records its absolute path.")
    init_from_parts: Literal["gd", "g"] = option("gd", "With --init-from: load the generator and the discriminator "
                                                       "(gd) or the generator only (g).")
    precision: Literal["fp32", "bf16", "fp16"] = option("fp32", "Arithmetic of the forward passes: fp32, or bf16 / "
                                                               "fp16 under torch.autocast (fp16 with a gradient "
                                                               "scaler); the gradient penalty and R1 stay fp32.")
    compile: bool = option(False, "torch.compile the generator and the discriminator (the first steps are slow while "
                                  "it compiles; the penalties' double backward runs eagerly).", resumable=True)
    channels_last: bool = option(False, "Keep the models' 4-D weights and batches in channels-last memory order "
                                        "(faster convolutions on GPUs with tensor cores and on CPUs; the audio "
                                        "recipe's for SpecGAN; no effect on models without 4-D weights).",
                                 resumable=True)
    sync_bn: bool = option(False, "Under --nproc: synchronise batch-norm statistics across processes "
                                  "(torch.nn.SyncBatchNorm; CUDA only).")
    tensorboard: bool = option(False, "Also write losses, metrics, learning rates, speed and snapshots for "
                                      "TensorBoard under RUN/tensorboard/ (pip install 'genkit[tensorboard]').",
                               resumable=True)

    def __post_init__(self) -> None:
        if not DEVICE.match(self.device):
            raise GenkitError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}", exit_code=2)
        if self.pairs:  # absolute, so that genkit sample finds the manifest from any folder
            object.__setattr__(self, "pairs", str(Path(self.pairs).expanduser().absolute()))


TRAIN_SETTINGS: dict[str, Setting] = {s.name: s for s in settings(TrainConfig)}
# [train] keys added since a run could have been saved, with the behaviour such a run had (not today's default)
TRAIN_LEGACY: dict[str, Any] = {"condition_warmup": 0, "condition_gain": 1.0, "standing_stats": 0, "lecam": 0.0,
                               "mismatch": 0.0}
PENALTIES = ("gp", "r1")  # settings whose "auto" is the loss's default_gp / default_r1
# Names the run and info commands use for themselves; a domain option may not take them either.
COMMAND_OPTIONS = frozenset({"config", "preset", "data", "out", "resume", "json", "quiet", "help", "verbose", "nproc"})
RESERVED = frozenset({"domain", "train", "version", "genkit"})


@dataclass(frozen=True)
class RunConfig:
    """A fully resolved run: what ``RUN/config.toml`` holds."""

    domain: str
    preset: str
    data: str
    train: TrainConfig
    options: Any  # an instance of the domain's Options dataclass

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "preset": self.preset,
            "data": self.data,
            "train": to_dict(self.train),
            self.domain: {k: v for k, v in to_dict(self.options).items() if v is not None},
        }

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GenkitError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GenkitError(f"{path}: not valid TOML: {exc}") from None


class _Layers:
    """Values of the engine's settings and of one domain's options, filled layer by layer, each value checked."""

    def __init__(self, domain: Any, losses: Mapping[str, Any] | None = None):
        self.domain = domain
        self.losses = losses or {}
        self.option_settings = {s.name: s for s in settings(domain.Options)}
        self.train: dict[str, Any] = {}
        self.options: dict[str, Any] = {}
        self.where: dict[str, tuple[int, str]] = {}  # the layer (its order, its name) each value came from
        self._layer = 0

    def apply(self, values: Mapping[str, Any], where: str, table: str | None = None) -> None:
        """Apply flat ``values`` (``table`` None) or the values of one config-file table (``train`` or the domain's).

        None means "not set here"; ``AUTO`` (``--gp auto``) sets "auto" over what earlier layers said."""
        self._layer += 1
        before_loss = self.train.get("loss", TRAIN_SETTINGS["loss"].default)
        for key, value in values.items():
            if value is None:
                continue
            in_train = key in TRAIN_SETTINGS and table != self.domain.name
            in_options = key in self.option_settings and table != "train"
            if in_train:
                checked = TRAIN_SETTINGS[key].check(value, where)
                self.train[key] = None if checked is AUTO else checked
            elif in_options:
                checked = self.option_settings[key].check(value, where)
                self.options[key] = None if checked is AUTO else checked
            else:
                place = f" in [{table}]" if table else ""
                raise GenkitError(f"{where}: unknown key {key!r}{place}", exit_code=2)
            self.where[key] = (len(self.where) + 1000 * self._layer, where)
        # A layer that changes the loss but says nothing of a penalty: a penalty weight that was the old loss's
        # default (as a resolved config.toml records it) follows the new loss ("auto"), so --loss wgan-gp keeps
        # its penalty.
        old = self.losses.get(before_loss)
        for key in PENALTIES:
            if "loss" in values and key not in values and self.train.get(key) is not None and old is not None \
                    and self.train[key] == float(getattr(old, f"default_{key}")):
                self.train[key] = None

    def result(self, losses: Mapping[str, Any], where: str) -> tuple[TrainConfig, Any]:
        def build(cls: type, values: dict[str, Any]) -> Any:
            try:
                return cls(**values)
            except GenkitError as exc:  # a check across fields: name the layer the values came from
                layers = sorted(self.where[k] for k in values if k in self.where)
                last = layers[-1][1] if layers else where  # the latest layer that set any of these values
                message = exc.format_message()
                prefix = f"{last}: " if not message.startswith(last) else ""
                raise GenkitError(prefix + message, exit_code=exc.exit_code) from None

        train = build(TrainConfig, self.train)
        if train.loss not in losses:
            raise GenkitError(f"{self.where.get('loss', (0, where))[1]}: unknown loss {train.loss!r} "
                              f"(available: {', '.join(sorted(losses))})", exit_code=2)
        for key in PENALTIES:  # resolved: config.toml says which penalty weights were used
            if getattr(train, key) is None:
                train = dataclasses.replace(train, **{key: float(getattr(losses[train.loss], f"default_{key}"))})
        return train, build(self.domain.Options, self.options)


def resolve(domain: Any, losses: Mapping[str, Any], *, preset: str | None = None, data: str | None = None,
            file: Path | None = None, flags: Mapping[str, Any] | None = None,
            flags_source: str = "command line") -> RunConfig:
    """The resolved config of a new run of ``domain`` (see the module docstring for the order of the layers)."""
    file_data: dict[str, Any] = {}
    if file is not None:
        file_data = read_toml(file)
        allowed = {"domain", "preset", "data", "train", domain.name}
        unknown = sorted(set(file_data) - allowed)
        if unknown:
            raise GenkitError(f"{file}: unknown key {unknown[0]!r} (allowed: domain, preset, data, [train], "
                              f"[{domain.name}])", exit_code=2)
        if file_data.get("domain", domain.name) != domain.name:
            raise GenkitError(f"{file}: config is for domain {file_data['domain']!r}, not {domain.name!r}")
        for table in ("train", domain.name):
            if not isinstance(file_data.get(table, {}), dict):
                raise GenkitError(f"{file}: [{table}] must be a table", exit_code=2)
    preset = preset or file_data.get("preset") or "default"
    presets = domain.all_presets()
    if preset not in presets:
        raise GenkitError(f"unknown preset {preset!r} for domain {domain.name!r} (available: {', '.join(presets)})",
                          exit_code=2)
    layers = _Layers(domain, losses)
    layers.apply(domain.recipe, f"domain {domain.name!r} recipe")
    named = data or file_data.get("data")
    given = {k: v for k, v in {**file_data.get("train", {}), **file_data.get(domain.name, {}), **(flags or {})}.items()
             if v is not None}
    extra = domain.recipe_for(None if named is None else str(named), given) if hasattr(domain, "recipe_for") else {}
    if extra:  # e.g. the recipe of a named built-in data set (the plain recipe is the default data's)
        layers.apply(extra, f"domain {domain.name!r} recipe for these settings")
    layers.apply(presets[preset], f"preset {preset!r}")
    if file_data:
        layers.apply(file_data.get("train", {}), str(file), table="train")
        layers.apply(file_data.get(domain.name, {}), str(file), table=domain.name)
    layers.apply(flags or {}, flags_source)
    train, options = layers.result(losses, flags_source)
    data = data or file_data.get("data") or domain.default_data(options)
    return RunConfig(domain=domain.name, preset=preset, data=str(data), train=train, options=options)


def resume(saved: RunConfig, domain: Any, losses: Mapping[str, Any], flags: Mapping[str, Any]) -> RunConfig:
    """The last layer, for ``--resume``: settings marked resumable may change; any other change is refused by name."""
    option_settings = {s.name: s for s in settings(domain.Options)}
    current = {**to_dict(saved.options), **to_dict(saved.train)}
    refused: list[str] = []
    train: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        setting = TRAIN_SETTINGS.get(key) or option_settings.get(key)
        if setting is None:
            raise GenkitError(f"--resume: unknown setting {key!r}", exit_code=2)
        value = setting.check(value)
        value = None if value is AUTO else value
        if value == current.get(key):
            continue
        if not setting.spec.resumable:
            refused.append(setting.flag)
        elif key in TRAIN_SETTINGS:
            train[key] = value
        else:
            options[key] = value
    if refused:
        may = sorted(s.flag for s in [*TRAIN_SETTINGS.values(), *option_settings.values()] if s.spec.resumable)
        raise GenkitError(f"--resume: {', '.join(refused)} cannot change in an existing run (it would change what "
                          f"was trained; start a new run with --config RUN/config.toml instead). May change: "
                          f"{', '.join(may)}", exit_code=2)
    return saved.replace(train=dataclasses.replace(saved.train, **train),
                         options=dataclasses.replace(saved.options, **options))


def check_against_checkpoint(config: RunConfig, saved_toml: str, domain: Any, where: str,
                             data_meta: Mapping[str, Any] | None = None) -> None:
    """Refuse, naming the first key, a ``config`` (``RUN/config.toml``) that differs from the configuration the
    checkpoint was trained with (``saved_toml``, stored in its state.pt) in a setting that may not change on
    ``--resume``: a hand-edited config.toml is never partly applied. Resumable settings (``--steps``...) may differ:
    config.toml holds the last ``--resume``'s values, which a checkpoint written before them does not."""
    try:
        saved = from_saved(tomllib.loads(saved_toml), domain, where, data_meta)
    except (GenkitError, tomllib.TOMLDecodeError, TypeError):  # an earlier genkit's state: nothing to compare with
        return
    option_settings = {s.name: s for s in settings(domain.Options)}
    for table, now, then, specs in (("train", config.train, saved.train, TRAIN_SETTINGS),
                                    (domain.name, config.options, saved.options, option_settings)):
        for key, value in to_dict(now).items():
            before = to_dict(then).get(key)
            if key in specs and not specs[key].spec.resumable and value != before:
                raise GenkitError(f"{where}: [{table}] {key} = {value!r} in config.toml, but the checkpoint was "
                                  f"trained with {before!r}; restore it (config.toml is not re-read for that "
                                  f"setting), or start a new run with --config")
    for key in ("data", "preset"):
        if getattr(config, key) != getattr(saved, key):
            raise GenkitError(f"{where}: {key} = {getattr(config, key)!r} in config.toml, but the checkpoint was "
                              f"trained with {getattr(saved, key)!r}; restore it, or start a new run with --config")


def from_saved(raw: Mapping[str, Any], domain: Any, where: str, data_meta: Mapping[str, Any] | None = None) -> RunConfig:
    """Rebuild a saved, resolved config (``RUN/config.toml``), also one written by an earlier genkit.

    Keys the domain's options gained since are filled by ``domain.upgrade_options`` (by default from
    ``legacy_defaults``: the behaviour the run had, not today's default); [train] keys from ``TRAIN_LEGACY``.
    """
    if raw.get("domain") not in (None, domain.name):
        raise GenkitError(f"{where}: config is for domain {raw.get('domain')!r}, not {domain.name!r}")
    train_values = dict(raw.get("train", {}))
    train_values = {**{k: v for k, v in TRAIN_LEGACY.items() if k not in train_values}, **train_values}
    for key in train_values:
        if key not in TRAIN_SETTINGS:
            raise GenkitError(f"{where}: unknown key {key!r} in [train]")
    train = TrainConfig(**{k: TRAIN_SETTINGS[k].check(v, where) for k, v in train_values.items()})
    saved = domain.upgrade_options(dict(raw.get(domain.name, {})), dict(data_meta or {}))
    option_settings = {s.name: s for s in settings(domain.Options)}
    values = {}
    for key, value in saved.items():
        if key not in option_settings:
            raise GenkitError(f"{where}: unknown key {key!r} in [{domain.name}]")
        values[key] = option_settings[key].check(value, where)
    return RunConfig(domain=domain.name, preset=str(raw.get("preset", "default")), data=str(raw.get("data", "")),
                     train=train, options=domain.Options(**values))


def engine_defaults(domain: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The effective defaults of a domain's run: engine defaults and option defaults under its recipe."""
    layers = _Layers(domain)
    layers.apply(domain.recipe, f"domain {domain.name!r} recipe")
    train = {s.name: s.default for s in TRAIN_SETTINGS.values()}
    train.update(layers.train)
    options = {s.name: s.default for s in settings(domain.Options)}
    options.update(layers.options)
    return train, options


__all__ = ["COMMAND_OPTIONS", "RESERVED", "RunConfig", "TRAIN_SETTINGS", "TrainConfig", "engine_defaults",
           "from_saved", "read_toml", "resolve", "resume"]
