"""Benchmark: genkit's engine vs a plain hand-written PyTorch loop over the same modules, batch and data.

Both loops train the image domain's DCGAN (the default `genkit run image` configuration unless flags say
otherwise) with the non-saturating loss, Adam, one discriminator update per generator update, on the same
MNIST tensors. The plain loop is what pytorch/examples' dcgan does, without genkit's bookkeeping.
Timings alternate between the two loops (A B A B ...) so that drift of the machine hits both equally.

    python benchmarks/bench_engine.py                 # default config
    python benchmarks/bench_engine.py --g-width 64 --d-width 64 --rounds 5

Target (docs/benchmarks.md): genkit's time per step within 5 % of the plain loop.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genkit.config import resolve
from genkit.engine import Trainer
from genkit.plugins import registry


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--g-width", type=int, default=None)
    ap.add_argument("--d-width", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    reg = registry()
    dom = reg.domain("image")
    overrides = {"batch_size": args.batch_size, "device": "cpu", "g_width": args.g_width, "d_width": args.d_width}
    cfg = resolve(dom, reg.losses, flags=overrides)
    data = dom.load_data(cfg.data, cfg.options, cache_dir=Path(tempfile.mkdtemp()))
    cfg = cfg.replace(options=dom.resolve_options(cfg.options, data))
    out = Path(tempfile.mkdtemp())
    trainer = Trainer(domain=dom, config=cfg, data=data, loss=reg.loss("ns"), out=out, quiet=True)

    # The plain loop: same architecture, same data tensors, same optimiser settings.
    torch.manual_seed(0)
    G, D = dom.build_models(cfg.options, data)
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.train.lr_g, betas=(cfg.train.beta1, cfg.train.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.train.lr_d, betas=(cfg.train.beta1, cfg.train.beta2))
    x_all = data.train.tensors[0]
    bs, zdim = cfg.train.batch_size, cfg.options.latent_dim
    state = {"perm": torch.randperm(len(x_all)), "pos": 0}

    def plain_step() -> None:
        if state["pos"] + bs > len(x_all):
            state["perm"], state["pos"] = torch.randperm(len(x_all)), 0
        idx = state["perm"][state["pos"]:state["pos"] + bs]
        state["pos"] += bs
        real = x_all[idx].float().div_(127.5).sub_(1.0)
        z = torch.randn(bs, zdim)
        with torch.no_grad():
            fake = G(z)
        loss_d = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        z = torch.randn(bs, zdim)
        loss_g = F.softplus(-D(G(z))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    def genkit_step() -> None:
        trainer.train_step()

    def timed(fn) -> float:
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        return (time.perf_counter() - start) / args.steps

    for fn in (plain_step, genkit_step):  # warm-up
        for _ in range(5):
            fn()
    plain, gk = [], []
    for _ in range(args.rounds):
        plain.append(timed(plain_step))
        gk.append(timed(genkit_step))
    p, g = statistics.median(plain), statistics.median(gk)
    print(f"config: image DCGAN g_width={cfg.options.g_width} d_width={cfg.options.d_width} batch={bs}, "
          f"threads={torch.get_num_threads()}, {args.rounds} rounds x {args.steps} steps")
    print(f"plain PyTorch loop: {p * 1000:.1f} ms/step (rounds: {', '.join(f'{t * 1000:.1f}' for t in plain)})")
    print(f"genkit engine:      {g * 1000:.1f} ms/step (rounds: {', '.join(f'{t * 1000:.1f}' for t in gk)})")
    print(f"overhead: {100 * (g / p - 1):+.1f} % (target: within 5 %)")


if __name__ == "__main__":
    main()
