"""Cross-modal conditioning: ``genkit run TARGET --condition SOURCE`` (docs/cross-modal.md).

TARGET's generator and discriminator are conditioned on an embedding that SOURCE's condition encoder computes from
a *paired example* of SOURCE's data: pairs are formed by a shared key, the class (a handwritten 7 pairs with any
spoken "seven"). Every call draws a fresh paired example of each sample's key, so the generator learns the class,
not one exemplar: in training from SOURCE's training part, in evaluation mode (snapshots, ``genkit sample``,
evaluations) from a held-out part the encoder never saw. The embedding has ``--condition-dim`` dimensions and unit
L2 norm. The encoder first learns alone to name each example's key (the warm-up, ``--condition-warmup``), then
jointly with the discriminator (by the discriminator's loss); the generator receives the embedding without gradient,
times ``--condition-gain``.

``--pairs FILE`` takes the pairs from a user's manifest (a CSV or JSONL file, one column per domain, an optional
``key`` column) instead: the TARGET's examples are its TARGET column (loaded by the target's ``load_examples``),
the paired source examples its SOURCE column (each loaded by the source's ``condition_example``), and the keys are
the ``key`` values (every row its own key without one). Rows of one key form one pool; all rows train.

The protocol is generic (docs/plugins.md): a SOURCE implements ``condition_encoder(options, data, dim)`` and
``condition_example(value, options, data)``; a TARGET declares ``vector_condition = True`` and builds models that
take a (B, dim) float condition when ``data.cond_dim > 0`` (and, for ``--pairs``, implements
``load_examples(values, labels, class_names, options, *, cache_dir)``). The wrapped models keep the engine's
contract: ``G(z, key)``, ``D(x, key)`` with the key a class index, so snapshots, sampling and evaluations work
unchanged.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import GenkitError, first_line

HELD_OUT = 0.2  # share of each key's source examples kept for evaluation (never seen by the encoder in training)
SPLIT_SEED = 1234
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def key_of(name: str) -> str:
    """Class names of different domains meet here: "7", "seven" and "Seven" are one key."""
    name = name.strip().lower()
    return str(NUMBER_WORDS.index(name)) if name in NUMBER_WORDS else re.sub(r"\s+", " ", name)


class Pairs(nn.Module):
    """SOURCE's examples grouped by the TARGET class they pair with, split once into training and held-out parts."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, source_names: list[str], target_names: list[str],
                 held_out: float = HELD_OUT):
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
            n_test = max(1, int(len(idx) * held_out)) if len(idx) > 1 and held_out > 0 else 0
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
    """TARGET's generator under a SOURCE condition: ``G(z, key)``; the embedding carries no gradient here, and
    enters times ``gain`` (``--condition-gain``): unit-norm, its entries would be a tenth of z's."""

    def __init__(self, inner: nn.Module, encoder: nn.Module, pairs: Pairs, gain: float = 1.0):
        super().__init__()
        self.inner, self.encoder, self.pairs = inner, encoder, pairs
        self.gain = float(gain)

    def __getattr__(self, name: str) -> Any:
        """What the TARGET domain reads from its own generator (e.g. SpecGAN's ``spec_mean``) passes through."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def embed(self, keys: torch.Tensor) -> torch.Tensor:
        return embed(self.encoder, self.pairs.draw(keys.cpu(), held_out=not self.training).to(keys.device))

    def forward(self, z: torch.Tensor, key: torch.Tensor | None = None) -> torch.Tensor:
        if key is None:
            raise GenkitError("a cross-modal generator needs a condition (a class index) for every sample")
        with torch.no_grad():
            c = self.embed(key)
        return self.inner(z, c * self.gain if self.gain != 1.0 else c)


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


def warm_up(D: nn.Module, steps: int, batch_size: int, device: torch.device, seed: int,
            on_step: Any = None) -> dict[str, float]:
    """Train the condition encoder alone, before adversarial training (``--condition-warmup STEPS``): it and the
    discriminator's key classifier learn to name the key of freshly drawn training examples (Adam 1e-3, its own
    RNG), so that the generator meets embeddings already grouped by key at its first step instead of chasing
    ones that move while it learns. Returns the last loss and the classifier's accuracy on the held-out examples
    (the training ones under ``--pairs``), which the run logs at step 0."""
    if not isinstance(D, ConditionedDiscriminator) or D.classify is None or steps <= 0:
        return {}
    pairs, encoder, classify = D.pairs, D.encoder, D.classify
    params = [*encoder.parameters(), *classify.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    n_keys = len(pairs.train_idx)
    was_training = D.training
    D.train()
    loss = torch.zeros(())
    for _ in range(steps):
        keys = torch.randint(n_keys, (batch_size,), generator=g)
        x = pairs.draw(keys, held_out=False, generator=g).to(device)
        loss = nn.functional.cross_entropy(classify(embed(encoder, x)) * 10.0, keys.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if on_step is not None:
            on_step(1, {"loss": loss.item()})
    D.train(was_training)
    right = total = 0
    with torch.no_grad():
        for k, pool in enumerate(pairs.test_idx):
            for chunk in pool.split(256):
                guess = classify(embed(encoder, pairs.x[chunk].to(device))).argmax(dim=1)
                right += int((guess == k).sum())
                total += len(chunk)
    return {"condition_warmup_loss": round(loss.item(), 5), "condition_accuracy": round(right / max(total, 1), 5)}


def embed(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The condition embedding: the encoder's output with unit L2 norm."""
    return nn.functional.normalize(encoder(x).float(), dim=1)


