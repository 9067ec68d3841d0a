"""Speed on an accelerator: steps/s and peak memory for each domain, fp32 vs bf16, torch.compile off vs on.

    bash benchmarks/gpu.sh                  # on a machine with an NVIDIA GPU (at most about 8 minutes)
    python benchmarks/bench_gpu.py --smoke  # anywhere: tiny sizes on the CPU, proves the script works

Cases (the issue's): DCGAN 64x64 at batch 256, WaveGAN's paper preset at batch 64, text at batch 64. Each case x
{fp32, bf16} x {eager, compile}: build genkit's Trainer, warm up (compilation happens there), time --steps steps,
read torch.cuda.max_memory_allocated. Writes OUT/gpu.json and OUT/gpu.md (a markdown table).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from genkit.config import resolve
from genkit.engine import Trainer
from genkit.plugins import registry

CASES = {  # name: (domain, preset, flags)
    "dcgan-64": ("image", None, {"size": 64, "batch_size": 256}),
    "wavegan-paper": ("audio", "paper", {"batch_size": 64}),
    "text": ("text", None, {"batch_size": 64}),
}
SMOKE = {  # the same cases at sizes a CPU runs in seconds
    "dcgan-64": ("image", None, {"size": 64, "batch_size": 8, "g_width": 8, "d_width": 8}),
    "wavegan-paper": ("audio", "paper", {"batch_size": 4, "model_size": 2}),
    "text": ("text", None, {"batch_size": 8}),
}


def measure(case, precision: str, compiled: bool, device: str, warmup: int, steps: int, cache: Path) -> dict:
    name, (domain, preset, flags) = case
    reg = registry()
    dom = reg.domain(domain)
    cfg = resolve(dom, reg.losses, preset=preset,
                  flags={**flags, "device": device, "precision": precision, "compile": compiled})
    data = dom.load_data(cfg.data, cfg.options, cache_dir=cache)
    trainer = Trainer(domain=dom, config=cfg, data=data, loss=reg.loss(cfg.train.loss), out=Path(tempfile.mkdtemp()),
                      quiet=True)
    cuda = trainer.device.type == "cuda"
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.train_step()
    warm = time.perf_counter() - t0
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"case": name, "precision": precision, "compile": compiled, "batch_size": cfg.train.batch_size,
            "steps_per_s": steps / seconds, "warmup_s": warm,
            "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script works")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    cases = SMOKE if args.smoke else CASES
    device = "cpu" if args.smoke else "cuda"
    steps = args.steps or (2 if args.smoke else 30)
    warmup = args.warmup or (1 if args.smoke else 5)
    cache = Path(tempfile.mkdtemp())
    rows = []
    for name in args.cases.split(","):
        for precision in ("fp32", "bf16"):
            for compiled in (False, True):
                if args.smoke and compiled:  # inductor's CPU build takes minutes; the GPU run measures it
                    continue
                try:
                    rows.append(measure((name, cases[name]), precision, compiled, device, warmup, steps, cache))
                except Exception as exc:  # one failing case must not cost the others' numbers
                    rows.append({"case": name, "precision": precision, "compile": compiled,
                                 "error": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}"})
                print(json.dumps(rows[-1]), flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "cpu (smoke)"
    meta = {"device": gpu, "torch": torch.__version__, "python": platform.python_version(), "smoke": args.smoke}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"{meta['device']}, torch {meta['torch']}" + (" (smoke: tiny sizes, not a measurement)" if args.smoke else ""),
             "", "| case | batch | precision | compile | steps/s | peak memory (MiB) | warm-up (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | | {r['precision']} | {r['compile']} | error: {r['error']} | | |")
            continue
        mem = f"{r['peak_mem_mib']:.0f}" if r["peak_mem_mib"] is not None else "-"
        lines.append(f"| {r['case']} | {r['batch_size']} | {r['precision']} | {'on' if r['compile'] else 'off'} | "
                     f"{r['steps_per_s']:.2f} | {mem} | {r['warmup_s']:.1f} |")
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
