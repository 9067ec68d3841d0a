"""Benchmark: the speed options of `genkit run` (--precision, --compile, --channels-last) on this machine's device.

Each variant trains the image domain's default DCGAN (batch 64 unless --batch-size) through genkit's Trainer:
warm-up steps first (torch.compile compiles there), then timed rounds, variants alternating round by round
(A B C ... A B C ...) so that drift of a shared machine hits each equally. Reports the median seconds per step and
the ratio to fp32.

    python benchmarks/bench_speed.py                       # fp32, bf16, fp16, compile
    python benchmarks/bench_speed.py --variants fp32,bf16 --rounds 5 --threads 2

Results (docs/benchmarks.md, "Speed options"). On a GPU, benchmarks/gpu.sh is the script to run.
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

VARIANTS = {"fp32": {}, "bf16": {"precision": "bf16"}, "fp16": {"precision": "fp16"}, "compile": {"compile": True},
            "channels-last": {"channels_last": True}, "bf16+channels-last": {"precision": "bf16", "channels_last": True}}


def build(variant: str, args, data_cache: Path, dom, reg):
    flags = {"batch_size": args.batch_size, "device": args.device, **VARIANTS[variant]}
    cfg = resolve(dom, reg.losses, flags=flags)
    data = dom.load_data(cfg.data, cfg.options, cache_dir=data_cache)
    return Trainer(domain=dom, config=cfg, data=data, loss=reg.loss(cfg.train.loss), out=Path(tempfile.mkdtemp()),
                   quiet=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="fp32,bf16,fp16,compile")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--steps", type=int, default=20, help="timed steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", dest="as_json", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reg = registry()
    dom = reg.domain("image")
    cache = Path(tempfile.mkdtemp())
    names = args.variants.split(",")
    trainers, warm = {}, {}
    for name in names:
        trainers[name] = build(name, args, cache, dom, reg)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            trainers[name].train_step()
        warm[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds):
        for name in names:
            t = trainers[name]
            if t.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                t.train_step()
            if t.device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times[names[0]])
    rows = [{"variant": n, "s_per_step": statistics.median(times[n]), "vs_" + names[0]: statistics.median(times[n]) / base,
             "warmup_s": warm[n]} for n in names]
    if args.as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"image DCGAN default, batch {args.batch_size}, {args.device}, {torch.get_num_threads()} threads, "
          f"{args.rounds} rounds x {args.steps} steps")
    print(f"| variant | s/step | vs {names[0]} | warm-up ({args.warmup} steps) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['s_per_step']:.4f} | {r['vs_' + names[0]]:.2f}x | {r['warmup_s']:.1f} s |")


if __name__ == "__main__":
    main()
