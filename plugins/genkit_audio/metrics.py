"""Offline audio metrics in the feature space of a small reference classifier ("refnet").

WaveGAN's paper scores SC09 samples with the inception score of a classifier trained on SC09 (Donahue et al.,
ICLR 2019, section 6.1); that classifier cannot be downloaded here. As the image domain does, the audio
domain trains its own small classifier on the run's labelled clips (log-mel spectrograms, a few epochs,
cached in the genkit cache folder) and reports, for generated clips:

- ``refnet_is``: inception score with refnet's class probabilities (10 = every digit equally, each clip sure)
- ``refnet_fd``: Fréchet distance between refnet's penultimate features of generated and real clips
- ``refnet_kid``: kernel inception distance on the same features
- ``refnet_confident``: share of generated clips refnet classifies with probability > 0.9
- ``refnet_classes``: number of classes that receive at least half their fair share of generated clips
- ``refnet_is_real`` and ``refnet_accuracy``: the same score on held-out real clips, and refnet's accuracy there
- ``refnet_nn_train``, ``_nn_train_real``, ``_nn_ratio``, ``_nn_self``: nearest-neighbour distances in refnet's
  feature space, the memorisation check (``genkit.metrics.memorisation_metrics``)
- ``rms_ratio``: loudness, the median RMS of generated clips over that of real clips (1 = as loud as the data;
  a tenth = the near-silence that refnet alone would not flag)

The numbers compare genkit runs on the same data; they are not the paper's SC09 inception scores.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from genkit import refnet

SAMPLE_RATE = 16000
N_MELS = 64
# Classifiers shipped for the built-in data (genkit.refnet.ship): the eSpeak digits' refnet, version 3, trained on
# corpus version 2 at 16 kHz, which a fresh machine would otherwise spend a minute training (the same weights: the
# data and the recipe are the same on every machine). Regenerate with ship_builtin() when either version changes.
SHIPPED = Path(__file__).with_name("refnets")


class RefNet(nn.Module):
    """Log-mel spectrogram (64 bands, 25 ms window, 10 ms hop), three conv blocks, a 128-d feature layer, a head."""

    def __init__(self, num_classes: int, sample_rate: int = SAMPLE_RATE):
        super().__init__()
        import torchaudio

        # A fixed transform, kept out of the state dict (its buffers are not weights); refnet runs on the CPU.
        self.__dict__["mel"] = torchaudio.transforms.MelSpectrogram(
            sample_rate, n_fft=round(0.025 * sample_rate), hop_length=round(0.01 * sample_rate), n_mels=N_MELS)
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d((4, 4)),
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(),
        )
        self.head = nn.Linear(128, num_classes)

    def forward(self, wave: torch.Tensor):
        """``wave``: float (N, 1, T) in [-1, 1] -> (logits, 128-d features)."""
        spec = torch.log(self.mel(wave) + 1e-6)  # (N, 1, mels, frames)
        feats = self.body(spec)
        return self.head(feats), feats


def _float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div(32768.0) if x.dtype == torch.int16 else x.float()


def reference_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, source: str, cache_dir: Path,
                         epochs: int = 12, min_updates: int = 80, batch: int = 32,
                         sample_rate: int = SAMPLE_RATE) -> tuple[RefNet, float, torch.Tensor]:
    """Train (or load from the cache) refnet on int16 clips ``x`` (N, 1, T) at ``sample_rate`` and labels ``y``.

    ``epochs`` passes over the training clips, more on a small folder so that there are ``min_updates`` Adam
    steps, with the learning rate decayed to 0 (cosine) and two CPU threads whatever the run's ``--threads``, so
    that every run on the same data trains the same classifier (thread counts change the order of floating-point
    sums). Returns the classifier (eval mode), its accuracy on a held-out tenth of the clips, and their indices.

    Version 2 (12 epochs, cosine decay, one thread) replaced version 1 (4 epochs at a constant rate, the caller's
    threads): on its held-out tenth, accuracy 0.995 against 0.955-0.97 on the eSpeak digits and 0.953 against
    0.907-0.933 on three FSDD speakers; real clips classified with confidence > 0.9 rose from 0.86 and 0.59 to
    0.97 and 0.87 (docs/audio.md). Version 3 is version 2 on two threads: 0.6 x the time (eSpeak 108 -> 62 s,
    FSDD 91 -> 51 s), accuracy 0.990 and 0.953 against 0.990 and 0.947. Files of earlier versions are not read.
    """
    return refnet.reference_classifier(x, y, lambda: RefNet(num_classes, sample_rate), _float, source, cache_dir,
                                       folder="audio-refnet", tag=version(sample_rate), epochs=epochs,
                                       min_updates=min_updates, batch=batch, lr=2e-3, min_test=2,
                                       min_batch=2, feature_batch=256,  # batch norm: 2 a batch
                                       cosine=True, threads=2, shipped=SHIPPED)


def version(sample_rate: int = SAMPLE_RATE) -> str:
    """refnet's version tag at ``sample_rate`` (the mel transform follows the rate)."""
    return "v3" if sample_rate == SAMPLE_RATE else f"v3-{sample_rate}Hz"


def ship_builtin(cache_dir: Path, folder: Path = SHIPPED) -> Path:
    """Train (or load from ``cache_dir``) refnet on the built-in eSpeak digits and write it into ``folder`` as the
    shipped classifier (genkit.refnet.ship); for a maintainer, after a change of the corpus or of refnet's recipe:
    ``python -c "from genkit_audio.metrics import ship_builtin; ship_builtin('/tmp/cache')"``."""
    from .data import CORPUS_VERSION, DIGITS, espeak_digits

    x, y, names, source = espeak_digits(Path(cache_dir), 16384, SAMPLE_RATE)
    net, _, _ = reference_classifier(x, y, len(DIGITS), source, Path(cache_dir))
    return refnet.ship(net, Path(folder) / f"espeak-digits-v{CORPUS_VERSION}-refnet-{version()}.safetensors",
                       version(), x, y)


def features(net: RefNet, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and 128-d features of clips ``x`` (int16, or float in [-1, 1])."""
    return refnet.features(net, x, _float, batch)


def score(net: RefNet, accuracy: float, real: torch.Tensor, fake: torch.Tensor, num_classes: int,
          train: torch.Tensor | None = None, fake_cond: torch.Tensor | None = None) -> dict[str, float]:
    """All refnet metrics of generated clips ``fake`` (float, [-1, 1]) against held-out ``real`` clips; with the
    ``train`` clips also the nearest-neighbour memorisation check (``refnet_nn_*``); with the clips' class
    conditions ``fake_cond`` also the conditional accuracy (``refnet_cond_accuracy``: the share of clips refnet
    hears as the digit they were generated for).

    A diverged generator's non-finite output is scored, not fatal: NaNs become 0 and values are clipped to
    [-1, 1], so the run still ends with its checkpoint and summary.
    """
    fake = torch.nan_to_num(fake.float(), nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
    return refnet.score(net, accuracy, real, fake, _float, batch=256, train=train, fake_cond=fake_cond)


def rms_ratio(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Median RMS of generated clips over the median RMS of real clips (int16 or float in [-1, 1])."""
    def median_rms(x: torch.Tensor) -> float:
        x = torch.nan_to_num(_float(x), nan=0.0).clamp(-1.0, 1.0)
        return float(x.flatten(1).pow(2).mean(dim=1).sqrt().median())

    return median_rms(fake) / max(median_rms(real), 1e-9)
