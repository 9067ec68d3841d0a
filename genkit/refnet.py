"""Reference classifiers ("refnet"): the small per-domain networks whose features the offline metrics compare.

No Inception (or other pretrained) weights can be downloaded on an offline machine, so a domain trains a small
classifier on its own labelled data: a held-out tenth is split off with a fixed seed, the rest trains the
network with Adam under fixed seeds (the caller's random state is left alone), and the weights are cached by
data so that later evaluations load them. A domain supplies the network (its ``forward`` returns logits and
penultimate features) and the conversion of its stored samples to floats; see :mod:`genkit.metrics`.

A domain may also ship classifiers for its built-in data (``shipped``): a fresh machine then loads the one trained
on the same data by the same recipe instead of training it (a minute for the audio domain's spoken digits), and
every machine scores with the same weights. Within a process, a classifier and its features of the real examples
are computed once: a run's evaluations after the first score only the new samples.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from genkit.errors import warn
from genkit.files import atomic_write
from genkit.metrics import classifier_metrics, memorisation_metrics

Net = TypeVar("Net", bound=nn.Module)
Convert = Callable[[torch.Tensor], torch.Tensor]


def cache_key(tag: str, source: str, x: torch.Tensor, y: torch.Tensor) -> str:
    """A short hash of the data (its source, shape, a sample of ``x`` and all labels ``y``) and a version ``tag``."""
    h = hashlib.sha256()
    h.update(f"{tag} {source} {tuple(x.shape)}".encode())
    h.update(x[:: max(1, len(x) // 64)].numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()[:16]


def data_key(tag: str, x: torch.Tensor, y: torch.Tensor) -> str:
    """A hash of every sample ``x``, every label ``y`` and the version ``tag``: what a shipped classifier was trained
    on (unlike :func:`cache_key`, whatever the data's source says, such as the cache folder it was read from)."""
    h = hashlib.sha256()
    h.update(f"{tag} {tuple(x.shape)} {x.dtype}".encode())
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()


def ship(net: nn.Module, path: Path, tag: str, x: torch.Tensor, y: torch.Tensor) -> Path:
    """Write ``net`` (trained by :func:`reference_classifier` with ``tag`` on ``x``, ``y``) as a classifier a domain
    can ship: its weights, with the version and :func:`data_key` of its data in the file's metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(net, str(path), metadata={"genkit_refnet": tag, "data": data_key(tag, x, y)})
    return path


def _shipped(folder: Path | None, tag: str, x: torch.Tensor, y: torch.Tensor) -> Path | None:
    """The file in ``folder`` that :func:`ship` wrote for this ``tag`` and exactly this data, if any."""
    if folder is None or not Path(folder).is_dir():
        return None
    key = None
    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt") as f:
                meta = f.metadata() or {}
        except Exception:
            continue  # not a shipped classifier
        if meta.get("genkit_refnet") == tag:
            key = key or data_key(tag, x, y)
            if meta.get("data") == key:
                return file
    return None


# This process's classifiers by cache file (path, size, modification time); each keeps its features of real examples
# by content (_real_features): a run evaluates several times against the same held-out and training examples.
_NETS: OrderedDict[tuple, tuple[nn.Module, float]] = OrderedDict()
_KEEP = 4


def _remember(memo: OrderedDict, key: tuple, value):
    memo[key] = value
    memo.move_to_end(key)
    while len(memo) > _KEEP:
        memo.popitem(last=False)
    return value


def reference_classifier(x: torch.Tensor, y: torch.Tensor, make: Callable[[], Net], to_float: Convert, source: str,
                         cache_dir: Path, *, folder: str, tag: str = "v1", epochs: int = 4, min_updates: int = 0,
                         batch: int = 128, lr: float = 1e-3, min_test: int = 1, min_batch: int = 1,
                         feature_batch: int = 500, cosine: bool = False, threads: int | None = None,
                         shipped: Path | None = None) -> tuple[Net, float, torch.Tensor]:
    """Train (or load from ``cache_dir/folder``) the classifier ``make()`` on samples ``x`` and labels ``y``.

    ``epochs`` passes over the training samples in batches of ``batch`` (more passes on a small data set, so that
    there are ``min_updates`` Adam steps), skipping batches smaller than ``min_batch`` (2 for batch norm); at least
    ``min_test`` samples are held out. ``to_float`` turns stored samples into the network's input. ``cosine``
    decays the learning rate from ``lr`` to 0 over all updates (cosine), so that the last weights, the ones kept,
    are not those of one noisy step at the full rate. ``threads`` trains with that many CPU threads whatever the
    caller's setting (1: the same weights whether the run used ``--threads 1`` or 2, since threads change the
    order of floating-point sums). ``shipped``: a folder of classifiers that :func:`ship` wrote; on a cache miss,
    the one of this ``tag`` and exactly this data is copied into the cache instead of training. Returns the
    classifier (eval mode; the same object again in this process while its cache file is unchanged, so use it for
    inference only), its accuracy on the held-out samples, and their indices.
    """
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    n_test = max(min_test, len(x) // 10)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    path = Path(cache_dir) / folder / f"{cache_key(tag, source, x, y)}.safetensors"
    known = _NETS.get(_file_id(path))
    if known is not None:
        return known[0], known[1], test_idx  # type: ignore[return-value]  # built by this same make()
    net = make()
    if not _load(net, path) and not _copy_shipped(net, _shipped(shipped, tag, x, y), path):
        with torch.random.fork_rng(devices=[]), torch.enable_grad(), _threads(threads):  # evaluations: no_grad
            torch.default_generator.manual_seed(0)  # the CPU generator only: fork_rng restores just that one
            net = make()
            opt = torch.optim.Adam(net.parameters(), lr=lr)
            net.train()
            per_epoch = max(1, len(train_idx) // batch)
            rounds = max(epochs, -(-min_updates // per_epoch))
            total = rounds * sum(len(c) >= min_batch for c in torch.arange(len(train_idx)).split(batch))
            done = 0
            for _ in range(rounds):
                for idx in train_idx[torch.randperm(len(train_idx), generator=g)].split(batch):
                    if len(idx) < min_batch:
                        continue
                    if cosine:
                        opt.param_groups[0]["lr"] = lr * 0.5 * (1.0 + math.cos(math.pi * done / total))
                    logits, _ = net(to_float(x[idx]))
                    loss = F.cross_entropy(logits, y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    done += 1
        atomic_write(path, lambda tmp: save_model(net, str(tmp)))
    net.eval()
    probs, _ = features(net, x[test_idx], to_float, feature_batch)
    accuracy = float((probs.argmax(1) == y[test_idx]).float().mean())
    _remember(_NETS, _file_id(path), (net, accuracy))
    return net, accuracy, test_idx


def _file_id(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (str(path), None)
    return (str(path), st.st_size, st.st_mtime_ns)


def _copy_shipped(net: nn.Module, file: Path | None, path: Path) -> bool:
    """Load the shipped classifier ``file`` into ``net`` and copy it to the cache ``path``; False when there is none."""
    if file is None or not _load(net, file):
        return False
    atomic_write(path, lambda tmp: shutil.copyfile(file, tmp))
    return True


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    """torch's CPU threads set to ``n`` (None: left as they are) inside the block, restored after it."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load(net: nn.Module, path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        load_model(net, str(path))
        return True
    except Exception:  # a corrupt cache file is rebuilt, never trusted
        warn(f"{path}: unreadable cached classifier, training a new one")
        return False


