"""Writing audio: 16-bit PCM WAV files (soundfile) and a PNG grid of the samples' spectrograms.

torchaudio 2.9+ has no file I/O, so WAVs go through ``soundfile``; spectrograms are computed with
``torchaudio.transforms.Spectrogram`` and drawn with torchvision's ``save_image`` (no matplotlib).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

SAMPLE_RATE = 16000

# A perceptually ordered dark-to-bright colour map (black, purple, red, orange, pale yellow), like "magma".
_ANCHORS = torch.tensor([[0.00, 0.00, 0.02], [0.23, 0.06, 0.44], [0.55, 0.16, 0.51], [0.87, 0.29, 0.40],
                         [0.99, 0.62, 0.36], [0.99, 0.99, 0.75]])


def write_wav(path: Path, wave: torch.Tensor, sample_rate: int = SAMPLE_RATE) -> Path:
    """Write one waveform (any shape with ``length`` elements, values in [-1, 1]) as 16-bit PCM."""
    import soundfile as sf

    x = wave.detach().float().reshape(-1).clamp(-1.0, 1.0).cpu().numpy()
    sf.write(str(path), x, sample_rate, subtype="PCM_16", format="WAV")
    return Path(path)


def log_spectrogram(waves: torch.Tensor, n_fft: int = 256, floor_db: float = -80.0) -> torch.Tensor:
    """(N, 1, L) waveforms -> (N, F, T) magnitudes in dB re full scale, clipped to [floor_db, 0]."""
    import torchaudio

    length = waves.shape[-1]
    hop = max(length // 128, 1)  # about 128 columns whatever the length
    spec = torchaudio.transforms.Spectrogram(n_fft=n_fft, hop_length=hop, power=1.0, normalized=False)
    mag = spec(waves.float().reshape(len(waves), -1)) / (n_fft / 4)  # a full-scale sine peaks near 0 dB
    return (20 * torch.log10(mag.clamp_min(1e-6))).clamp(floor_db, 0.0)


def colorize(values: torch.Tensor) -> torch.Tensor:
    """Values in [0, 1] of shape (...,) -> RGB (3, ...) through the colour map."""
    pos = values.clamp(0, 1) * (len(_ANCHORS) - 1)
    lo = pos.floor().long().clamp(max=len(_ANCHORS) - 2)
    frac = (pos - lo).unsqueeze(-1)
    rgb = _ANCHORS[lo] * (1 - frac) + _ANCHORS[lo + 1] * frac
    return rgb.movedim(-1, 0)


def spectrogram_grid(waves: torch.Tensor, path: Path, ncols: int = 0, floor_db: float = -80.0) -> Path:
    """One PNG of the spectrograms of ``waves`` (N, 1, L): low frequencies at the bottom, time to the right."""
    from torchvision.utils import save_image

    db = log_spectrogram(waves, floor_db=floor_db)
    img = (db - floor_db) / -floor_db  # [0, 1]
    img = img.flip(1)  # low frequencies at the bottom
    rgb = torch.stack([colorize(t) for t in img])  # (N, 3, F, T)
    ncols = ncols or max(1, math.ceil(math.sqrt(len(waves))))
    save_image(rgb, str(path), nrow=ncols, padding=4, pad_value=1.0)
    return Path(path)


def read_wav(path: Path) -> tuple[np.ndarray, int, str]:
    """(samples as float32, sample rate, subtype): the check a test or a user does on a written file."""
    import soundfile as sf

    info = sf.info(str(path))
    data, rate = sf.read(str(path), dtype="float32")
    return data, rate, info.subtype