@dataclasses.dataclass
class Source:
    """SOURCE's domain, options and loaded data, as a condition."""

    domain: Any
    options: Any
    data: Any


def load_source(name: str, data_spec: str, cache_dir: Any, labelled: bool = True) -> Source:
    """SOURCE's data with its recipe's option values (``--condition-data`` or its default data). Under ``--pairs``
    (``labelled`` false) it needs no labels: it only sets what ``condition_example`` needs (text: the tokenizer)."""
    from .config import resolve
    from .plugins import registry

    reg = registry()
    domain = reg.domain(name)
    if not callable(getattr(domain, "condition_encoder", None)):
        raise GenkitError(f"--condition {name}: domain {name!r} offers no condition encoder (docs/plugins.md: "
                          "Cross-modal conditions)", exit_code=2)
    cfg = resolve(domain, reg.losses, data=data_spec or None, flags=dict(domain.source_options),
                  flags_source=f"{name}'s source_options")
    data = domain.load_data(cfg.data, cfg.options, cache_dir=cache_dir)
    options = domain.resolve_options(cfg.options, data)
    if labelled and (not data.class_names or data.train is None):
        raise GenkitError(f"--condition {name}: its data {cfg.data!r} has no class labels to pair by")
    return Source(domain, options, data)


KEY_WEIGHT = 1.0  # weight of the encoder's classification term in the discriminator's loss


def wrap(target: Any, source: Source, G: nn.Module, D: nn.Module, target_names: list[str],
         dim: int, frozen: bool = False, examples: tuple[torch.Tensor, torch.Tensor] | None = None,
         gain: float = 1.0) -> tuple[nn.Module, nn.Module]:
    """TARGET's models (built with ``data.cond_dim = dim``) conditioned through SOURCE's encoder and pairs: SOURCE's
    labelled data paired by class name, or ``examples`` (a --pairs manifest's source examples and the index of each
    one's key in ``target_names``), all of which train (no held-out part)."""
    if examples is None:
        tensors = getattr(source.data.train, "tensors", None)
        if tensors is None or len(tensors) < 2:
            raise GenkitError(f"--condition {source.domain.name}: its data must be a TensorDataset of (example, "
                              "label)")
        x, labels, source_names, names, held_out = (tensors[0], tensors[1], source.data.class_names, target_names,
                                                    HELD_OUT)
    else:  # the keys are indices already: numerals, which key_of leaves distinct
        x, labels = examples
        names = source_names = [str(k) for k in range(len(target_names))]
        held_out = 0.0
    transform = source.data.transform
    if transform is not None:  # once, here, not at every draw (SpecGAN's spectrograms cost an STFT per clip)
        with torch.no_grad():
            x = torch.cat([transform(chunk) for chunk in x.split(256)])
    pairs = Pairs(x, labels, source_names, names, held_out)
    encoder = source.domain.condition_encoder(source.options, source.data, dim)
    return (ConditionedGenerator(G, encoder, pairs, gain),
            ConditionedDiscriminator(D, encoder, pairs, dim, len(target_names), KEY_WEIGHT, frozen))


