"""Offline image metrics in the feature space of a small reference classifier ("refnet").

Inception weights cannot be downloaded here, so — as TF-GAN's MNIST example does with its local classifier —
the image domain trains a small CNN on the run's own labelled data (a few epochs, cached in the genkit cache
folder) and reports, for generated samples:

- ``refnet_is``: inception score with refnet's class probabilities (10 = every class equally, each sample sure)
- ``refnet_fd``: Fréchet distance between refnet's penultimate features of samples and of real images
- ``refnet_kid``: kernel inception distance on the same features
- ``refnet_confident``: share of samples refnet classifies with probability > 0.9 (recognisable samples)
- ``refnet_classes``: number of classes that receive at least half their fair share of samples
- ``refnet_is_real`` and ``refnet_accuracy``: the same score on real held-out images, and refnet's accuracy
  there — the reference points that make the numbers above readable.

These numbers compare genkit runs on the same data; they are not Inception FID/IS and not comparable with papers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_model, save_model
from torch import nn

from genkit import warn
from genkit.metrics import classifier_metrics


class RefNet(nn.Module):
    """A small CNN classifier (16 and 32 channels): two conv blocks, a 128-d feature layer, a linear classifier."""

    def __init__(self, channels: int, size: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * (size // 4) ** 2, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, x):
        feats = self.body(x)
        return self.head(feats), feats


def _key(source: str, x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(source.encode())
    h.update(str(tuple(x.shape)).encode())
    h.update(x[:: max(1, len(x) // 64)].numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()[:16]


def reference_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, source: str, cache_dir: Path,
                         epochs: int = 4) -> tuple[RefNet, float, torch.Tensor]:
    """Train (or load from the cache) refnet on uint8 images ``x`` and labels ``y``.

    Returns the classifier, its accuracy on a held-out tenth of the data, and the held-out indices.
    """
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    n_test = max(1, len(x) // 10)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    net = RefNet(x.shape[1], x.shape[-1], num_classes)
    path = cache_dir / "image-refnet" / f"{_key(source, x, y)}.safetensors"
    if path.is_file():
        try:
            load_model(net, str(path))
            net.eval()
            with torch.no_grad():
                acc = _accuracy(net, x[test_idx], y[test_idx])
            return net, acc, test_idx
        except Exception:  # a corrupt cache file is rebuilt, never trusted
            warn(f"{path}: unreadable cached classifier, training a new one")
    with torch.random.fork_rng(devices=[]), torch.enable_grad():  # evaluations run under no_grad
        torch.default_generator.manual_seed(0)  # the CPU generator only: fork_rng restores just that one
        net = RefNet(x.shape[1], x.shape[-1], num_classes)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        net.train()
        for _ in range(epochs):
            for idx in train_idx[torch.randperm(len(train_idx), generator=g)].split(128):
                logits, _ = net(_float(x[idx]))
                loss = F.cross_entropy(logits, y[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    net.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_model(net, str(tmp))
    tmp.replace(path)
    with torch.no_grad():
        acc = _accuracy(net, x[test_idx], y[test_idx])
    return net, acc, test_idx


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x


@torch.no_grad()
def _accuracy(net: RefNet, x: torch.Tensor, y: torch.Tensor) -> float:
    logits, _ = net(_float(x))
    return float((logits.argmax(1) == y).float().mean())


@torch.no_grad()
def features(net: RefNet, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    probs, feats = [], []
    for chunk in x.split(batch):
        logits, f = net(_float(chunk).cpu())
        probs.append(logits.softmax(1))
        feats.append(f)
    return torch.cat(probs), torch.cat(feats)


def score(net: RefNet, accuracy: float, real: torch.Tensor, fake: torch.Tensor, num_classes: int) -> dict[str, float]:
    """All refnet metrics of generated images ``fake`` (floats in [-1, 1]) against ``real`` (uint8)."""
    p_fake, f_fake = features(net, fake)
    p_real, f_real = features(net, real)
    return classifier_metrics(p_fake, f_fake, p_real, f_real, accuracy, prefix="refnet")
