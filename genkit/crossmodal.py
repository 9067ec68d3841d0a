"""Cross-modal conditioning: ``genkit run TARGET --condition SOURCE`` (docs/cross-modal.md).

TARGET's generator and discriminator are conditioned on an embedding that SOURCE's condition encoder computes from
a *paired example* of SOURCE's data: pairs are formed by a shared key, the class (a handwritten 7 pairs with any
spoken "seven"). Every call draws a fresh paired example of each sample's key, so the generator learns the class,
not one exemplar: in training from SOURCE's training part, in evaluation mode (snapshots, ``genkit sample``,
evaluations) from a held-out part the encoder never saw. The embedding has ``--condition-dim`` dimensions and unit
L2 norm. The encoder is trained jointly with the discriminator (by the discriminator's loss); the generator
receives it without gradient.

The protocol is generic (docs/plugins.md): a SOURCE implements ``condition_encoder(options, data, dim)`` and
``condition_example(value, options, data)``; a TARGET declares ``vector_condition = True`` and builds models that
take a (B, dim) float condition when ``data.cond_dim > 0``. The wrapped models keep the engine's contract:
``G(z, key)``, ``D(x, key)`` with the key a class index, so snapshots, sampling and evaluations work unchanged.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import torch
from torch import nn

from .errors import GenkitError

HELD_OUT = 0.2  # share of each key's source examples kept for evaluation (never seen by the encoder in training)
SPLIT_SEED = 1234
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def key_of(name: str) -> str:
    """Class names of different domains meet here: "7", "seven" and "Seven" are one key."""
    name = name.strip().lower()
    return str(NUMBER_WORDS.index(name)) if name in NUMBER_WORDS else re.sub(r"\s+", " ", name)


class Pairs(nn.Module):
    """SOURCE's examples grouped by the TARGET class they pair with, split once into training and held-out parts."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, source_names: list[str], target_names: list[str]):
        super().__init__()
        source_keys = {key_of(n): i for i, n in enumerate(source_names)}
        missing = [n for n in target_names if key_of(n) not in source_keys]
        if missing:
            raise GenkitError(f"--condition: the source data has no examples of class {missing[0]!r} (its classes: "
                              f"{', '.join(source_names)})")
        g = torch.Generator().manual_seed(SPLIT_SEED)
        train_idx, test_idx = [], []
        for name in target_names:
            idx = (labels == source_keys[key_of(name)]).nonzero().flatten()
            idx = idx[torch.randperm(len(idx), generator=g)]
            n_test = max(1, int(len(idx) * HELD_OUT)) if len(idx) > 1 else 0
            test_idx.append(idx[:n_test] if n_test else idx)
            train_idx.append(idx[n_test:])
        self.x = x  # the source's examples as its Data.transform makes them; rebuilt at every load, never saved
        self.train_idx, self.test_idx = train_idx, test_idx
        self._pools = {False: _padded(train_idx), True: _padded(test_idx)}  # (keys, longest pool), pool sizes
        self.override: torch.Tensor | None = None  # one example for every sample (genkit sample --condition)

    def draw(self, keys: torch.Tensor, held_out: bool, generator: torch.Generator | None = None) -> torch.Tensor:
        if self.override is not None:
            return self.override.expand(len(keys), *self.override.shape[1:])
        pools, sizes = self._pools[held_out]
        keys = keys.long()
        pick = (torch.rand(len(keys), generator=generator) * sizes[keys]).long()  # uniform within each key's pool
        return self.x[pools[keys, pick]]


