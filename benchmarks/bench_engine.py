"""Benchmark: genkit's engine vs a plain hand-written PyTorch loop over the same modules, batch and data, for
each built-in domain; and the share of genkit's step spent waiting for data.

Both loops train the domain's default models (the default `genkit run DOMAIN` configuration unless flags say
otherwise) with the domain's default loss, Adam, `n_critic` discriminator updates per generator update, on the
same data tensors (audio without its recipe's AC-GAN and LeCam terms, which the plain loop has not got). The plain
loop is what pytorch/examples' dcgan does: index a random batch, D step, G step, nothing else. It calls the
domain's own model code where the model needs it (the text domain's Gumbel-softmax `fake`, its `generator_loss`),
because that is the model, not the engine; it skips all of genkit's bookkeeping (the NaN checks, the statistics,
the RNG streams, the step context). Timings alternate between the loops
(A B A B ...) so that drift of the machine hits both equally; the median round is reported.

Data wait: one more pass of genkit's step in which the batch fetch (index, copy, transform) is timed on its own
(with a CUDA synchronisation around it on a GPU, so the time is the fetch's, not queued kernels').

    python benchmarks/bench_engine.py                          # image, audio and text, CPU
    python benchmarks/bench_engine.py --domains image --g-width 64 --d-width 64 --rounds 5
    python benchmarks/bench_engine.py --device cuda --json out.json

Targets (docs/benchmarks.md): genkit's time per step within 2 % of the plain loop; data wait under 5 % of a step.
Text times its adversarial step only (the MLE pre-training phase is the domain's own loop).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from genkit.config import resolve
from genkit.domain import StepContext
from genkit.engine import Trainer
from genkit.plugins import registry


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(domain: str, args: argparse.Namespace) -> dict:
    reg = registry()
    dom = reg.domain(domain)
    flags = {"device": args.device, "precision": args.precision}
    for k in ("batch_size", "g_width", "d_width"):
        if getattr(args, k) is not None and (k == "batch_size" or domain == "image"):
            flags[k] = getattr(args, k)
    if domain == "audio":  # terms of the audio recipe that the plain loop does not compute (its augmentation is D's own)
        flags.update(aux_class=0.0, lecam=0.0)
    cfg = resolve(dom, reg.losses, flags=flags)
    cache = Path(tempfile.mkdtemp())
    data = dom.load_data(cfg.data, cfg.options, cache_dir=cache)
    trainer = Trainer(domain=dom, config=cfg, data=data, loss=reg.loss(cfg.train.loss), out=Path(tempfile.mkdtemp()),
                      quiet=True)
    cfg, device, loss = trainer.config, trainer.device, trainer.loss
    tc = cfg.train

    # The plain loop: same architecture (its own copy), same data tensors, same optimiser settings.
    torch.manual_seed(0)
    G, D = dom.build_models(cfg.options, data)
    G, D = G.to(device), D.to(device)
    opt_g = torch.optim.Adam(G.parameters(), lr=tc.lr_g, betas=(tc.beta1, tc.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=tc.lr_d, betas=(tc.beta1, tc.beta2))
    tensors = tuple(t.to(device) for t in data.train.tensors)
    x_all = tensors[0]
    c_all = tensors[1] if len(tensors) > 1 and data.conditional else None
    bs = tc.batch_size
    rng = torch.Generator(device=device).manual_seed(1)
    ctx = StepContext.create(cfg, G, D, loss, device, rng, data, cache_dir=cache)
    state = {"perm": torch.randperm(len(x_all), device=device), "pos": 0}
    amp = (torch.autocast(device.type, dtype=torch.bfloat16) if tc.precision == "bf16"
           else torch.autocast(device.type, enabled=False))

    def batch():
        if state["pos"] + bs > len(x_all):
            state["perm"], state["pos"] = torch.randperm(len(x_all), device=device), 0
        idx = state["perm"][state["pos"]:state["pos"] + bs]
        state["pos"] += bs
        x = x_all[idx]
        x = data.transform(x) if data.transform is not None else x
        return x, (c_all[idx] if c_all is not None else None)

    def plain_step() -> None:
        for _ in range(tc.n_critic):
            real, cond = batch()
            ctx.real, ctx.cond = real, cond
            z = dom.sample_latent(bs, cfg.options, rng=rng, device=device)
            with torch.no_grad(), amp:
                fake = dom.fake(G, z, cond, ctx)
            with amp:
                loss_d = loss.discriminator(D(real, cond).float(), D(fake, cond).float())
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        z = dom.sample_latent(bs, cfg.options, rng=rng, device=device)
        with amp:
            loss_g = dom.generator_loss(z, cond, ctx)
            if loss_g is None:
                d_real = D(real, cond).float() if loss.uses_real_in_generator else None
                loss_g = loss.generator(D(dom.fake(G, z, cond, ctx), cond).float(), d_real)
        opt_g.zero_grad(set_to_none=True)
        loss_g.float().backward()
        opt_g.step()

    def genkit_step() -> None:
        trainer.train_step()

    def timed(fn) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            fn()
        _sync(device)
        return (time.perf_counter() - start) / args.steps

    for fn in (plain_step, genkit_step):  # warm-up
        for _ in range(args.warmup):
            fn()
    plain, gk = [], []
    for _ in range(args.rounds):
        plain.append(timed(plain_step))
        gk.append(timed(genkit_step))

    # Data wait: genkit's batch fetch timed inside its own step.
    fetch = trainer._real
    waited = [0.0]

    def timed_fetch():
        _sync(device)
        t0 = time.perf_counter()
        out = fetch()
        _sync(device)
        waited[0] += time.perf_counter() - t0
        return out

    trainer._real = timed_fetch  # type: ignore[method-assign]
    total = timed(genkit_step) * args.steps
    trainer._real = fetch  # type: ignore[method-assign]
    p, g = statistics.median(plain), statistics.median(gk)
    return {"domain": domain, "device": str(device), "precision": tc.precision, "batch_size": bs,
            "loss": tc.loss, "n_critic": tc.n_critic, "threads": torch.get_num_threads(),
            "rounds": args.rounds, "steps": args.steps,
            "plain_ms": p * 1000, "genkit_ms": g * 1000, "overhead_pct": 100 * (g / p - 1),
            "plain_rounds_ms": [t * 1000 for t in plain], "genkit_rounds_ms": [t * 1000 for t in gk],
            "data_wait_pct": 100 * waited[0] / total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--domains", default="image,audio,text")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--g-width", type=int, default=None, help="image only")
    ap.add_argument("--d-width", type=int, default=None, help="image only")
    ap.add_argument("--batch-size", type=int, default=None, help="default: each domain's")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for domain in args.domains.split(","):
        r = bench(domain, args)
        rows.append(r)
        print(f"{domain} ({r['device']}, {r['precision']}, batch {r['batch_size']}, loss {r['loss']}, "
              f"{r['threads']} threads, {r['rounds']} rounds x {r['steps']} steps)")
        print(f"  plain PyTorch loop: {r['plain_ms']:.2f} ms/step (rounds: "
              f"{', '.join(f'{t:.2f}' for t in r['plain_rounds_ms'])})")
        print(f"  genkit engine:      {r['genkit_ms']:.2f} ms/step (rounds: "
              f"{', '.join(f'{t:.2f}' for t in r['genkit_rounds_ms'])})")
        print(f"  overhead {r['overhead_pct']:+.1f} % (target: within 2 %); data wait {r['data_wait_pct']:.1f} % "
              f"of a step (target: under 5 %)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
