"""Benchmark: the text domain's adversarial (Gumbel-softmax) step and its sampling, on this machine.

The corpus recipe's GPT-2 (4 blocks x 128, word vocabulary of 8,000, 32 tokens, batch 64) is trained by MLE for
``--mle-steps`` steps first, so that its samples end the way a corpus's sentences do (about half of the positions
are padding after the first EOS). Then, rounds alternating between the two decoders so that drift of a shared
machine hits each alike:

- ``cached-gpt2``: sampling through ``genkit_text.model.CachedGPT2`` (the model's own weights, key/value buffers
  allocated once, only the rows still running computed): what genkit uses for a from-scratch GPT-2;
- ``transformers``: sampling through the model's ``forward`` with transformers' key/value cache: what genkit uses
  for a pretrained or LoRA model, and what every model used before.

Both compute the output layer, noise and softmax only where a token counts. Reports the median seconds of one
training step (``Trainer.train_step``: the discriminator's batch of fakes, its update, the generator's batch with
gradients and its update) and of drawing ``--samples`` sentences with nucleus sampling (an evaluation's BLEU set).

    python benchmarks/bench_text_step.py                          # pydoc, 2 rounds x 5 steps
    python benchmarks/bench_text_step.py --data corpus.txt --rounds 3 --threads 2

Results: docs/benchmarks.md ("The text domain's Gumbel step").
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
from genkit.engine import Trainer
from genkit.plugins import registry
from genkit_text.model import CachedGPT2

VARIANTS = ("cached-gpt2", "transformers")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="pydoc")
    ap.add_argument("--mle-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=5, help="timed training steps per round")
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", dest="as_json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reg = registry()
    dom = reg.domain("text")
    flags = {"pretrain_steps": args.mle_steps, "mle_patience": 0, "sweep": "1.0", "bleu_samples": 50,
             "nll_samples": 50}
    cfg = resolve(dom, reg.losses, data=args.data, flags=flags)
    data = dom.load_data(cfg.data, cfg.options, cache_dir=Path(tempfile.mkdtemp()))
    trainer = Trainer(domain=dom, config=cfg, data=data, loss=reg.loss(cfg.train.loss), out=Path(tempfile.mkdtemp()),
                      quiet=True)
    t0 = time.perf_counter()
    trainer._phases()
    mle_s = time.perf_counter() - t0
    of = CachedGPT2.__dict__["of"]
    step: dict[str, list[float]] = {v: [] for v in VARIANTS}
    draw: dict[str, list[float]] = {v: [] for v in VARIANTS}
    G = trainer.G
    try:
        for _ in range(args.rounds):
            for name in VARIANTS:
                CachedGPT2.of = of if name == "cached-gpt2" else classmethod(lambda cls, *a: None)
                t0 = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step()
                step[name].append((time.perf_counter() - t0) / args.steps)
                was = G.training
                G.eval()
                t0 = time.perf_counter()
                G.sample(args.samples, top_p=0.9, generator=torch.Generator().manual_seed(0))
                draw[name].append(time.perf_counter() - t0)
                G.train(was)
    finally:
        CachedGPT2.of = of
    base = VARIANTS[0]
    rows = [{"variant": v, "s_per_step": statistics.median(step[v]), "s_per_draw": statistics.median(draw[v])}
            for v in VARIANTS]
    for r in rows:
        r["step_vs_" + base] = r["s_per_step"] / rows[0]["s_per_step"]
        r["draw_vs_" + base] = r["s_per_draw"] / rows[0]["s_per_draw"]
    if args.as_json:
        print(json.dumps({"mle_seconds": mle_s, "rows": rows}, indent=2))
        return
    print(f"text corpus recipe on {args.data} after {args.mle_steps} MLE steps ({mle_s:.0f} s), "
          f"{torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps")
    print(f"| decoder | s per Gumbel step | s per {args.samples} samples (top-p 0.9) |")
    print("|---|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_step']:.2f} ({r['step_vs_' + base]:.2f}x) | "
              f"{r['s_per_draw']:.2f} ({r['draw_vs_' + base]:.2f}x) |")


if __name__ == "__main__":
    main()
