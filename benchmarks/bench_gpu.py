"""Speed on an accelerator: steps/s and peak memory for each domain, fp32 vs bf16, torch.compile off vs on.

    bash benchmarks/gpu.sh                  # on a machine with an NVIDIA GPU (at most about 8 minutes)
    python benchmarks/bench_gpu.py --smoke  # anywhere: tiny sizes on the CPU, proves the script works

Cases (the issue's): DCGAN 64x64 at batch 256, WaveGAN's paper preset at batch 64, text at batch 64. Each case x
{fp32, bf16} x {eager, compile}, and DCGAN with --channels-last too: build genkit's Trainer, warm up (compilation
happens there), time --steps steps, read torch.cuda.max_memory_allocated. Each measurement runs in its own process
under a time limit (a slow compilation costs its own row, not the others'), eager rows first, and the whole script
keeps to --budget seconds: what does not fit is listed as not run. Writes OUT/gpu.json and OUT/gpu.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
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


def measure(case, precision: str, compiled: bool, channels_last: bool, device: str, warmup: int, steps: int,
            cache: Path) -> dict:
    name, (domain, preset, flags) = case
    reg = registry()
    dom = reg.domain(domain)
    cfg = resolve(dom, reg.losses, preset=preset,
                  flags={**flags, "device": device, "precision": precision, "compile": compiled,
                         "channels_last": channels_last})
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
    return {"case": name, "precision": precision, "compile": compiled, "channels_last": channels_last,
            "batch_size": cfg.train.batch_size,
            "steps_per_s": steps / seconds, "warmup_s": warm,
            "peak_mem_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None}


def plan(smoke: bool, names: list[str]) -> list[tuple[str, str, bool, bool]]:
    """(case, precision, compile, channels_last) in the order they run: every eager row before any compiled one."""
    rows = []
    for compiled in (False, True):
        if smoke and compiled:  # inductor's CPU build takes minutes; the GPU run measures it
            continue
        for name in names:
            for precision in ("fp32", "bf16"):
                rows.append((name, precision, compiled, False))
                if name == "dcgan-64" and not compiled:  # channels-last: eager only, to keep within the budget
                    rows.append((name, precision, compiled, True))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU: checks that the script works")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--budget", type=float, default=330, help="seconds for all rows together")
    ap.add_argument("--limit", type=float, default=120, help="seconds for one row (compilation included)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # CASE,PRECISION,COMPILE,CHANNELS_LAST: one row
    ap.add_argument("--cache", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    cases = SMOKE if args.smoke else CASES
    device = "cpu" if args.smoke else "cuda"
    steps = args.steps or (2 if args.smoke else 30)
    warmup = args.warmup or (1 if args.smoke else 5)
    if args.one:  # the child process: one measurement, one JSON line
        name, precision, compiled, cl = args.one.split(",")
        row = measure((name, cases[name]), precision, compiled == "1", cl == "1", device, warmup, steps, args.cache)
        print("ROW " + json.dumps(row), flush=True)
        return
    cache = Path(tempfile.mkdtemp())
    deadline = time.monotonic() + args.budget
    rows = []
    for name, precision, compiled, cl in plan(args.smoke, args.cases.split(",")):
        row = {"case": name, "precision": precision, "compile": compiled, "channels_last": cl}
        left = deadline - time.monotonic()
        if left < 10:
            rows.append({**row, "error": "not run: the time budget was spent"})
            continue
        cmd = [sys.executable, __file__, "--one", f"{name},{precision},{int(compiled)},{int(cl)}",
               "--cache", str(cache), "--steps", str(steps), "--warmup", str(warmup)] + (["--smoke"] if args.smoke else [])
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=min(args.limit, left),
                                  env={**os.environ, "PYTHONUNBUFFERED": "1"})
            lines = [ln for ln in done.stdout.splitlines() if ln.startswith("ROW ")]
            if lines:
                rows.append(json.loads(lines[-1][4:]))
            else:
                err = (done.stderr.strip().splitlines() or ["no output"])[-1]
                rows.append({**row, "error": err[:200]})
        except subprocess.TimeoutExpired:
            rows.append({**row, "error": f"over its {min(args.limit, left):.0f} s limit"})
        print(json.dumps(rows[-1]), flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.smoke else "cpu (smoke)"
    meta = {"device": gpu, "torch": torch.__version__, "python": platform.python_version(), "smoke": args.smoke}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [f"{meta['device']}, torch {meta['torch']}" + (" (smoke: tiny sizes, not a measurement)" if args.smoke else ""),
             "", "| case | batch | precision | compile | channels-last | steps/s | peak memory (MiB) | warm-up (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['case']} | | {r['precision']} | {'on' if r['compile'] else 'off'} | "
                         f"{'on' if r['channels_last'] else 'off'} | {r['error']} | | |")
            continue
        mem = f"{r['peak_mem_mib']:.0f}" if r["peak_mem_mib"] is not None else "-"
        lines.append(f"| {r['case']} | {r['batch_size']} | {r['precision']} | {'on' if r['compile'] else 'off'} | "
                     f"{'on' if r['channels_last'] else 'off'} | {r['steps_per_s']:.2f} | {mem} | {r['warmup_s']:.1f} |")
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