def check_target(domain: Any) -> None:
    if not getattr(domain, "vector_condition", False):
        raise GenkitError(f"--condition: domain {domain.name!r} cannot be conditioned on another domain (it does not "
                          "declare vector_condition)", exit_code=2)


def load_data(domain: Any, config: Any, cache_dir: Any) -> Any:
    """TARGET's data for a new run: its ``--data``, or under ``--pairs FILE`` the manifest's TARGET column, read
    before the "auto" options are resolved so that they become the manifest's examples' own (image: their size and
    channels), not those of a ``--data`` the run does not train on."""
    train = config.train
    if not train.pairs:
        return domain.load_data(config.data, config.options, cache_dir=cache_dir)
    if not train.condition:
        raise GenkitError("--pairs needs --condition SOURCE (the domain of the manifest's other column)", exit_code=2)
    check_target(domain)
    manifest = read_manifest(train.pairs, domain.name, train.condition)
    data = target_examples(domain, manifest, config.options, cache_dir)
    _describe(data, manifest)
    data.pairs_manifest = str(manifest.path)  # build_models then uses these examples as they are
    return data


def build_models(domain: Any, config: Any, data: Any, cache_dir: Any = None) -> tuple[nn.Module, nn.Module]:
    """``domain.build_models``, wrapped for ``--condition SOURCE`` when the run has one (training, sampling, info)."""
    train = config.train
    if train.pairs and not train.condition:
        raise GenkitError("--pairs needs --condition SOURCE (the domain of the manifest's other column)", exit_code=2)
    if not train.condition:
        return domain.build_models(config.options, data)
    check_target(domain)
    if train.condition == domain.name:
        raise GenkitError("--condition: a domain cannot be its own source; use its labels (--conditional)", exit_code=2)
    from .run import cache_dir as default_cache

    cache = cache_dir or default_cache()
    manifest = read_manifest(train.pairs, domain.name, train.condition) if train.pairs else None
    source = load_source(train.condition, train.condition_data, cache, labelled=manifest is None)
    examples = None
    if manifest is not None:
        if getattr(data, "pairs_manifest", None) == str(manifest.path):
            pass  # loaded from the manifest already (load_data)
        elif data.train is not None:  # evaluation, info, resume: TARGET's examples are the manifest's
            use_examples(data, target_examples(domain, manifest, config.options, cache), manifest)
        elif list(data.class_names) != manifest.key_names:  # a trained run (data.json): the same keys, in order
            raise GenkitError(f"--pairs {manifest.path}: its keys ({_listed(manifest.key_names)}) are not those this "
                              f"run was trained with ({_listed(data.class_names)}); was the manifest edited since?")
        examples = (source_examples(source, manifest), torch.tensor(manifest.keys, dtype=torch.int64))
    if not data.conditional or not data.class_names:
        raise GenkitError(f"--condition {train.condition}: the {domain.name} data needs class labels (the key that "
                          "pairs its examples with the source's)", exit_code=2)
    data.cond_dim = train.condition_dim
    G, D = domain.build_models(config.options, data)
    data.extra["condition_source"] = source  # for genkit sample --condition VALUE
    return wrap(domain, source, G, D, data.class_names, train.condition_dim, frozen=bool(train.condition_from),
                examples=examples, gain=train.condition_gain)


# -- --pairs FILE: a user's own pairs -------------------------------------------------------------------------

MANIFEST_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
KEY_COLUMN = "key"


