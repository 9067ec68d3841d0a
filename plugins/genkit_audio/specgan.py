"""SpecGAN: a DCGAN on 128 x 128 log-magnitude spectrograms, inverted to audio with Griffin-Lim.

Paper: Donahue, McAuley & Puckette, "Adversarial Audio Synthesis", ICLR 2019 (section 3 and the authors'
``specgan.py``). 16384 samples at 16 kHz -> STFT (window 256, hop 128) -> drop the Nyquist bin and the
last frame -> 128 x 128 -> log(|X| + 1e-6) -> normalised per frequency bin by the training set's mean
and standard deviation, divided by 3 and clipped to [-1, 1]. The networks are WaveGAN's layer plan in
2-D: dense to [16d, 4, 4], five 5 x 5 stride-2 transposed convolutions (TensorFlow 'same' alignment),
ReLU, tanh; the discriminator mirrors it with LeakyReLU(0.2) and no phase shuffle; no batch norm;
Glorot-uniform initialisation. Samples are de-normalised, exponentiated and inverted with torchaudio's
GriffinLim (16 iterations, as the authors).

Departures: torchaudio's STFT is centred (the authors' pads the end), so the frame grid is shifted by
half a window; GriffinLim starts from torchaudio's random phase; a clip it returns past full scale is scaled
down to peak 0.99, not clipped (``invert``). ``num_classes > 0`` is genkit's
conditional variant, as in WaveGAN. ``d_view`` "mel" / "both" (genkit's) give the discriminator the spectrogram
resampled on the mel scale (``mel_warp``), alone or beside the linear one in a second stack of convolutions;
``d_kernel`` 3 (genkit's) gives the discriminator 3 x 3 kernels, about half the time of the paper's 5 x 5.
``g_cond`` "film" (genkit's) gives each of the generator's hidden layers a gain and a bias of the label.
Other clip lengths keep the 128 x 128 grid and the 256-sample window and scale the hop: 8192 samples (about 1 s
at 8 kHz) are framed every 64 samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import SPECGAN_LENGTHS as LENGTHS
from .augment import augment
from .wavegan import ProjectionCritic, glorot_, same_pad

N_FFT, FRAMES = 256, 128
LOG_EPS = 1e-6
CLIP_NSTD = 3.0
PEAK = 0.99  # an inverted clip louder than full scale is scaled down to this peak, never clipped (invert)


@dataclass
class SpecGANConfig:
    d: int = 64  # model size; channels 16d -> 8d -> 4d -> 2d -> d -> 1 (paper d = 64)
    latent_dim: int = 100  # z ~ U[-1, 1]^100, as WaveGAN
    kernel: int = 5  # 5 x 5 convolutions (DCGAN)
    d_kernel: int = 0  # the discriminator's kernel when not ``kernel`` (genkit's --d-kernel; 0: ``kernel``)
    num_classes: int = 0  # > 0: class-conditional (a genkit addition)
    upsample: str = "zeros"  # "zeros" = transposed convolutions (paper), "nn" = nearest neighbour + convolution
    g_norm: str = "none"  # "batch": batch norm after each hidden layer of G (DCGAN; a genkit addition)
    d_norm: str = "none"  # "batch" | "spectral" | "layer" | "none" (paper) in D's hidden layers
    augment: tuple[str, ...] = ()  # DiffAugment policies (augment.py) on all D sees while training (a genkit addition)
    aux_class: float = 0.0  # > 0 (conditional): AC-GAN's auxiliary classifier in D, this weight (a genkit addition)
    aux_fake_class: float = 0.0  # > 0: the classifier's K + 1-th class, generated clips, this weight (genkit)
    cond_dim: int = 0  # > 0: conditioned on a (B, cond_dim) vector, another domain's embedding (--condition)
    d_view: str = "linear"  # D reads the spectrogram as it is, "mel"-warped, or "both" in two branches (genkit)
    sample_rate: int = 16000  # the clips' rate: where the mel warp puts each frequency bin
    g_cond: str = "input"  # the label joins z at G's input ("input"), or also sets a gain and a bias of every
    # hidden layer ("film": conditional batch norm); both genkit's, as the conditional model is


def hop_of(length: int) -> int:
    if length not in LENGTHS:
        raise ValueError(f"SpecGAN makes clips of {' or '.join(map(str, LENGTHS))} samples, not {length}")
    return length // FRAMES


def spectrogram(waves: torch.Tensor) -> torch.Tensor:
    """(N, 1, length) waveforms in [-1, 1] -> (N, 1, 128, 128) log magnitudes (freq x time)."""
    import torchaudio

    hop = hop_of(waves.shape[-1])
    spec = torchaudio.transforms.Spectrogram(n_fft=N_FFT, hop_length=hop, power=1.0).to(waves.device)
    mag = spec(waves.float().reshape(len(waves), -1))  # (N, 129, 129)
    return torch.log(mag[:, :-1, :-1] + LOG_EPS).unsqueeze(1)


def normalise(logmag: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return ((logmag - mean.view(1, 1, -1, 1)) / std.view(1, 1, -1, 1) / CLIP_NSTD).clamp(-1.0, 1.0)


def invert(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, n_iter: int = 16, length: int = 16384) -> torch.Tensor:
    """Normalised spectrograms (N, 1, 128, 128) -> waveforms (N, 1, length) by Griffin-Lim.

    Nothing bounds Griffin-Lim's output: a generated spectrogram a little louder than the data's, or with its
    phases adding up, comes back past full scale (on the eSpeak digits most of them did, median peak 2.9). Such
    a clip is scaled as a whole to peak ``PEAK``, keeping its waveform, where clipping it to [-1, 1] turned its
    loudest parts into flat-topped distortion (docs/audio.md, "Over-range clips"); clips within range are
    unchanged."""
    import torchaudio

    mean, std = mean.to(x.device).view(1, -1, 1), std.to(x.device).view(1, -1, 1)
    logmag = x[:, 0] * CLIP_NSTD * std + mean
    mag = (logmag.exp() - LOG_EPS).clamp_min(0.0)
    mag = F.pad(mag, (0, 1, 0, 1))  # put back the Nyquist bin and the last frame (zeros)
    gl = torchaudio.transforms.GriffinLim(n_fft=N_FFT, n_iter=n_iter, hop_length=hop_of(length), power=1.0,
                                          length=length).to(x.device)
    return fit_range(gl(mag).unsqueeze(1))


def mel_warp(sample_rate: int, bins: int = FRAMES) -> torch.Tensor:
    """A (bins, bins) matrix that resamples the spectrogram's linear frequency axis (bin k at k x rate / 256 Hz) at
    ``bins`` points evenly spaced in mel (HTK's 2595 log10(1 + f / 700)): at 16 kHz rows below about 2.5 kHz
    interpolate between neighbouring bins (about 2.8 rows per bin in the first kHz), rows above average up to 3
    bins with a triangle. Each row sums to 1, so it applies to normalised log magnitudes as they are."""
    width = sample_rate / N_FFT
    top = (bins - 1) * width
    mel = torch.linspace(0.0, 2595.0 * math.log10(1.0 + top / 700.0), bins, dtype=torch.float64)
    centre = 700.0 * (10.0 ** (mel / 2595.0) - 1.0) / width  # in bins
    half = torch.gradient(centre)[0].clamp_min(1.0)
    k = torch.arange(bins, dtype=torch.float64)
    w = (1.0 - (k.view(1, -1) - centre.view(-1, 1)).abs() / half.view(-1, 1)).clamp_min(0.0)
    return (w / w.sum(dim=1, keepdim=True)).float()


def fit_range(waves: torch.Tensor, peak: float = PEAK) -> torch.Tensor:
    """(N, 1, T) waveforms, each clip whose peak exceeds ``peak`` scaled to exactly that peak; others as they are."""
    loudest = waves.abs().flatten(1).amax(dim=1)
    scale = torch.where(loudest > peak, peak / loudest, torch.ones_like(loudest))
    return waves * scale.view(-1, *([1] * (waves.dim() - 1)))


# _PHASES[a, t, k]: how much tap k of a 3-tap kernel applied after nearest-neighbour doubling contributes to tap t of
# the 2-tap kernel that gives output phase a (even a = 0, odd a = 1) directly from the undoubled input (UpConv2d).
_PHASES = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]], [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])


class UpConv2d(nn.Module):
    """Doubling both sides: a transposed convolution aligned as TensorFlow's 'same' (``zeros``, the paper), or
    nearest-neighbour repetition and a stride-1 3 x 3 convolution (``nn``: no checkerboard artefacts, Odena et
    al. 2016; 3 x 3 keeps the multiply-adds near the transposed 5 x 5's).

    A one-channel ``nn`` layer (the generator's last) computes the same function in polyphase form: each of the four
    output phases is a 2 x 2 convolution of the undoubled input whose taps are sums of the 3 x 3 kernel's, one
    convolution with four output channels, interleaved. The parameters are the 3 x 3 kernel as before; the CPU's
    oneDNN runs a one-channel convolution at a fraction of its speed, and this form takes 0.25 x the time of the
    doubled 3 x 3 one at SpecGAN's 128 x 128 (forward and backward; docs/audio.md)."""

    def __init__(self, cin: int, cout: int, kernel: int, mode: str = "zeros"):
        super().__init__()
        self.mode = mode
        if mode == "zeros":
            self.conv = nn.ConvTranspose2d(cin, cout, kernel, 2, padding=same_pad(kernel, 2)[0])
        else:
            self.conv = nn.Conv2d(cin, cout, 3, 1, padding=1)
        self.polyphase = mode != "zeros" and cout == 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.polyphase:
            return _polyphase_up(x, self.conv.weight, self.conv.bias)
        if self.mode != "zeros":
            return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))
        h, w = x.shape[-2] * 2, x.shape[-1] * 2
        return self.conv(x)[..., :h, :w]


def _polyphase_up(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``conv2d(interpolate(x, scale_factor=2, mode="nearest"), weight, bias, padding=1)`` for a 3 x 3 ``weight``,
    without making the doubled input: output pixel (2i + a, 2j + c) is a 2 x 2 convolution of x's pixels from
    (i + a - 1, j + c - 1), with the taps _PHASES[a] x weight x _PHASES[c]."""
    n, _, h, w = x.shape
    cout = weight.shape[0]
    phases = _PHASES.to(weight)
    kernels = torch.einsum("atk,csl,oikl->acoits", phases, phases, weight).reshape(4 * cout, weight.shape[1], 2, 2)
    y = F.conv2d(x, kernels, bias.repeat(4), padding=1).view(n, 2, 2, cout, h + 1, w + 1)
    rows = [torch.stack([y[:, a, c, :, a:a + h, c:c + w] for c in (0, 1)], dim=-1) for a in (0, 1)]
    return torch.stack(rows, dim=-3).reshape(n, cout, 2 * h, 2 * w)


class Conv2dSame(nn.Conv2d):
    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__(cin, cout, kernel, 2)
        left, right = same_pad(kernel, 2)
        self.pad = (left, right, left, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad))


class SpecGANGenerator(nn.Module):
    def __init__(self, cfg: SpecGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = [cfg.d * 16 // 2**i for i in range(5)] + [1]
        self.dense = nn.Linear(cfg.latent_dim + cfg.num_classes + cfg.cond_dim, 16 * ch[0])
        self.ups = nn.ModuleList(UpConv2d(ch[i], ch[i + 1], cfg.kernel, cfg.upsample) for i in range(5))
        batch = cfg.g_norm == "batch"
        self.norms = nn.ModuleList(nn.BatchNorm2d(c) if batch else nn.Identity() for c in ch[:5])
        glorot_(self)
        # --g-cond film: each hidden layer's channels scaled by 1 + gamma(c) and shifted by beta(c) after its norm,
        # where c is the one-hot label (or another domain's embedding) and gamma, beta are linear maps of it that
        # start at zero, so that the model starts as the input-only one (conditional batch norm: de Vries et al.,
        # "Modulating early visual processing by language", NeurIPS 2017; Miyato & Koyama 2018's generator).
        width = cfg.num_classes or cfg.cond_dim
        self.film = nn.ParameterList(nn.Parameter(torch.zeros(width, 2 * c)) for c in ch[:5]) \
            if cfg.g_cond == "film" and width else None
        # The training set's per-bin statistics, needed to turn spectrograms into audio. They are the audio
        # domain's per-run state (saved with each checkpoint, not with the weights): set_statistics copies them
        # here when the models are built, as non-persistent buffers so that they follow the module's device.
        self.register_buffer("spec_mean", torch.zeros(128), persistent=False)
        self.register_buffer("spec_std", torch.ones(128), persistent=False)

    @torch.no_grad()
    def set_statistics(self, mean, std) -> None:
        self.spec_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.spec_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c = None
        if self.cfg.num_classes:
            c = F.one_hot(y.long(), self.cfg.num_classes).to(z.dtype)
        elif self.cfg.cond_dim:  # another domain's embedding, concatenated to z like the one-hot label
            c = y.to(z.dtype)
        if c is not None:
            z = torch.cat([z, c], dim=1)
        h = F.relu(self._norm(0, self.dense(z).view(z.shape[0], -1, 4, 4), c))
        for i, up in enumerate(self.ups):
            h = up(h)
            h = torch.tanh(h) if i == len(self.ups) - 1 else F.relu(self._norm(i + 1, h, c))
        return h  # (B, 1, 128, 128)

    def _norm(self, i: int, h: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        h = self.norms[i](h)
        if self.film is None:
            return h
        gamma, beta = (c @ self.film[i].to(c.dtype)).unsqueeze(-1).unsqueeze(-1).chunk(2, dim=1)
        return h * (1.0 + gamma) + beta


class SpecGANDiscriminator(ProjectionCritic):
    def __init__(self, cfg: SpecGANConfig):
        super().__init__()
        self.cfg = cfg
        ch = [1] + [cfg.d * 2**i for i in range(5)]
        self.linear = cfg.d_view in ("linear", "both")
        self.mel = cfg.d_view in ("mel", "both")
        if self.linear:
            self.convs, self.norms = _stack_layers(ch, cfg)
        if self.mel:  # the same stack on the mel-warped copy; with both, the head reads both stacks' features
            self.mel_convs, self.mel_norms = _stack_layers(ch, cfg)
            self.register_buffer("warp", mel_warp(cfg.sample_rate), persistent=False)
        # The auxiliary classifier (--aux-class) gets no spectral norm: it is not part of the logit, whose
        # Lipschitz bound spectral norm is for, and a unit-norm classifier of these features could barely be sure.
        self._head((self.linear + self.mel) * 16 * ch[-1], cfg.num_classes, cfg.aux_class, cfg.cond_dim, cfg.aux_fake_class)
        if cfg.d_norm == "spectral":
            convs = [*(self.convs if self.linear else []), *(self.mel_convs if self.mel else [])]
            for m in [*convs, self.out] + [m for m in (self.embed, self.project) if m is not None]:
                nn.utils.parametrizations.spectral_norm(m)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = augment(x, self.cfg.augment) if self.cfg.augment and self.training else x
        feats = [_stack(h, self.convs, self.norms)] if self.linear else []
        if self.mel:
            feats.append(_stack(torch.einsum("fk,bckt->bcft", self.warp.to(h.dtype), h), self.mel_convs,
                                self.mel_norms))
        return self._logit(torch.cat([f.flatten(1) for f in feats], dim=1), y, x)


def _stack_layers(ch: list[int], cfg: SpecGANConfig) -> tuple[nn.ModuleList, nn.ModuleList]:
    """Five stride-2 convolutions (``cfg.d_kernel`` or ``cfg.kernel`` square) ``ch[0] -> ... -> ch[5]``, norms after
    all but the first."""
    convs = nn.ModuleList(Conv2dSame(ch[i], ch[i + 1], cfg.d_kernel or cfg.kernel) for i in range(5))
    return convs, nn.ModuleList(_norm(cfg.d_norm, ch[i + 1]) if i else nn.Identity() for i in range(5))


def _stack(h: torch.Tensor, convs: nn.ModuleList, norms: nn.ModuleList) -> torch.Tensor:
    for conv, norm in zip(convs, norms):
        h = F.leaky_relu(norm(conv(h)), 0.2)
    return h


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # layer norm over (C, H, W)
    return nn.Identity()



class ConditionEncoder(nn.Module):
    """The audio domain's condition encoder (``genkit run TARGET --condition audio``): four stride-2 3 x 3
    convolutions (16-32-64-64 channels, LeakyReLU 0.2) over a log spectrogram, global average pooling and a linear
    map to ``dim``. SpecGAN's data arrive as its normalised (N, 1, 128, 128) spectrograms; WaveGAN's waveforms
    (N, 1, T) are turned into per-clip standardised log spectrograms first."""

    def __init__(self, dim: int):
        super().__init__()
        chans = [1, 16, 32, 64, 64]
        layers: list[nn.Module] = []
        for cin, cout in zip(chans, chans[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 2, 1), nn.LeakyReLU(0.2)]
        self.net = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:  # waveforms in [-1, 1]
            spec = spectrogram(x.float())
            x = (spec - spec.mean(dim=(2, 3), keepdim=True)) / spec.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
        return self.net(x)
