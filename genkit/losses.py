"""Adversarial losses, registered through the ``genkit_register_losses`` hook like any plugin's.

Every loss works on raw discriminator outputs (logits / critic values), one per sample.

- ``ns``: the seed document's non-saturating loss (Goodfellow et al., 2014):
  ``L_D = -[log D(x) + log(1 - D(G(z)))]``, ``L_G = -log D(G(z))`` with ``D = sigmoid(logit)``.
- ``minimax``: the original zero-sum game, ``L_G = log(1 - D(G(z)))`` (saturates early in training).
- ``wgan-gp``: Wasserstein critic (Arjovsky et al., 2017) with gradient penalty 10 (Gulrajani et al., 2017).
- ``wgan``: the Wasserstein critic without a penalty (add ``--gp`` or ``--r1`` yourself).
- ``hinge``: Lim & Ye 2017, Miyato et al. 2018.
- ``lsgan``: least squares, a=0, b=c=1 (Mao et al., 2017).
- ``rsgan``: relativistic standard GAN (Jolicoeur-Martineau, 2019), the loss RelGAN uses.

The penalties (``gp``: on interpolates, pushing the gradient norm to 1; ``r1``: on real data, pushing it to 0)
are options of the engine, so they combine with any loss; a loss may carry its own defaults for them
(``default_gp``, ``default_r1``) and a penalty of its own (``penalty``), so that "non-saturating + R1" or
"WGAN-LP" is one registration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .hookspecs import hookimpl

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor


@dataclass(frozen=True)
class Loss:
    """A named pair of discriminator and generator losses on logits.

    ``discriminator(real, fake)`` and ``generator(fake, real)`` return scalars; ``real`` is passed to the
    generator loss only when ``uses_real_in_generator`` is true (relativistic losses), otherwise None.
    ``default_gp`` and ``default_r1`` are the gradient-penalty and R1 weights used when the user sets none
    (``--gp`` / ``--r1`` still override them). ``penalty(discriminator, real, fake, cond)``, when given, returns a
    scalar added to the discriminator's loss at every discriminator update (its weight included), for penalties
    other than those two (e.g. WGAN-LP's one-sided penalty); ``fake`` is detached.
    """

    name: str
    discriminator: Callable[[Tensor, Tensor], Tensor]
    generator: Callable[[Tensor, Tensor | None], Tensor]
    summary: str = ""
    default_gp: float = 0.0
    uses_real_in_generator: bool = False
    default_r1: float = 0.0
    penalty: Callable[..., Tensor] | None = None


def _softplus(x):
    import torch.nn.functional as F

    return F.softplus(x)


def _relu(x):
    import torch.nn.functional as F

    return F.relu(x)


# softplus(-x) = -log(sigmoid(x)) and softplus(x) = -log(1 - sigmoid(x)), computed stably.
def ns_d(real, fake):
    return _softplus(-real).mean() + _softplus(fake).mean()


def ns_g(fake, real=None):
    return _softplus(-fake).mean()


def minimax_g(fake, real=None):
    return -_softplus(fake).mean()  # = mean(log(1 - D(G(z))))


def wgan_d(real, fake):
    return fake.mean() - real.mean()


def wgan_g(fake, real=None):
    return -fake.mean()


def hinge_d(real, fake):
    return _relu(1.0 - real).mean() + _relu(1.0 + fake).mean()


def lsgan_d(real, fake):
    return 0.5 * ((real - 1.0) ** 2).mean() + 0.5 * (fake**2).mean()


def lsgan_g(fake, real=None):
    return 0.5 * ((fake - 1.0) ** 2).mean()


def rsgan_d(real, fake):
    return _softplus(-(real - fake)).mean()


def rsgan_g(fake, real):
    return _softplus(-(fake - real)).mean()


BUILTIN_LOSSES = (
    Loss("ns", ns_d, ns_g, "non-saturating GAN loss of the seed document (Goodfellow et al. 2014)"),
    Loss("minimax", ns_d, minimax_g, "original minimax GAN loss, L_G = log(1 - D(G(z)))"),
    Loss("wgan-gp", wgan_d, wgan_g, "Wasserstein critic with gradient penalty 10 (Gulrajani et al. 2017)", default_gp=10.0),
    Loss("wgan", wgan_d, wgan_g, "Wasserstein critic, no penalty unless --gp/--r1 is given"),
    Loss("hinge", hinge_d, wgan_g, "hinge loss (Lim & Ye 2017; Miyato et al. 2018)"),
    Loss("lsgan", lsgan_d, lsgan_g, "least-squares GAN (Mao et al. 2017)"),
    Loss("rsgan", rsgan_d, rsgan_g, "relativistic standard GAN (Jolicoeur-Martineau 2019)", uses_real_in_generator=True),
)


@hookimpl
def genkit_register_losses(register):
    for loss in BUILTIN_LOSSES:
        register(loss)


def gradient_penalty(discriminator, real, fake, cond, rng=None):
    """WGAN-GP: ``E[(||grad_x D(x_hat)||_2 - 1)^2]`` on random interpolates of real and fake samples."""
    import torch

    real, fake = real.detach(), fake.detach()
    shape = (real.shape[0],) + (1,) * (real.dim() - 1)
    alpha = torch.rand(shape, device=real.device, generator=rng, dtype=real.dtype)
    x_hat = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    out = discriminator(x_hat, cond)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    norm = grad.flatten(1).norm(2, dim=1)
    return ((norm - 1.0) ** 2).mean()


def r1_penalty(discriminator, real, cond):
    """R1 (Mescheder et al., 2018): ``E[||grad_x D(x)||^2] / 2`` on real data."""
    import torch

    x = real.detach().requires_grad_(True)
    out = discriminator(x, cond)
    (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return 0.5 * grad.flatten(1).pow(2).sum(1).mean()


LECAM_DECAY = 0.99  # the paper's decay of the moving averages of D's outputs


def lecam_penalty(d_real, d_fake, anchors):
    """LeCam (Tseng et al., "Regularizing Generative Adversarial Networks under Limited Data", CVPR 2021):
    ``E[relu(D(x) - a_fake)^2] + E[relu(a_real - D(G(z)))^2]``, where ``a_real`` and ``a_fake`` (``anchors``,
    a tensor of 2) are moving averages of D's mean output on real and on generated data. It keeps D's outputs on
    real data from running away from those on fakes, which a discriminator that can learn a small training set by
    heart otherwise does."""
    import torch.nn.functional as F

    return F.relu(d_real - anchors[1]).pow(2).mean() + F.relu(anchors[0] - d_fake).pow(2).mean()


def mismatched_rows(cond, rng):
    """For the matching-aware discriminator (``--mismatch``; Reed et al., "Generative Adversarial Text to Image
    Synthesis", ICML 2016): for each row ``i`` of a batch's class labels ``cond``, a row ``j`` drawn uniformly
    (with ``rng``) among those of another class, so that ``real[rows]`` under ``cond`` pairs every real example
    with a label that is not its own. None when there are no class labels (``cond`` None, not one integer per
    row) or some row has no example of another class in the batch (the term is then skipped for that update)."""
    import torch

    if cond is None or cond.dim() != 1 or cond.is_floating_point() or len(cond) < 2:
        return None
    other = cond.unsqueeze(0) != cond.unsqueeze(1)  # other[i, j]: row j is of another class than row i
    if not bool(other.any(dim=1).all()):
        return None
    return torch.multinomial(other.float(), 1, generator=rng).squeeze(1)