@torch.no_grad()
def features(net: nn.Module, x: torch.Tensor, to_float: Convert, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and penultimate features of samples ``x``, ``batch`` at a time on the CPU."""
    probs, feats = [], []
    for chunk in x.split(batch):
        logits, f = net(to_float(chunk).cpu())
        probs.append(logits.softmax(1))
        feats.append(f)
    return torch.cat(probs), torch.cat(feats)


def score(net: nn.Module, accuracy: float, real: torch.Tensor, fake: torch.Tensor, to_float: Convert,
          batch: int = 500, train: torch.Tensor | None = None, fake_cond: torch.Tensor | None = None) -> dict[str, float]:
    """:func:`genkit.metrics.classifier_metrics` (keys ``refnet_*``) of samples ``fake`` against held-out ``real``;
    with the ``train`` examples also :func:`genkit.metrics.memorisation_metrics` (``refnet_nn_*``); with the
    samples' class conditions ``fake_cond`` also ``refnet_cond_accuracy``, the share of samples refnet classifies
    as the class they were asked for (conditional accuracy; chance is 1 / classes)."""
    p_fake, f_fake = features(net, fake, to_float, batch)
    p_real, f_real = _real_features(net, real, to_float, batch)
    out = classifier_metrics(p_fake, f_fake, p_real, f_real, accuracy, prefix="refnet")
    if fake_cond is not None:
        out["refnet_cond_accuracy"] = float((p_fake.argmax(1) == fake_cond.long().cpu()).float().mean())
    if train is not None:
        _, f_train = _real_features(net, train, to_float, batch)
        out.update(memorisation_metrics(f_fake, f_real, f_train, prefix="refnet"))
    return out


def _real_features(net: nn.Module, x: torch.Tensor, to_float: Convert, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`features` of real examples, computed once per classifier and content in this process."""
    memo = net.__dict__.setdefault("_genkit_real_features", OrderedDict())
    key = (tuple(x.shape), str(x.dtype), hashlib.sha256(x.contiguous().cpu().numpy().tobytes()).hexdigest())
    if key in memo:
        return memo[key]
    return _remember(memo, key, features(net, x, to_float, batch))


def train_examples(n: int, test_idx: torch.Tensor, limit: int = 5000) -> torch.Tensor:
    """Indices of the examples not held out (at most ``limit``, evenly spread), for the memorisation metrics."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[test_idx] = False
    idx = keep.nonzero().flatten()
    return idx[torch.linspace(0, len(idx) - 1, min(limit, len(idx))).long()] if len(idx) > limit else idx