def _padded(pools: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pools of unequal sizes as one (keys, longest) tensor and their sizes: one gather per draw."""
    sizes = torch.tensor([len(p) for p in pools])
    table = torch.zeros(len(pools), int(sizes.max()), dtype=torch.long)
    for k, pool in enumerate(pools):
        table[k, :len(pool)] = pool
    return table, sizes


class ConditionedGenerator(nn.Module):
    """TARGET's generator under a SOURCE condition: ``G(z, key)``; the embedding carries no gradient here."""

    def __init__(self, inner: nn.Module, encoder: nn.Module, pairs: Pairs):
        super().__init__()
        self.inner, self.encoder, self.pairs = inner, encoder, pairs

    def embed(self, keys: torch.Tensor) -> torch.Tensor:
        return embed(self.encoder, self.pairs.draw(keys.cpu(), held_out=not self.training).to(keys.device))

    def forward(self, z: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        if key is None:
            raise GenkitError("a cross-modal generator needs a condition (a class index) for every sample")
        with torch.no_grad():
            c = self.embed(key)
        return self.inner(z, c)


class ConditionedDiscriminator(nn.Module):
    """TARGET's discriminator under a SOURCE condition; the encoder learns through this module's loss, plus (with
    ``key_weight``) a classification term: a linear classifier on the embedding must name each example's class,
    so that examples of one class embed close together (AC-GAN's auxiliary classifier, Odena et al. 2017, on the
    condition's side). The engine adds it to the discriminator's loss through ``auxiliary_loss``."""

    def __init__(self, inner: nn.Module, encoder: nn.Module, pairs: Pairs, dim: int = 0, num_keys: int = 0,
                 key_weight: float = 0.0, frozen: bool = False):
        super().__init__()
        self.inner, self.encoder, self.pairs = inner, encoder, pairs
        self.frozen = frozen  # --condition-from: the encoder gets no gradient (so Adam never moves it)
        self.key_weight = 0.0 if frozen else key_weight
        key_weight = self.key_weight
        self.classify = nn.Linear(dim, num_keys) if key_weight > 0 else None
        self._terms: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        if key is None:
            raise GenkitError("a cross-modal discriminator needs the class index of every example")
        src = self.pairs.draw(key.cpu(), held_out=not self.training).to(x.device)
        if self.frozen:
            with torch.no_grad():
                c = embed(self.encoder, src)
        else:
            c = embed(self.encoder, src)
        if self.classify is not None and self.training and torch.is_grad_enabled() and \
                any(p.requires_grad for p in self.classify.parameters()):  # in the discriminator's update only
            self._terms.append(nn.functional.cross_entropy(self.classify(c) * 10.0, key.long().to(c.device)))
        return self.inner(x, c)

    def auxiliary_loss(self) -> torch.Tensor | None:
        """The mean classification term of the forward calls since the last call (then forgotten)."""
        terms, self._terms = self._terms, []
        return self.key_weight * torch.stack(terms).mean() if terms else None


def embed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The condition embedding: the encoder's output with unit L2 norm."""
    return nn.functional.normalize(encoder(x).float(), dim=1)


@dataclasses.dataclass
class Source:
    """SOURCE's domain, options and loaded data, as a condition."""

    domain: Any
    options: Any
    data: Any


def load_source(name: str, data_spec: str, cache_dir: Any) -> Source:
    """SOURCE's data with its recipe's option values (``--condition-data`` or its default data)."""
    from .config import resolve
    from .plugins import registry

    reg = registry()
    domain = reg.domain(name)
    if not callable(getattr(domain, "condition_encoder", None)):
        raise GenkitError(f"--condition {name}: domain {name!r} offers no condition encoder (docs/plugins.md: "
                          "Cross-modal conditions)", exit_code=2)
    cfg = resolve(domain, reg.losses, data=data_spec or None)
    data = domain.load_data(cfg.data, cfg.options, cache_dir=cache_dir)
    options = domain.resolve_options(cfg.options, data)
    if not data.class_names or data.train is None:
        raise GenkitError(f"--condition {name}: its data {cfg.data!r} has no class labels to pair by")
    return Source(domain, options, data)


KEY_WEIGHT = 1.0  # weight of the encoder's classification term in the discriminator's loss


def wrap(target: Any, source: Source, G: nn.Module, D: nn.Module, target_names: list[str],
         dim: int, frozen: bool = False) -> tuple[nn.Module, nn.Module]:
    """TARGET's models (built with ``data.cond_dim = dim``) conditioned through SOURCE's encoder and pairs."""
    tensors = getattr(source.data.train, "tensors", None)
    if tensors is None or len(tensors) < 2:
        raise GenkitError(f"--condition {source.domain.name}: its data must be a TensorDataset of (example, label)")
    x, transform = tensors[0], source.data.transform
    if transform is not None:  # once, here, not at every draw (SpecGAN's spectrograms cost an STFT per clip)
        with torch.no_grad():
            x = torch.cat([transform(chunk) for chunk in x.split(256)])
    pairs = Pairs(x, tensors[1], source.data.class_names, target_names)
    encoder = source.domain.condition_encoder(source.options, source.data, dim)
    return (ConditionedGenerator(G, encoder, pairs),
            ConditionedDiscriminator(D, encoder, pairs, dim, len(target_names), KEY_WEIGHT, frozen))


def check_target(domain: Any) -> None:
    if not getattr(domain, "vector_condition", False):
        raise GenkitError(f"--condition: domain {domain.name!r} cannot be conditioned on another domain (it does not "
                          "declare vector_condition)", exit_code=2)


def build_models(domain: Any, config: Any, data: Any, cache_dir: Any = None) -> tuple[nn.Module, nn.Module]:
    """``domain.build_models``, wrapped for ``--condition SOURCE`` when the run has one (training, sampling, info)."""
    train = config.train
    if not train.condition:
        return domain.build_models(config.options, data)
    check_target(domain)
    if not data.conditional or not data.class_names:
        raise GenkitError(f"--condition {train.condition}: the {domain.name} data needs class labels (the key that "
                          "pairs its examples with the source's)", exit_code=2)
    if train.condition == domain.name:
        raise GenkitError("--condition: a domain cannot be its own source; use its labels (--conditional)", exit_code=2)
    from .run import cache_dir as default_cache

    source = load_source(train.condition, train.condition_data, cache_dir or default_cache())
    data.cond_dim = train.condition_dim
    G, D = domain.build_models(config.options, data)
    data.extra["condition_source"] = source  # for genkit sample --condition VALUE
    return wrap(domain, source, G, D, data.class_names, train.condition_dim, frozen=bool(train.condition_from))


def load_encoder(G: nn.Module, D: nn.Module, source_run: Any, config: Any, device: Any) -> Any:
    """``--condition-from RUN``: RUN's condition encoder (from its discriminator's weights, where it was trained) into
    this run's shared encoder. RUN must be a cross-modal run of the same SOURCE and dimension; a mismatch of the
    encoder's layers is one line naming the layer. Returns the checkpoint folder used."""
    from safetensors.torch import load_file

    from .checkpoint import MODEL_FILES, load_state, verify_weights
    from .run import Run

    train = config.train
    flag = f"--condition-from {source_run}"
    run = Run.open(source_run)
    theirs = run.config.train
    if theirs.condition != train.condition or theirs.condition_dim != train.condition_dim:
        raise GenkitError(f"{flag}: that run's condition is {theirs.condition or 'none'!r} with dimension "
                          f"{theirs.condition_dim}, this one's {train.condition!r} with {train.condition_dim}", exit_code=2)
    ckpt = run.checkpoint()
    path = ckpt / MODEL_FILES["discriminator"]
    verify_weights(path, load_state(ckpt))
    weights = {k[len("encoder."):]: v for k, v in load_file(str(path)).items() if k.startswith("encoder.")}
    encoder: nn.Module = D.encoder  # type: ignore[assignment]  # shared with G
    own = encoder.state_dict()
    for key, tensor in own.items():
        if key not in weights:
            raise GenkitError(f"{flag}: encoder layer {key} is missing from {path}")
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise GenkitError(f"{flag}: encoder layer {key} has shape {tuple(weights[key].shape)} there, "
                              f"{tuple(tensor.shape)} here")
    encoder.load_state_dict({k: weights[k] for k in own})
    encoder.to(device)
    return ckpt


def use_condition(generator: nn.Module, data: Any, value: str) -> None:
    """Make every sample of ``generator`` (a cross-modal run's) use the condition ``value``, given in the source
    domain's own terms (a WAV file for audio, an image file for image, a string for text)."""
    source = data.extra.get("condition_source")
    if source is None or not isinstance(generator, ConditionedGenerator):
        raise GenkitError("--condition VALUE: this run was not trained with --condition SOURCE", exit_code=2)
    example = source.domain.condition_example(value, source.options, source.data)[:1]
    if source.data.transform is not None:
        example = source.data.transform(example)
    generator.pairs.override = example
