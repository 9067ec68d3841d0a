"""Offline sample-quality metrics computed in the feature space of a domain's own small classifier.

No Inception (or VGGish, or hub) weights can be downloaded on an offline machine, so each domain trains a
small reference classifier on its data and these functions compare feature statistics. The numbers are
comparable between genkit runs that use the same classifier, not with papers' Inception numbers; every
result should name its feature extractor.
"""

from __future__ import annotations

import torch


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D) (FID's formula)."""
    a, b = a.double(), b.double()
    if len(a) < 2 or len(b) < 2 or not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")  # no covariance to fit (a diverged generator's NaNs would crash the eigensolver)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    # tr(sqrt(cov_a cov_b)) from the eigenvalues of the product (real, non-negative up to round-off).
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp(min=0)
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum())


def inception_score(probs: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception score ``exp(E_x KL(p(y|x) || p(y)))`` of class probabilities (N, K): mean and std over splits."""
    probs = probs.double().clamp_min(1e-12)
    scores = []
    for chunk in probs.chunk(splits):
        py = chunk.mean(0, keepdim=True)
        kl = (chunk * (chunk.log() - py.log())).sum(1).mean()
        scores.append(kl.exp())
    s = torch.stack(scores)
    return float(s.mean()), float(s.std(unbiased=False)) if len(s) > 1 else 0.0


def kernel_inception_distance(a: torch.Tensor, b: torch.Tensor, subsets: int = 10, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """KID (Bińkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, mean and std over subsets."""
    a, b = a.double(), b.double()
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    g = torch.Generator().manual_seed(seed)
    vals = []
    for _ in range(subsets):
        x = a[torch.randperm(len(a), generator=g)[:m]]
        y = b[torch.randperm(len(b), generator=g)[:m]]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        mmd = (kxx.sum() - kxx.diag().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diag().sum()) / (m * (m - 1)) \
            - 2 * kxy.mean()
        vals.append(mmd)
    v = torch.stack(vals)
    return float(v.mean()), float(v.std(unbiased=False))
