"""Seconds per training step of the audio domain: genkit's Trainer vs a plain hand-written PyTorch loop.

Both loops train the same WaveGAN modules (``AudioDomain.build_models``; unconditional) on the same data (the
spoken-digit corpus) with the same settings (a preset's size, n_critic, Adam, batch); one step is one generator update
after ``n_critic`` critic updates with WGAN-GP. The plain loop is what a user would write by hand, without
genkit's bookkeeping (metrics accumulation, RNG streams, the domain protocol).

    python benchmarks/bench_audio.py                       # both presets, batch 64, 1 warm-up + 2 timed steps
    python benchmarks/bench_audio.py --presets default --steps 5

It is a benchmark, not a test: the paper preset (d = 64) takes tens of seconds per step on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch


def plain_loop(G, D, x, cfg, steps: int, warmup: int) -> float:
    """A hand-written WGAN-GP loop over the same modules: returns seconds per step."""
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    B, latent = cfg.batch_size, G.cfg.latent_dim

    def step():
        for _ in range(cfg.n_critic):
            real = x[torch.randint(len(x), (B,))].float() / 32768.0
            z = torch.rand(B, latent) * 2 - 1
            with torch.no_grad():
                fake = G(z)
            alpha = torch.rand(B, 1, 1)
            x_hat = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
            (grad,) = torch.autograd.grad(D(x_hat).sum(), x_hat, create_graph=True)
            gp = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
            loss_d = D(fake).mean() - D(real).mean() + cfg.gp * gp
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        for p in D.parameters():
            p.requires_grad_(False)
        loss_g = -D(G(torch.rand(B, latent) * 2 - 1)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in D.parameters():
            p.requires_grad_(True)

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - start) / steps


def bench(preset: str, steps: int, warmup: int, batch: int | None) -> dict:
    from genkit.config import resolve
    from genkit.engine import Trainer, count_parameters
    from genkit.plugins import registry

    reg = registry()
    domain = reg.domain("audio")
    # The comparison is of loops, not recipes: WaveGAN, unconditional, WGAN-GP in both (the default recipe's SpecGAN
    # and hinge loss are swapped for them; the preset keeps its size, batch and n_critic).
    flags = {"device": "cpu", "model": "wavegan", "conditional": False, "loss": "wgan-gp", "g_norm": "none",
             "d_norm": "none", "length": 16384}
    if batch:
        flags["batch_size"] = batch
    cfg = resolve(domain, reg.losses, preset=preset, flags=flags)
    cache = Path(os.environ.get("GENKIT_CACHE", Path.home() / ".cache" / "genkit"))
    data = domain.load_data(cfg.data, cfg.options, cache_dir=cache)
    cfg = cfg.replace(options=domain.resolve_options(cfg.options, data))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(domain=domain, config=cfg, data=data, loss=reg.loss(cfg.train.loss), out=Path(tmp), quiet=True)
        for _ in range(warmup):
            trainer.train_step()
        start = time.perf_counter()
        for _ in range(steps):
            trainer.train_step()
        genkit_s = (time.perf_counter() - start) / steps
        print(json.dumps({"preset": preset, "genkit_s_per_step": round(genkit_s, 3)}), flush=True)
        params = {"generator": count_parameters(trainer.G), "discriminator": count_parameters(trainer.D)}
    torch.manual_seed(cfg.train.seed)
    G, D = domain.build_models(cfg.options, data)
    plain_s = plain_loop(G, D, data.train.tensors[0], cfg.train, steps, warmup)
    return {"preset": preset, "model_size": cfg.options.model_size, "batch_size": cfg.train.batch_size,
            "n_critic": cfg.train.n_critic, "parameters": params, "steps_timed": steps,
            "genkit_s_per_step": round(genkit_s, 3), "plain_s_per_step": round(plain_s, 3),
            "overhead_pct": round(100 * (genkit_s / plain_s - 1), 1), "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="default,paper")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64, help="0 = the preset's own")
    args = ap.parse_args()
    for preset in args.presets.split(","):
        print(json.dumps(bench(preset, args.steps, args.warmup, args.batch_size or None)), flush=True)


if __name__ == "__main__":
    main()