@dataclasses.dataclass
class Manifest:
    """A ``--pairs`` manifest: its rows (column -> value, both stripped, column names lower-case), the line each
    row starts on, and each row's key as an index into ``key_names`` (first appearance order)."""

    path: Path
    columns: list[str]
    rows: list[dict[str, str]]
    lines: list[int]
    keys: list[int]
    key_names: list[str]
    keyed: bool

    def where(self, row: int, column: str) -> str:
        return f"--pairs {self.path}: line {self.lines[row]}, column {column!r}"

    def value(self, row: int, column: str) -> str:
        """The row's value: a file's absolute path when the value names an existing file relative to the
        manifest's folder (or an absolute one), else the value as written (a phrase, or a missing file)."""
        value = self.rows[row][column]
        path = Path(value).expanduser()
        path = path if path.is_absolute() else self.path.parent / path
        try:
            return str(path) if path.is_file() else value
        except (OSError, ValueError):  # a phrase too long or odd for a file name
            return value


def read_manifest(file: str, target: str, source: str) -> Manifest:
    """Parse and check a ``--pairs`` file: a ``.csv`` with a header row, or ``.jsonl`` (one JSON object a line);
    columns ``target`` and ``source`` (domain names) and optionally ``key``. Anything wrong is one line naming
    the file, and the line and column where it is."""
    path = Path(file).expanduser()
    flag = f"--pairs {path}"
    kind = MANIFEST_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise GenkitError(f"{flag}: expected a .csv or .jsonl manifest (columns {target},{source}[,key])", exit_code=2)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise GenkitError(f"{flag}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GenkitError(f"{flag}: not readable ({exc.__class__.__name__})") from None
    columns, rows, lines = (_read_csv if kind == "csv" else _read_jsonl)(text, flag)
    if not rows:
        raise GenkitError(f"{flag}: no rows (the manifest needs columns {target},{source}[,key] and one row per pair)")
    for name, role in ((target, "the target's examples"), (source, "the --condition source's examples")):
        if name not in columns:
            raise GenkitError(f"{flag}: no {name!r} column ({role}); its columns: {', '.join(columns) or 'none'}")
    keyed = KEY_COLUMN in columns
    needed = (target, source, KEY_COLUMN) if keyed else (target, source)
    for row, line in zip(rows, lines):
        for name in needed:
            if not row.get(name):
                raise GenkitError(f"{flag}: line {line}, column {name!r} is empty")
    if keyed:
        index: dict[str, int] = {}
        for row, line in zip(rows, lines):
            key = row[KEY_COLUMN]
            if "/" in key or "\\" in key:
                raise GenkitError(f"{flag}: line {line}, column 'key': {key!r} holds a path separator (keys name "
                                  "sample files)")
            index.setdefault(key, len(index))
        key_names = list(index)
        keys = [index[row[KEY_COLUMN]] for row in rows]
    else:  # every row is its own key
        key_names = [f"row{i + 1}" for i in range(len(rows))]
        keys = list(range(len(rows)))
    return Manifest(path.absolute(), columns, rows, lines, keys, key_names, keyed)


def _read_csv(text: str, flag: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    reader = csv.reader(io.StringIO(text))
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            fields = next(reader, None)
            if fields is None:
                break
            if not any(f.strip() for f in fields):  # a blank line
                continue
            if header is None:
                header = [f.strip().lower() for f in fields]
                continue
            if len(fields) > len(header):
                raise GenkitError(f"{flag}: line {start} has {len(fields)} fields but the header {len(header)} "
                                  "(quote a value that holds a comma)")
            rows.append({name: value.strip() for name, value in zip(header, fields)})
            lines.append(start)
    except csv.Error as exc:
        raise GenkitError(f"{flag}: line {reader.line_num}: not valid CSV ({exc})") from None
    return header or [], rows, lines


def _read_jsonl(text: str, flag: str) -> tuple[list[str], list[dict[str, str]], list[int]]:
    columns: dict[str, None] = {}
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GenkitError(f"{flag}: line {number} is not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise GenkitError(f"{flag}: line {number} is not a JSON object ({{\"column\": \"value\", ...}})")
        row: dict[str, str] = {}
        for name, value in obj.items():
            name = str(name).strip().lower()
            if isinstance(value, (dict, list)):
                raise GenkitError(f"{flag}: line {number}, column {name!r}: expected a string or a number")
            row[name] = "" if value is None else str(value).strip()
            columns.setdefault(name)
        rows.append(row)
        lines.append(number)
    return list(columns), rows, lines


def _listed(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f", ... ({len(names)} in all)" if len(names) > most else "")


def _reason(exc: GenkitError) -> str:
    """A domain's one-line message, without the ``--condition`` flag it names when the value came from there."""
    return re.sub(r"^--condition:?\s+", "", first_line(exc))


def target_examples(domain: Any, manifest: Manifest, options: Any, cache_dir: Any) -> Any:
    """TARGET's ``Data`` of the manifest's TARGET column (``domain.load_examples``), example i of key i's row."""
    loader = getattr(domain, "load_examples", None)
    if not callable(loader):
        raise GenkitError(f"--pairs: domain {domain.name!r} cannot load its examples from a manifest (it does not "
                          "implement load_examples; docs/plugins.md: Cross-modal conditions)", exit_code=2)
    column = domain.name
    values = [manifest.value(i, column) for i in range(len(manifest.rows))]
    try:
        data = loader(values, torch.tensor(manifest.keys, dtype=torch.int64), list(manifest.key_names), options,
                      cache_dir=cache_dir)
    except GenkitError as exc:  # the row whose value the message names (the longest such value)
        reason = _reason(exc)
        named = [(len(v), -i) for i, v in enumerate(values) if v and v in reason]
        where = manifest.where(-max(named)[1], column) if named else f"--pairs {manifest.path}, column {column!r}"
        raise GenkitError(f"{where}: {reason}", exit_code=exc.exit_code) from None
    train = getattr(data, "train", None)
    if train is None or len(train) != len(values):
        raise GenkitError(f"domain {domain.name!r}: load_examples returned {len(train) if train is not None else 0} "
                          f"examples for the manifest's {len(values)} rows")
    return data


def use_examples(data: Any, loaded: Any, manifest: Manifest) -> None:
    """Make ``data`` (what the run's ``--data`` loaded; the engine holds it) the manifest's: in place."""
    for field in dataclasses.fields(loaded):
        if field.name != "cond_dim":
            setattr(data, field.name, getattr(loaded, field.name))
    _describe(data, manifest)


def _describe(data: Any, manifest: Manifest) -> None:
    """``data.source`` (the target's own description of the examples) prefixed with the manifest's."""
    rows, keys = len(manifest.rows), len(manifest.key_names)
    data.source = (f"--pairs {manifest.path} ({rows} pair{'s' * (rows != 1)}, {keys} key{'s' * (keys != 1)}"
                   + (f"; {data.source})" if data.source else ")"))


def source_examples(source: Source, manifest: Manifest) -> torch.Tensor:
    """SOURCE's example of every row (``condition_example`` of its SOURCE value), in its stored form, stacked."""
    column = source.domain.name
    done: dict[str, torch.Tensor] = {}
    examples: list[torch.Tensor] = []
    for i in range(len(manifest.rows)):
        value = manifest.value(i, column)
        if value not in done:
            try:
                example = source.domain.condition_example(value, source.options, source.data)
            except GenkitError as exc:
                raise GenkitError(f"{manifest.where(i, column)}: {_reason(exc)}", exit_code=exc.exit_code) from None
            done[value] = torch.as_tensor(example)[:1]
        example = done[value]
        if examples and example.shape[1:] != examples[0].shape[1:]:
            raise GenkitError(f"{manifest.where(i, column)}: its example has shape {tuple(example.shape[1:])}, line "
                              f"{manifest.lines[0]}'s {tuple(examples[0].shape[1:])}")
        examples.append(example)
    return torch.cat(examples)


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
