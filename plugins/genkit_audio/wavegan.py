"""WaveGAN: a generator and a discriminator of raw audio waveforms.

Paper: Donahue, McAuley & Puckette, "Adversarial Audio Synthesis", ICLR 2019; the authors' code is
chrisdonahue/wavegan (``wavegan.py``, ``train_wavegan.py``). This file follows that code layer by layer:

- Generator: z (100-d, drawn from U[-1, 1] by the domain) -> dense -> [16d x 16] -> ReLU -> five 1-D
  transposed convolutions (kernel 25, stride 4, TensorFlow 'same' alignment) halving the channels
  16d -> 8d -> 4d -> 2d -> d -> 1 and multiplying the length 16 -> 64 -> ... -> 16384, ReLU between,
  tanh at the end, no batch norm. ``upsample="nn"`` replaces each transposed convolution by
  nearest-neighbour upsampling and a stride-1 convolution. 32768 / 65536 samples start from 32d channels
  and add one layer (stride 2 / 4), as the authors' later code does.
- Optional post-processing filter: a learned 512-tap convolution (no bias) applied to G's output, inside
  the generator, so that whatever uses G (training, snapshots, ``genkit sample``) sees it.
- Discriminator: five 1-D convolutions (kernel 25, stride 4, 'same') with channels 1 -> d -> ... -> 16d,
  LeakyReLU(0.2), phase shuffle (radius 2, reflect padding) after each of the first four, flatten, dense
  to one logit. Longer outputs add a sixth convolution (32d channels).
- Initialisation as TensorFlow's defaults, which the authors kept: Glorot-uniform weights, zero biases.

Departures:
- Phase shuffle draws one shift per batch per layer, as the authors' ``apply_phaseshuffle`` does, from
  torch's global RNG (checkpointed by genkit, so resumed runs stay exact).
- ``num_classes > 0`` (genkit's ``--conditional``, not in the paper) appends a one-hot label to z and adds
  a projection term <embed(y), features> to the discriminator's logit (Miyato & Koyama 2018).
- The paper's training (WGAN-GP lambda 10, 5 critic steps, Adam 1e-4 / (0.5, 0.9), batch 64) is genkit's
  engine, configured by the domain's ``paper`` preset; nothing of it lives here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import WAVEGAN_LENGTHS as LENGTHS  # the package holds the torch-free constants
from .augment import augment


@dataclass
class WaveGANConfig:
    length: int = 16384  # output samples: 16384 (about 1 s at 16 kHz, the paper), 32768 or 65536
    d: int = 64  # model size: channels of the widest layer are 16d (32d for longer outputs); paper d = 64
    latent_dim: int = 100  # the paper's z is 100-dimensional, uniform on [-1, 1]
    kernel: int = 25  # all convolutions have kernel 25
    upsample: str = "zeros"  # "zeros" = transposed convolution (paper default), "nn" = nearest neighbour + conv
    phase_shuffle: int = 2  # radius n of the discriminator's phase shuffle; 0 = off (paper: n = 2)
    post_filter: bool = False  # learned 512-tap filter after the generator (paper: off by default)
    post_filter_len: int = 512  # taps of that filter (authors' --wavegan_genr_pp_len)
    num_classes: int = 0  # > 0: class-conditional (a genkit addition)
    augment: tuple[str, ...] = ()  # DiffAugment policies (augment.py) on all D sees while training (a genkit addition)
    aux_class: float = 0.0  # > 0 (conditional): AC-GAN's auxiliary classifier in D, this weight (a genkit addition)
    aux_fake_class: float = 0.0  # > 0: the classifier's K + 1-th class, generated clips, this weight (genkit)
    cond_dim: int = 0  # > 0: conditioned on a (B, cond_dim) vector, another domain's embedding (--condition)

    def __post_init__(self) -> None:
        if self.length not in LENGTHS:
            raise ValueError(f"WaveGAN length must be one of {LENGTHS}, got {self.length}")
        if self.upsample not in ("zeros", "nn"):
            raise ValueError(f"upsample must be 'zeros' or 'nn', got {self.upsample!r}")
        if self.phase_shuffle < 0:
            raise ValueError(f"phase-shuffle radius must be >= 0, got {self.phase_shuffle}")

    @property
    def dim_mul(self) -> int:
        return 16 if self.length == 16384 else 32

    @property
    def strides(self) -> list[int]:
        """Strides of the generator's upsampling layers (the discriminator mirrors them)."""
        return {16384: [4] * 5, 32768: [4] * 5 + [2], 65536: [4] * 6}[self.length]

    @property
    def g_channels(self) -> list[int]:
        """Channels from the dense layer to the output: [16d, 8d, 4d, 2d, d, 1] for 16384 samples."""
        n = len(self.strides)
        return [self.d * self.dim_mul // 2**i for i in range(n)] + [1]


def same_pad(kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding for a length divisible by ``stride``: total k - s, the extra one on the right."""
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def glorot_(module: nn.Module) -> None:
    """TensorFlow's default initialisation (the authors'): Glorot-uniform kernels, zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class Conv1dSame(nn.Conv1d):
    """A strided 1-D convolution with TensorFlow 'same' padding: output length = input length / stride.

    On the CPU, long strided inputs take a faster, mathematically identical route (``polyphase_conv1d``):
    PyTorch's CPU backward of a stride-4, kernel-25 convolution is 4-7x slower than that of the equivalent
    stride-1 convolution over the input's polyphase components. The weights are the usual (out, in, k).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, bias: bool = True):
        super().__init__(cin, cout, kernel, stride, padding=0, bias=bias)
        self.pad = same_pad(kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, self.pad)
        s = self.stride[0]
        if s > 1 and x.device.type == "cpu":
            return polyphase_conv1d(x, self.weight, self.bias, s)
        return F.conv1d(x, self.weight, self.bias, s)


def polyphase_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, stride)`` computed as a stride-1 convolution of the ``stride`` phases of x.

    out[o, t] = sum_{c,k} w[o, c, k] x[c, s t + k]; writing k = s j + r, x[c, s (t + j) + r] is phase r of
    channel c at position t + j, so the phases become s * C input channels and the kernel ceil(k / s) taps.
    """
    b, c, n = x.shape
    cout, _, k = weight.shape
    taps = -(-k // stride)
    out_len = (n - k) // stride + 1
    x = F.pad(x, (0, (-n) % stride))
    xx = x.view(b, c, -1, stride).transpose(2, 3).reshape(b, c * stride, -1)
    ww = F.pad(weight, (0, taps * stride - k)).view(cout, c, taps, stride).transpose(2, 3).reshape(cout, c * stride, taps)
    return F.conv1d(xx, ww, bias)[..., :out_len]


class UpConv1d(nn.Module):
    """Upsampling by ``stride``: a transposed convolution aligned as TensorFlow's 'same' (``zeros``), or
    nearest-neighbour repetition followed by a stride-1 'same' convolution (``nn``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, mode: str):
        super().__init__()
        self.stride, self.mode = stride, mode
        if mode == "zeros":
            # The full transposed output has length (L-1)*s + k = s*L + (k - s); TF crops (k-s)//2 on the left.
            self.crop = same_pad(kernel, stride)[0]
            self.conv = nn.ConvTranspose1d(cin, cout, kernel, stride, padding=self.crop)
        else:
            self.conv = Conv1dSame(cin, cout, kernel, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[-1] * self.stride
        if self.mode == "zeros":
            if x.device.type == "cpu":
                return polyphase_conv_transpose1d(x, self.conv.weight, self.conv.bias, self.stride, self.crop, n)
            return self.conv(x)[..., :n]  # padding=crop removed crop samples each side; drop the extra right one
        return self.conv(F.interpolate(x, scale_factor=self.stride, mode="nearest"))


def polyphase_conv_transpose1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int,
                               crop: int, length: int) -> torch.Tensor:
    """``F.conv_transpose1d(x, weight, bias, stride)[..., crop:crop + length]`` as a stride-1 transposed
    convolution producing the ``stride`` output phases as channels, then interleaved (faster on the CPU).

    Output sample s (t + j) + r receives x[t] times tap k = s j + r, so phase r is a stride-1 transposed
    convolution of x with the taps r, s + r, 2 s + r, ...
    """
    b, cin, n = x.shape
    _, cout, k = weight.shape
    taps = -(-k // stride)
    ww = F.pad(weight, (0, taps * stride - k)).view(cin, cout, taps, stride).transpose(2, 3).reshape(cin, cout * stride, taps)
    y = F.conv_transpose1d(x, ww)  # (b, cout * stride, n + taps - 1)
    y = y.view(b, cout, stride, -1).transpose(2, 3).reshape(b, cout, -1)[..., crop:crop + length]
    return y if bias is None else y + bias.view(1, -1, 1)


class PhaseShuffle(nn.Module):
    """Shift the activations by a random phase in [-n, n], filling the gap by reflection (the authors' code).

    One shift per batch, drawn from torch's global RNG. A positive shift moves the signal right: the
    first ``shift`` samples become the mirror image of the samples after the first one (reflect padding,
    not zero padding). Radius 0 is the identity.
    """

    def __init__(self, radius: int):
        super().__init__()
        self.radius = radius

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.radius == 0:
            return x
        shift = int(torch.randint(-self.radius, self.radius + 1, ()).item())
        return self.shift(x, shift)

    @staticmethod
    def shift(x: torch.Tensor, shift: int) -> torch.Tensor:
        if shift == 0:
            return x
        n = x.shape[-1]
        pad_l, pad_r = max(shift, 0), max(-shift, 0)
        return F.pad(x, (pad_l, pad_r), mode="reflect")[..., pad_r:pad_r + n]

    def extra_repr(self) -> str:
        return f"radius={self.radius}"


class WaveGANGenerator(nn.Module):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = cfg.g_channels
        self.dense = nn.Linear(cfg.latent_dim + cfg.num_classes + cfg.cond_dim, 16 * ch[0])
        self.ups = nn.ModuleList(UpConv1d(ch[i], ch[i + 1], cfg.kernel, s, cfg.upsample)
                                 for i, s in enumerate(cfg.strides))
        glorot_(self)
        # The post-processing filter: 'same' convolution, no bias (authors: tf.layers.conv1d(G_z, 1, 512, use_bias=False)).
        self.post = Conv1dSame(1, 1, cfg.post_filter_len, 1, bias=False) if cfg.post_filter else None
        if self.post is not None:
            nn.init.xavier_uniform_(self.post.weight)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None, *, trace: list | None = None) -> torch.Tensor:
        if self.cfg.num_classes:
            z = torch.cat([z, F.one_hot(y.long(), self.cfg.num_classes).to(z.dtype)], dim=1)
        elif self.cfg.cond_dim:  # another domain's embedding, concatenated to z like the one-hot label
            z = torch.cat([z, y.to(z.dtype)], dim=1)
        h = self.dense(z).view(z.shape[0], -1, 16)  # [B, 16d, 16]
        h = F.relu(h)
        if trace is not None:
            trace.append(("dense", tuple(h.shape)))
        for i, up in enumerate(self.ups):
            h = up(h)
            last = i == len(self.ups) - 1
            h = torch.tanh(h) if last else F.relu(h)
            if trace is not None:
                trace.append((f"upconv_{i}", tuple(h.shape)))
        if self.post is not None:
            h = self.post(h)
            if trace is not None:
                trace.append(("post_filter", tuple(h.shape)))
        return h  # [B, 1, length]


class ProjectionCritic(nn.Module):
    """The discriminators' shared head: a linear logit on the flattened features, plus (conditional) the projection
    term ``<embed(y), h>`` of Miyato & Koyama (2018). Glorot initialisation, the class embedding at N(0, 0.02).
    Conditioned on another domain's embedding (``cond_dim > 0``, ``--condition``), the projection is
    ``<W c, h>`` with a linear map ``W`` of the condition vector ``c`` in place of the class embedding.

    With ``aux_weight > 0`` (``--aux-class``) the head also has AC-GAN's auxiliary classifier (Odena, Olah & Shlens,
    "Conditional Image Synthesis with Auxiliary Classifier GANs", ICML 2017): a linear map of the same features to
    class logits. Its cross-entropy on the *real* batch is added to D's loss (through the engine's
    ``auxiliary_loss``); the generator's loss gets the cross-entropy of its fakes for their intended class (the
    audio domain's ``generator_loss``). Unlike the paper, D's classifier is not trained on fakes: that term rewards
    the generator for samples that are easy to classify rather than like the data (Shu 2017; Gong et al. 2019).
    With ``aux_fake_class`` W > 0 (``--aux-fake-class``) the classifier has a (K + 1)-th class, generated clips, as the
    semi-supervised discriminator of Salimans et al. ("Improved Techniques for Training GANs", NeurIPS 2016) and
    AM-GAN (Zhou et al., ICLR 2018) have: D's term adds W x the cross-entropy of the update's fakes for that class
    (``mark_fake``), so that features that fool a K-way classifier without making the class are learnt as generated;
    the generator's term, over the K + 1 classes, moves its fakes out of it to their own.
    The audio domain's ``fake`` names each update's real batch to the discriminator (``mark_real``) before the
    engine shows it to D, so that only that forward call adds a term. Measured on both spoken-digit sets in
    docs/audio.md (What was tried): alone it helped real speech and not the eSpeak digits; the CPU recipe has it
    on, with DiffAugment and LeCam, and samples choose among candidates with it (``--candidates``)."""

    def _head(self, feature_dim: int, num_classes: int, aux_weight: float = 0.0, cond_dim: int = 0,
              aux_fake_class: float = 0.0) -> None:
        self.feature_dim = feature_dim
        self.out = nn.Linear(feature_dim, 1)
        self.embed = nn.Embedding(num_classes, feature_dim) if num_classes else None
        self.project = nn.Linear(cond_dim, feature_dim, bias=False) if cond_dim and not num_classes else None
        self.aux_weight = float(aux_weight) if num_classes else 0.0
        self.aux_fake_weight = float(aux_fake_class) if self.aux_weight > 0 else 0.0
        self.aux_classifier = nn.Linear(feature_dim, num_classes + (self.aux_fake_weight > 0)) \
            if self.aux_weight > 0 else None
        if self.aux_classifier is None:
            self.auxiliary_loss = None  # no term: the engine then logs no "penalty" column either
        glorot_(self)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, 0.0, 0.02)
        self._aux_real: torch.Tensor | None = None  # the batch D's classifier learns from (identity, not value)
        self._aux_fake: torch.Tensor | None = None  # with aux_fake_class: the update's generated batch
        self._aux_terms: list[torch.Tensor] = []  # the real batches' cross-entropies since the last auxiliary_loss
        self._aux_fake_terms: list[torch.Tensor] = []  # the fake batches', for the generated class
        self.class_logits: torch.Tensor | None = None  # the auxiliary classifier's logits of the last forward call
        self._features: torch.Tensor | None = None  # the last training pass's features, for relabel()

    def mark_real(self, real: torch.Tensor | None) -> None:
        """Name the real batch of this discriminator update: its forward call adds the classification term."""
        self._aux_real = real

    def mark_fake(self, fake: torch.Tensor | None) -> None:
        """Name the generated batch of this discriminator update (a K + 1 classifier learns it as its last class)."""
        self._aux_fake = fake if self.aux_fake_weight > 0 else None

    def _score(self, h: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        logit = self.out(h).squeeze(1)
        if self.embed is not None:
            logit = logit + (self.embed(y.long()) * h).sum(dim=1)
        elif self.project is not None:
            logit = logit + (self.project(y.to(h.dtype)) * h).sum(dim=1)
        return logit

    def relabel(self, rows: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        """The logits of examples ``rows`` of the last batch this discriminator scored while training, under the
        labels ``y``, from that pass's features (the engine's matching-aware term: ``D(x[rows], y)`` without a
        second pass over ``x``; the augmentation is the one that pass drew). Only the last pass is kept, once."""
        h, self._features = self._features, None
        if h is None:
            raise RuntimeError("relabel() needs a forward pass in training mode just before it")
        # Rows repeat (each is drawn among the other classes'). Picked by a product with their one-hot rows, not
        # h[rows]: the backward of indexing adds the repeats' gradients in parallel on the CPU, in an order that
        # changed from run to run (the same seed trained other weights at two threads); a product's does not.
        pick = torch.nn.functional.one_hot(rows, len(h)).to(h.dtype)
        return self._score(pick @ h, y)

    def _logit(self, h: torch.Tensor, y: torch.Tensor | None, x: torch.Tensor | None = None) -> torch.Tensor:
        h = h.flatten(1)
        # Kept for relabel() in D's update only: not from an evaluation, nor from G's update (D frozen).
        self._features = h if self.training and torch.is_grad_enabled() and self.out.bias.requires_grad else None
        logit = self._score(h, y)
        if self.aux_classifier is not None:
            self.class_logits = self.aux_classifier(h)
            if x is not None and x is self._aux_real and y is not None and self.training and \
                    torch.is_grad_enabled() and self.aux_classifier.weight.requires_grad:  # D's update only
                self._aux_terms.append(F.cross_entropy(self.class_logits.float(), y.long()))
            elif x is not None and x is self._aux_fake and self.training and torch.is_grad_enabled() and \
                    self.aux_classifier.weight.requires_grad:
                fake_class = torch.full((len(x),), self.aux_classifier.out_features - 1, device=x.device)
                self._aux_fake_terms.append(F.cross_entropy(self.class_logits.float(), fake_class))
        return logit

    def auxiliary_loss(self) -> torch.Tensor | None:
        """AC-GAN's term of D's loss: ``aux_weight`` x the classifier's cross-entropy on the real batch(es) since
        the last call (then forgotten), plus ``aux_fake_weight`` x that of the fakes for the generated class; None
        without the classifier or before any marked batch."""
        terms, self._aux_terms = self._aux_terms, []
        fakes, self._aux_fake_terms = self._aux_fake_terms, []
        if not terms and not fakes:
            return None
        real = torch.stack(terms).mean() if terms else 0.0
        fake = self.aux_fake_weight * torch.stack(fakes).mean() if fakes else 0.0
        return self.aux_weight * (real + fake)


class WaveGANDiscriminator(ProjectionCritic):
    def __init__(self, cfg: WaveGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = [1] + list(reversed(cfg.g_channels[:-1]))  # 1 -> d -> 2d -> ... -> 16d (32d)
        # Same strides as G in the same order: for 32768 samples the stride-2 layer is the last in both.
        self.convs = nn.ModuleList(Conv1dSame(ch[i], ch[i + 1], cfg.kernel, s) for i, s in enumerate(cfg.strides))
        self.shuffle = PhaseShuffle(cfg.phase_shuffle)
        self._head(16 * ch[-1], cfg.num_classes, cfg.aux_class, cfg.cond_dim, cfg.aux_fake_class)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None, *, trace: list | None = None) -> torch.Tensor:
        h = augment(x, self.cfg.augment) if self.cfg.augment and self.training else x
        for i, conv in enumerate(self.convs):
            h = F.leaky_relu(conv(h), 0.2)
            if i < 4:  # phase shuffle after the first four layers only (authors' code)
                h = self.shuffle(h)
            if trace is not None:
                trace.append((f"downconv_{i}", tuple(h.shape)))
        logit = self._logit(h, y, x)
        if trace is not None:
            trace.append(("output", tuple(logit.shape)))
        return logit
