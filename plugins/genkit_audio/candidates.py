"""Choosing among candidate clips with the discriminator's classifier (``--candidates K``).

For each clip asked for, the generator makes K candidates and the one that AC-GAN's auxiliary classifier in the
discriminator (``--aux-class``, Odena et al. 2017) gives the highest probability of the clip's intended class is
kept. Using the trained discriminator to choose what to keep follows Discriminator Rejection Sampling (Azadi et
al., "Discriminator Rejection Sampling", ICLR 2019), which filters by D's realness; choosing by the class
probability instead is a genkit addition, measured in docs/audio.md ("Choosing among candidates"): realness alone
made clips follow their label less.

The candidates of a latent ``z`` are ``z`` itself and K - 1 fixed shifts of it on the torus [-1, 1)^d, so that each
candidate is U[-1, 1] as ``z`` is, and the chosen clip is a function of ``z`` alone: the same seed gives the same
clip, wherever it is drawn and with whichever other clips. Training never sees the picker; it only changes what
samples and evaluations draw.
"""

from __future__ import annotations

import torch
import torch.nn as nn

OFFSET_SEED = 314159  # the candidates' shifts: fixed, so that a latent's candidates never change


def candidate_latents(z: torch.Tensor, k: int) -> list[torch.Tensor]:
    """``z`` and ``k - 1`` shifts of it, each wrapped into [-1, 1) (a latent U[-1, 1] stays U[-1, 1])."""
    rng = torch.Generator().manual_seed(OFFSET_SEED)
    shifts = torch.rand(k - 1, *z.shape[1:], generator=rng).mul_(2.0).to(device=z.device, dtype=z.dtype)
    return [z] + [torch.remainder(z + 1.0 + s, 2.0) - 1.0 for s in shifts]


class CandidatePicker(nn.Module):
    """``generator`` as samples are drawn from it, keeping for each row the candidate that ``discriminator``'s
    auxiliary classifier most believes to be of the row's class. Unconditional calls, vector conditions (a
    cross-modal run) and ``k`` 1 are passed straight to the generator."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module, k: int):
        super().__init__()
        self.generator = generator
        self._critic = (discriminator,)  # a tuple, not a submodule: .eval() / .train() / .to() leave it alone
        self.k = int(k)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:  # what the domain reads off its generator (e.g. SpecGAN's spec_mean / spec_std)
            return getattr(self._modules["generator"], name)

    @torch.no_grad()
    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        G, D = self.generator, self._critic[0]
        if self.k <= 1 or cond is None or cond.dim() != 1 or getattr(D, "aux_classifier", None) is None:
            return G(z, cond)
        labels = cond.long().unsqueeze(1)
        was_training = D.training
        D.eval()  # no augmentation, no spectral-norm power iteration: D's state is left as it was
        try:
            best, best_score = None, None
            for zk in candidate_latents(z, self.k):
                out = G(zk, cond)
                D(out, cond)
                score = D.class_logits.float().log_softmax(1).gather(1, labels).squeeze(1)
                if best is None:
                    best, best_score = out.clone(), score
                else:
                    better = score > best_score
                    best[better] = out[better]
                    best_score = torch.where(better, score, best_score)
        finally:
            D.train(was_training)
        return best
