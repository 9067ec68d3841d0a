"""Differentiable augmentation for audio discriminators (DiffAugment: Zhao, Liu, Lin, Zhu & Han, "Differentiable
Augmentation for Data-Efficient GAN Training", NeurIPS 2020; the masks are SpecAugment's: Park et al.,
"SpecAugment", Interspeech 2019).

As in the image domain, the same random, differentiable transformations are applied to everything the
discriminator sees while training, real or generated, in the discriminator's and the generator's updates, so
that a discriminator cannot memorise a few thousand clips. Time is the last axis of every input: (N, 1, T)
waveforms or (N, 1, F, T) normalised log-magnitude spectrograms.

- ``translation``: every clip shifted in time by up to 1/8 of its length; what comes in is silence (zero for
  waveforms, the floor -1 for SpecGAN's clipped spectrograms).
- ``timemask``: one span of up to 1/8 of the clip set to the clip's mean level (zero: the per-bin mean of a
  normalised spectrogram, silence for a waveform).
- ``freqmask`` (spectrograms): one band of up to 1/8 of the frequency bins set to zero.

Randomness comes from torch's global generator, which genkit checkpoints, so resumed runs stay exact.
"""

from __future__ import annotations

import torch


def augment(x: torch.Tensor, policy: tuple[str, ...]) -> torch.Tensor:
    for name in policy:
        x = _AUGMENTS[name](x)
    return x


def _shift_index(n: int, size: int, max_shift: int, device) -> torch.Tensor:
    """(n, size) gather indices into a copy padded by ``max_shift`` on both sides, shifted by a random amount."""
    shift = torch.randint(-max_shift, max_shift + 1, (n, 1), device=device)
    return torch.arange(size, device=device).unsqueeze(0) + max_shift - shift


def _translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    size = x.shape[-1]
    pad = max(1, int(size * ratio))
    floor = -1.0 if x.dim() == 4 else 0.0  # silence: SpecGAN's clipped floor, or a zero sample
    padded = torch.nn.functional.pad(x, (pad, pad), value=floor)
    index = _shift_index(x.shape[0], size, pad, x.device)
    index = index.view(x.shape[0], *([1] * (x.dim() - 2)), size).expand_as(x)
    return padded.gather(-1, index)


def _span_mask(n: int, size: int, ratio: float, device, dtype) -> torch.Tensor:
    """(n, size) of ones with one random span of 0..size*ratio zeros per row."""
    width = torch.randint(0, max(1, int(size * ratio)) + 1, (n, 1), device=device)
    start = (torch.rand(n, 1, device=device) * (size - width + 1)).long()
    pos = torch.arange(size, device=device).unsqueeze(0)
    return ((pos < start) | (pos >= start + width)).to(dtype)


def _timemask(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    mask = _span_mask(x.shape[0], x.shape[-1], ratio, x.device, x.dtype)
    return x * mask.view(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1])


def _freqmask(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    if x.dim() != 4:
        return x  # a waveform has no frequency axis
    mask = _span_mask(x.shape[0], x.shape[-2], ratio, x.device, x.dtype)
    return x * mask.view(x.shape[0], 1, x.shape[-2], 1)


_AUGMENTS = {"translation": _translation, "timemask": _timemask, "freqmask": _freqmask}
