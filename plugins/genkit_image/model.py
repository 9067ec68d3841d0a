"""DCGAN generator and discriminator for 28 x 28, 32 x 32 and 64 x 64 images with 1 or 3 channels.

Paper: Radford, Metz & Chintala, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks", ICLR 2016.

What the paper prescribes and this file follows: strided (transposed) convolutions instead of pooling,
batch norm in both networks except the generator's output and the discriminator's input layer, ReLU in
the generator with tanh at the output, LeakyReLU(0.2) in the discriminator, weights from N(0, 0.02).

Where it departs:
- The generator's first layer is a transposed convolution from 1 x 1 to the base grid (the "project and
  reshape" of the paper, as pytorch/examples' dcgan does it); the base grid is 7 x 7 for 28 x 28 images
  (MNIST) and 4 x 4 otherwise, then each layer doubles the side.
- Class-conditional variant: the generator sees the one-hot class appended to z (Mirza & Osindero 2014);
  the discriminator adds a projection term <embed(y), features> to its logit (Miyato & Koyama 2018).
- ``augment`` (off by default) applies DiffAugment (Zhao et al. 2020) inside the discriminator, for small data.
- ``d_norm`` swaps the discriminator's batch norm for spectral norm, layer norm or none: batch norm is
  wrong with per-sample gradient penalties (Gulrajani et al. 2017 use layer norm), spectral norm
  (Miyato et al. 2018) is the usual choice for hinge loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .augment import diff_augment


@dataclass
class DCGANConfig:
    size: int = 28  # image side: 28 (MNIST), 32 (CIFAR) or 64 (the paper's LSUN/faces)
    channels: int = 1  # 1 = grayscale, 3 = RGB
    latent_dim: int = 100  # the paper's z is 100-dimensional
    g_width: int = 64  # channels of the generator's last hidden layer; doubles towards the input (ngf)
    d_width: int = 64  # channels of the discriminator's first layer; doubles with depth (ndf)
    num_classes: int = 0  # > 0: class-conditional
    cond_dim: int = 0  # > 0: conditioned on a (B, cond_dim) vector, e.g. another domain's embedding (--condition)
    d_norm: str = "batch"  # batch | spectral | layer | none
    augment: tuple[str, ...] = ()  # DiffAugment policies applied to everything D sees while training

    @property
    def base(self) -> int:
        return 7 if self.size == 28 else 4

    @property
    def n_up(self) -> int:
        n = math.log2(self.size / self.base)
        if n != int(n) or n < 1:
            raise ValueError(f"image size {self.size} is not {self.base} * 2^k")
        return int(n)


def init_weights(module: nn.Module) -> None:
    """DCGAN initialisation: conv weights ~ N(0, 0.02), batch-norm scale ~ N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            weight = getattr(m, "weight_orig", m.weight)
            nn.init.normal_(weight, 0.0, 0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.g_width * 2 ** (cfg.n_up - 1)
        in_dim = cfg.latent_dim + cfg.num_classes + cfg.cond_dim
        layers: list[nn.Module] = [
            nn.ConvTranspose2d(in_dim, ch, cfg.base, 1, 0, bias=False),  # 1x1 -> base x base
            nn.BatchNorm2d(ch),
            nn.ReLU(True),
        ]
        for _ in range(cfg.n_up - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ch // 2), nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, cfg.channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.num_classes:
            z = torch.cat([z, F.one_hot(y.long(), self.cfg.num_classes).to(z.dtype)], dim=1)
        elif self.cfg.cond_dim:
            z = torch.cat([z, y.to(z.dtype)], dim=1)
        return self.net(z[:, :, None, None])


class Discriminator(nn.Module):
    def __init__(self, cfg: DCGANConfig):
        super().__init__()
        self.cfg = cfg
        sn = nn.utils.spectral_norm if cfg.d_norm == "spectral" else (lambda m: m)
        ch, side = cfg.d_width, cfg.size // 2
        layers: list[nn.Module] = [sn(nn.Conv2d(cfg.channels, ch, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
        for _ in range(cfg.n_up - 1):
            side //= 2
            layers.append(sn(nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=cfg.d_norm != "batch")))
            if cfg.d_norm == "batch":
                layers.append(nn.BatchNorm2d(ch * 2))
            elif cfg.d_norm == "layer":
                layers.append(nn.GroupNorm(1, ch * 2))  # layer norm over (C, H, W)
            layers.append(nn.LeakyReLU(0.2, True))
            ch *= 2
        self.features = nn.Sequential(*layers)
        self.out = sn(nn.Conv2d(ch, 1, cfg.base, 1, 0))  # base x base -> one logit
        self.embed = sn(nn.Embedding(cfg.num_classes, ch)) if cfg.num_classes else None
        self.project = sn(nn.Linear(cfg.cond_dim, ch, bias=False)) if cfg.cond_dim else None
        init_weights(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.cfg.augment and self.training:
            x = diff_augment(x, self.cfg.augment)
        h = self.features(x)
        logit = self.out(h).flatten()
        if self.embed is not None:
            logit = logit + (self.embed(y.long()) * h.sum(dim=(2, 3))).sum(dim=1)
        elif self.project is not None:  # the projection term with a condition vector instead of a class embedding
            logit = logit + (self.project(y.to(h.dtype)) * h.sum(dim=(2, 3))).sum(dim=1)
        return logit


class ConditionEncoder(nn.Module):
    """The image domain's condition encoder (``genkit run TARGET --condition image``): three stride-2
    convolutions (``width``, 2 x and 4 x ``width`` channels, LeakyReLU 0.2; 28 px -> 14 -> 7 -> 4), global average
    pooling and a linear map to ``dim``. It takes images as ``Data.transform`` makes them: (B, C, H, W) floats in
    [-1, 1], any side of 8 px or more. genkit normalises its output to unit L2 norm."""

    def __init__(self, channels: int, dim: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x.float()))
