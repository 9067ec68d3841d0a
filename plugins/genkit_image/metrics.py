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
- ``refnet_nn_train``, ``_nn_train_real``, ``_nn_ratio``, ``_nn_self``: nearest-neighbour distances in refnet's
  feature space, the memorisation check (``genkit.metrics.memorisation_metrics``)

These numbers compare genkit runs on the same data; they are not Inception FID/IS and not comparable with papers.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genkit import refnet


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


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(127.5).sub(1.0) if x.dtype == torch.uint8 else x


def reference_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, source: str, cache_dir: Path,
                         epochs: int = 4) -> tuple[RefNet, float, torch.Tensor]:
    """Train (or load from the cache) refnet on uint8 images ``x`` and labels ``y``.

    Returns the classifier, its accuracy on a held-out tenth of the data, and the held-out indices.
    """
    return refnet.reference_classifier(x, y, lambda: RefNet(x.shape[1], x.shape[-1], num_classes), _float, source,
                                       cache_dir, folder="image-refnet", epochs=epochs)


def features(net: RefNet, x: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and 128-d features of images ``x`` (uint8, or floats in [-1, 1])."""
    return refnet.features(net, x, _float, batch)


def score(net: RefNet, accuracy: float, real: torch.Tensor, fake: torch.Tensor, num_classes: int,
          train: torch.Tensor | None = None, fake_cond: torch.Tensor | None = None) -> dict[str, float]:
    """All refnet metrics of generated images ``fake`` (floats in [-1, 1]) against ``real`` (uint8); with the
    ``train`` images also the nearest-neighbour memorisation check (``refnet_nn_*``), with the samples' classes
    ``fake_cond`` the conditional accuracy (``refnet_cond_accuracy``)."""
    return refnet.score(net, accuracy, real, fake, _float, train=train, fake_cond=fake_cond)
