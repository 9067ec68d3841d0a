"""Offline sample-quality metrics computed in the feature space of a domain's own small classifier.

No Inception (or VGGish, or hub) weights can be downloaded on an offline machine, so each domain trains a
small reference classifier on its data and these functions compare feature statistics. The numbers are
comparable between genkit runs that use the same classifier, not with papers' Inception numbers; every
result should name its feature extractor. :mod:`genkit.refnet` trains and caches those classifiers.
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


def nearest_neighbour_distances(query: torch.Tensor, reference: torch.Tensor, exclude_self: bool = False,
                                chunk: int = 1024) -> torch.Tensor:
    """Euclidean distance from each row of ``query`` (N, D) to its nearest row of ``reference`` (M, D).

    With ``exclude_self`` (``query`` is ``reference``), a row's distance to itself does not count.
    """
    q, r = query.double(), reference.double()
    out = []
    for start in range(0, len(q), chunk):
        d = torch.cdist(q[start:start + chunk], r)
        if exclude_self:
            rows = torch.arange(d.shape[0])
            d[rows, rows + start] = float("inf")
        out.append(d.min(dim=1).values)
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def memorisation_metrics(f_fake: torch.Tensor, f_real: torch.Tensor, f_train: torch.Tensor,
                         prefix: str = "refnet") -> dict[str, float]:
    """Nearest-neighbour distances in a feature space (the WaveGAN paper's check that a model does not copy).

    ``_nn_train``: median distance of each generated sample to its nearest training example; ``_nn_train_real``:
    the same for held-out real examples (the reference: what new data looks like); ``_nn_ratio`` their ratio
    (about 1 for a model that generalises, near 0 for one that copies its training data, large for samples far
    from any data); ``_nn_self``: median distance of each generated sample to its nearest other generated
    sample (near 0 when the model repeats itself).
    """
    if len(f_fake) < 2 or len(f_train) < 1 or not torch.isfinite(f_fake).all():
        return {f"{prefix}_{k}": float("nan") for k in ("nn_train", "nn_train_real", "nn_ratio", "nn_self")}
    fake = float(nearest_neighbour_distances(f_fake, f_train).median())
    real = float(nearest_neighbour_distances(f_real, f_train).median())
    return {
        f"{prefix}_nn_train": fake,
        f"{prefix}_nn_train_real": real,
        f"{prefix}_nn_ratio": fake / real if real > 0 else float("nan"),
        f"{prefix}_nn_self": float(nearest_neighbour_distances(f_fake, f_fake, exclude_self=True).median()),
    }


def classifier_metrics(p_fake: torch.Tensor, f_fake: torch.Tensor, p_real: torch.Tensor, f_real: torch.Tensor,
                       accuracy: float, prefix: str = "refnet") -> dict[str, float]:
    """The standard set of scores from a reference classifier's outputs, keys named after the classifier.

    ``p_*`` are class probabilities (N, K) and ``f_*`` penultimate features (N, D) of generated and of held-out
    real samples; ``accuracy`` is the classifier's on those real samples. Keys: ``{prefix}_is`` (inception
    score), ``_fd`` (Fréchet distance), ``_kid``, ``_confident`` (share of samples classified with probability
    > 0.9), ``_classes`` (classes that get at least half their fair share of samples), ``_is_real`` and
    ``_accuracy`` (the reference points that make the others readable).
    """
    num_classes = p_fake.shape[1]
    counts = torch.bincount(p_fake.argmax(1), minlength=num_classes).float()
    is_fake, _ = inception_score(p_fake)
    is_real, _ = inception_score(p_real)
    kid, _ = kernel_inception_distance(f_fake, f_real, subsets=10,
                                       subset_size=max(2, min(500, len(f_fake), len(f_real))))
    return {
        f"{prefix}_is": is_fake,
        f"{prefix}_fd": frechet_distance(f_fake, f_real),
        f"{prefix}_kid": kid,
        f"{prefix}_confident": float((p_fake.max(1).values > 0.9).float().mean()),
        f"{prefix}_classes": float((counts >= 0.5 * len(p_fake) / num_classes).sum()),
        f"{prefix}_is_real": is_real,
        f"{prefix}_accuracy": accuracy,
    }
