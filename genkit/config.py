"""Run configuration: the engine's training settings plus a domain's options, as one TOML file.

Resolution order, later wins: the engine defaults below < the domain's ``recipe`` < the chosen preset
< ``--config FILE.toml`` < command-line flags. The fully resolved result is written to
``RUN/config.toml``; ``genkit run DOMAIN --config RUN/config.toml`` reproduces the run.

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
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import GenkitError

DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass
class TrainConfig:
    steps: int = 2000  # generator updates; each is preceded by n_critic discriminator updates
    batch_size: int = 64
    loss: str = "ns"  # the seed document's non-saturating loss
    lr_g: float = 2e-4  # DCGAN's Adam settings (Radford et al. 2016)
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    n_critic: int = 1  # discriminator updates per generator update
    gp: float = -1.0  # gradient-penalty weight; -1 = the loss's default (10 for wgan-gp, else 0)
    r1: float = 0.0  # R1 penalty weight (gamma); 0 = off
    ema: float = 0.0  # decay of an exponential moving average of the generator; 0 = off
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 500  # steps between checkpoints; 0 = only at the end
    keep_checkpoints: int = 0  # keep only the newest N checkpoints (plus the best); 0 = keep all
    sample_every: int = 500  # steps between sample snapshots; 0 = only at the end
    log_every: int = 50  # steps between metrics.jsonl lines
    eval_every: int = 0  # steps between domain evaluations; 0 = only at the end
    pretrain_steps: int = 0  # steps of the domain's pre-training phase (e.g. MLE for text), if it has one


TRAIN_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
# Settings that may change when a run is resumed: they do not change what is computed.
RESUMABLE_OVERRIDES = {"steps", "device", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every",
                       "eval_every"}


@dataclass
class RunConfig:
    domain: str
    preset: str = "default"
    data: str = ""
    train: TrainConfig = field(default_factory=TrainConfig)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "domain": self.domain,
            "preset": self.preset,
            "data": self.data,
            "train": dataclasses.asdict(self.train),
            self.domain: dict(self.options),
        }

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(self.to_dict())

    def write(self, path: Path) -> None:
        path.write_text(self.to_toml(), encoding="utf-8")


def _coerce(value: Any, default: Any, key: str, where: str) -> Any:
    """Check a value against the type of its default (ints are accepted where floats are expected)."""
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool):
            return value
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif kind is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise GenkitError(f"{where}: {key} must be {kind.__name__}, got {value!r}")


def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise GenkitError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise GenkitError(f"{path}: not valid TOML: {exc}") from None


def validate_train(train: TrainConfig, losses: Mapping[str, Any]) -> None:
    def positive(name):
        if getattr(train, name) <= 0:
            raise GenkitError(f"{name.replace('_', '-')} must be positive, got {getattr(train, name)}")

    for name in ("steps", "batch_size", "n_critic", "lr_g", "lr_d", "log_every"):
        positive(name)
    for name in ("checkpoint_every", "keep_checkpoints", "sample_every", "eval_every", "pretrain_steps", "r1"):
        if getattr(train, name) < 0:
            raise GenkitError(f"{name.replace('_', '-')} must be zero or positive, got {getattr(train, name)}")
    if train.gp < 0:
        raise GenkitError(f"gp must be zero or positive, got {train.gp}")
    if not 0.0 <= train.ema < 1.0:
        raise GenkitError(f"ema must be in [0, 1), got {train.ema}")
    if not (0.0 <= train.beta1 < 1.0 and 0.0 <= train.beta2 < 1.0):
        raise GenkitError(f"beta1 and beta2 must be in [0, 1), got {train.beta1}, {train.beta2}")
    if train.device not in DEVICES and not train.device.startswith("cuda:"):
        raise GenkitError(f"unknown device {train.device!r} (choose from {', '.join(DEVICES)})")
    if train.loss not in losses:
        raise GenkitError(f"unknown loss {train.loss!r} (available: {', '.join(sorted(losses))})")


def resolve(domain, losses: Mapping[str, Any], *, preset: str | None = None, file: Path | None = None,
            overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Build the fully resolved config of a run of ``domain`` (see the module docstring for the order)."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    file_data: dict[str, Any] = {}
    where = "command line"
    if file is not None:
        file_data = read_toml(file)
        where = str(file)
        known = {"domain", "preset", "data", "train", domain.name}
        unknown = sorted(set(file_data) - known)
        if unknown:
            raise GenkitError(f"{file}: unknown key {unknown[0]!r} (allowed: domain, preset, data, [train], [{domain.name}])")
        if file_data.get("domain", domain.name) != domain.name:
            raise GenkitError(f"{file}: config is for domain {file_data['domain']!r}, not {domain.name!r}")
    preset = overrides.pop("preset", None) or file_data.get("preset") or "default"
    presets = domain.all_presets()
    if preset not in presets:
        raise GenkitError(f"unknown preset {preset!r} for domain {domain.name!r} (available: {', '.join(presets)})")

    train = dataclasses.asdict(TrainConfig())
    options = domain.option_defaults()

    def apply(layer: Mapping[str, Any], source: str, *, nested: bool) -> None:
        if nested:
            items = list(layer.get("train", {}).items())
            opt_items = list(layer.get(domain.name, {}).items())
        else:
            items = [(k, v) for k, v in layer.items() if k in TRAIN_FIELDS]
            opt_items = [(k, v) for k, v in layer.items() if k not in TRAIN_FIELDS]
        for key, value in items:
            if key not in train:
                raise GenkitError(f"{source}: unknown key {key!r} in [train]")
            train[key] = _coerce(value, TrainConfig.__dataclass_fields__[key].default, key, source)
        for key, value in opt_items:
            if key not in options:
                table = f"[{domain.name}]" if nested else f"domain {domain.name!r}"
                raise GenkitError(f"{source}: unknown key {key!r} in {table}")
            opt = next(o for o in domain.options if o.name == key)
            value = _coerce(value, opt.default, key, source)
            if opt.choices is not None and value not in opt.choices:
                raise GenkitError(f"{source}: {key} must be one of {', '.join(map(str, opt.choices))}, got {value!r}")
            options[key] = value

    apply(domain.recipe, f"domain {domain.name!r} recipe", nested=False)
    apply(presets[preset], f"preset {preset!r}", nested=False)
    if file_data:
        if "train" in file_data and not isinstance(file_data["train"], dict):
            raise GenkitError(f"{file}: [train] must be a table")
        apply(file_data, where, nested=True)
    data = overrides.pop("data", None) or file_data.get("data") or ""
    apply(overrides, "command line", nested=False)
    cfg = TrainConfig(**train)
    if cfg.gp < 0:
        cfg.gp = float(losses[cfg.loss].default_gp) if cfg.loss in losses else 0.0
    validate_train(cfg, losses)
    if not data:
        data = domain.default_data(options)
    return RunConfig(domain=domain.name, preset=preset, data=str(data), train=cfg, options=options)


def from_dict(raw: Mapping[str, Any], domain, source: str) -> RunConfig:
    """Rebuild a saved, already resolved config (from config.toml or a checkpoint)."""
    train = TrainConfig()
    for key, value in raw.get("train", {}).items():
        if key not in TRAIN_FIELDS:
            raise GenkitError(f"{source}: unknown key {key!r} in [train]")
        setattr(train, key, _coerce(value, TRAIN_FIELDS[key].default, key, source))
    saved = raw.get(domain.name, {})
    options = {**domain.option_defaults(),
               **{k: v for k, v in getattr(domain, "legacy_defaults", {}).items() if k not in saved}}
    for key, value in saved.items():
        if key not in options:
            raise GenkitError(f"{source}: unknown key {key!r} in [{domain.name}]")
        options[key] = value
    return RunConfig(domain=domain.name, preset=raw.get("preset", "default"), data=raw.get("data", ""),
                     train=train, options=options)
