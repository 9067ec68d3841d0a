"""A complete third-party genkit domain in one file: the ring of 8 Gaussians in 2-D.

The standard toy problem for mode collapse (Metz et al., "Unrolled Generative Adversarial Networks",
ICLR 2017): real data are points drawn around 8 centres on a circle of radius 2. A generator that
collapses covers few modes; ``evaluate`` reports how many modes the samples cover and the share of
high-quality samples (within 3 standard deviations of a centre), Metz et al.'s two numbers.

Install with ``pip install -e examples/genkit-ring``; then ``genkit run ring`` and ``genkit plugins`` show it.
It uses only genkit's public API: ``genkit.Domain``, ``genkit.option``, ``genkit.Data``, ``genkit.hookimpl``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from genkit import Data, Domain, GenkitError, hookimpl, option

MODES, RADIUS, STD = 8, 2.0, 0.02


def centres():
    import torch

    angles = torch.arange(MODES) * (2 * math.pi / MODES)
    return RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1)


@dataclass(frozen=True)
class RingOptions:
    """The domain's settings: each is a flag of ``genkit run ring`` and a key of the ``[ring]`` config table."""

    hidden: int = option(128, "Width of both MLPs.", gt=0)
    latent_dim: int = option(8, "Dimension of z ~ N(0, I).", gt=0)
    examples: int = option(4096, "Number of real points drawn.", gt=0)
    conditional: bool = option(False, "Condition on the mode index.")


class RingDomain(Domain):
    name = "ring"
    summary = "2-D ring of 8 Gaussians (mode-collapse toy problem)"
    paper = "Metz et al., Unrolled Generative Adversarial Networks, ICLR 2017 (the 2-D mixture benchmark)"
    sample_ext = ".json"
    Options = RingOptions
    data_names = ("ring",)  # the first built-in data name is the default --data
    evaluates = True
    best_metric = ("high_quality", "max")
    recipe = {"steps": 2000, "batch_size": 128, "lr_g": 1e-3, "lr_d": 1e-3, "beta1": 0.5, "beta2": 0.999,
              "log_every": 50, "sample_every": 500, "checkpoint_every": 500}

    def load_data(self, spec, options, *, cache_dir):
        import torch
        from torch.utils.data import TensorDataset

        if spec != "ring":
            raise GenkitError(f"--data {spec}: the ring domain generates its own data (use --data ring)")
        g = torch.Generator().manual_seed(1234)
        y = torch.randint(0, MODES, (options.examples,), generator=g)
        x = centres()[y] + STD * torch.randn(options.examples, 2, generator=g)
        return Data(train=TensorDataset(x, y), conditional=options.conditional,
                    num_classes=MODES if options.conditional else 0, class_names=[str(i) for i in range(MODES)],
                    source=f"ring of {MODES} Gaussians ({options.examples} points)")

    def build_models(self, options, data):
        k, h, d = data.num_classes, options.hidden, options.latent_dim
        return MLP(d, 2, h, k), MLP(2, 1, h, k, squeeze=True)

    def sample_latent(self, n, options, *, rng, device):
        import torch

        return torch.randn(n, options.latent_dim, generator=rng, device=device)

    def sample_shape(self, options, data):
        return (2,)

    def snapshot_size(self, options):
        return 512

    def write_snapshot(self, samples, cond, path, options, data):
        file = path.with_suffix(".json")
        file.write_text(json.dumps(samples.tolist()), encoding="utf-8")
        return [file]

    def write_samples(self, samples, cond, out_dir, options, data):
        return self.write_snapshot(samples, cond, out_dir / "samples", options, data)

    def evaluate(self, ctx):
        """Modes covered and share of high-quality samples (within 3 std of a centre) over 2,048 samples."""
        import torch

        g = torch.Generator(device=ctx.device).manual_seed(0)
        z = self.sample_latent(2048, ctx.options, rng=g, device=ctx.device)
        cond = (torch.arange(2048, device=ctx.device) % MODES) if ctx.data.conditional else None
        x = ctx.generator(z, cond).cpu()
        dist = torch.cdist(x, centres())
        best, mode = dist.min(dim=1)
        good = best < 3 * STD * math.sqrt(2)
        covered = torch.bincount(mode[good], minlength=MODES) > 20  # > 1 % of the samples
        return {"modes": float(covered.sum()), "high_quality": float(good.float().mean())}


def MLP(inp, out, hidden, num_classes=0, squeeze=False):
    from torch import nn

    class _MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(num_classes, inp) if num_classes else None
            self.net = nn.Sequential(nn.Linear(inp, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, out))

        def forward(self, x, cond=None):
            if self.embed is not None:
                x = x + self.embed(cond)
            y = self.net(x)
            return y.squeeze(-1) if squeeze else y

    return _MLP()


@hookimpl
def genkit_register_domains(register):
    register(RingDomain())
