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

The numbers compare genkit runs on the same data; they are not the paper's SC09 inception scores.
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

SAMPLE_RATE = 16000
N_MELS = 64


class RefNet(nn.Module):
    """Log-mel spectrogram (64 bands, 25 ms window, 10 ms hop), three conv blocks, a 128-d feature layer, a classifier."""

    def __init__(self, num_classes: int):
        super().__init__()
        import torchaudio

        # A fixed transform, kept out of the state dict (its buffers are not weights); refnet runs on the CPU.
        self.__dict__["mel"] = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=400, hop_length=160,
                                                                    n_mels=N_MELS)
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


def _key(source: str, x: torch.Tensor, y: torch.Tensor) -> str:
    h = hashlib.sha256()
    h.update(f"v1 {source} {tuple(x.shape)}".encode())
    h.update(x[:: max(1, len(x) // 64)].numpy().tobytes())
    h.update(y.numpy().tobytes())
    return h.hexdigest()[:16]


def reference_classifier(x: torch.Tensor, y: torch.Tensor, num_classes: int, source: str, cache_dir: Path,
                         epochs: int = 4, min_updates: int = 80, batch: int = 32) -> tuple[RefNet, float, torch.Tensor]:
    """Train (or load from the cache) refnet on int16 clips ``x`` (N, 1, T) and labels ``y``.

    ``epochs`` passes over the training clips, more on a small folder so that there are ``min_updates`` Adam
    steps. Returns the classifier (eval mode), its accuracy on a held-out tenth of the clips, and their indices.
    """
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(len(x), generator=g)
    n_test = max(2, len(x) // 10)
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    path = Path(cache_dir) / "audio-refnet" / f"{_key(source, x, y)}.safetensors"
    net = RefNet(num_classes)
    loaded = False
    if path.is_file():
        try:
            load_model(net, str(path))
            loaded = True
        except Exception:  # a corrupt cache file is rebuilt, never trusted
            warn(f"{path}: unreadable cached classifier, training a new one")
    if not loaded:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():  # evaluations run under no_grad
            torch.default_generator.manual_seed(0)  # the CPU generator only: fork_rng restores just that one
            net = RefNet(num_classes)
            opt = torch.optim.Adam(net.parameters(), lr=2e-3)
            net.train()
            per_epoch = max(1, len(train_idx) // batch)
            for _ in range(max(epochs, -(-min_updates // per_epoch))):
                for idx in train_idx[torch.randperm(len(train_idx), generator=g)].split(batch):
                    if len(idx) < 2:  # batch norm needs two examples
                        continue
                    logits, _ = net(_float(x[idx]))
                    loss = F.cross_entropy(logits, y[idx])
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_model(net, str(tmp))
        tmp.replace(path)
    net.eval()
    with torch.no_grad():
        probs, _ = features(net, x[test_idx])
    accuracy = float((probs.argmax(1) == y[test_idx]).float().mean())
    return net, accuracy, test_idx


@torch.no_grad()
def features(net: RefNet, x: torch.Tensor, batch: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Class probabilities and 128-d features of clips ``x`` (int16, or float in [-1, 1])."""
    probs, feats = [], []
    for chunk in x.split(batch):
        logits, f = net(_float(chunk).cpu())
        probs.append(logits.softmax(1))
        feats.append(f)
    return torch.cat(probs), torch.cat(feats)


def score(net: RefNet, accuracy: float, real: torch.Tensor, fake: torch.Tensor, num_classes: int) -> dict[str, float]:
    """All refnet metrics of generated clips ``fake`` (float, [-1, 1]) against held-out ``real`` clips.

    A diverged generator's non-finite output is scored, not fatal: NaNs become 0 and values are clipped to
    [-1, 1], so the run still ends with its checkpoint and summary.
    """
    fake = torch.nan_to_num(fake.float(), nan=0.0, posinf=1.0, neginf=-1.0).clamp(-1.0, 1.0)
    p_fake, f_fake = features(net, fake)
    p_real, f_real = features(net, real)
    return classifier_metrics(p_fake, f_fake, p_real, f_real, accuracy, prefix="refnet")
