"""SeqGAN's oracle benchmark for genkit's text domain: random, MLE, and each adversarial estimator.

    python benchmarks/bench_text_oracle.py [--out runs/bench-text-oracle] [-- EXTRA GENKIT RUN FLAGS]

Runs ``genkit run text --data oracle --estimator gumbel`` and ``--estimator reinforce`` with the default
recipe (each pre-trains by MLE first, then trains adversarially), and scores an untrained generator for the
"random" row. The "MLE" row is the pre-trained model before the adversarial phase, measured by the run
itself (the ``mle_t1_*`` metrics of its summary), so MLE and GAN numbers come from the same run and seed.
Prints a Markdown table (NLL_oracle, NLL_gen, wall time) and the MLE temperature sweep.

SeqGAN's table (Yu et al. 2017; its own oracle): random 10.310, MLE 9.038, SeqGAN 8.736 (NLL_oracle).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run_genkit(out: Path, estimator: str, extra: list[str]) -> tuple[dict, float]:
    cmd = [sys.executable, "-m", "genkit", "run", "text", "--data", "oracle", "--estimator", estimator,
           "--out", str(out), "--json", "--quiet", *extra]
    print("$", " ".join(cmd[2:]), file=sys.stderr, flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"genkit failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout), wall


def random_row(eval_samples: int) -> dict:
    """An untrained generator of the default recipe, scored like the runs."""
    import torch

    from genkit.plugins import registry

    dom = registry().domain("text")
    opts = {**dom.option_defaults(), "eval_samples": eval_samples}
    cache = Path(os.environ.get("GENKIT_CACHE", Path.home() / ".cache" / "genkit"))
    data = dom.load_data("oracle", opts, cache_dir=cache)
    torch.manual_seed(0)
    G, _ = dom.build_models(opts, data)
    with torch.no_grad():
        return dom.metrics(G.eval(), data, opts, temperature=1.0, top_k=0, top_p=1.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-text-oracle"))
    ap.add_argument("--estimators", default="gumbel,reinforce")
    ap.add_argument("extra", nargs="*", help="extra flags for genkit run text (after --)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    start = time.perf_counter()
    rnd = random_row(10_000)
    rows.append(("random (untrained GPT-2; time includes building the oracle data)", rnd["nll_oracle"], rnd["nll_gen"],
                 time.perf_counter() - start))
    oracle_floor = rnd["nll_oracle_data"]
    sweeps = {}
    for est in args.estimators.split(","):
        out = args.out / est
        if out.exists() and any(out.iterdir()):
            sys.exit(f"{out} is not empty; pass another --out")
        summary, wall = run_genkit(out, est, args.extra)
        m = summary["metrics"]
        pre = next(json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
                   if json.loads(line).get("phase") == "mle")
        if not any(r[0].startswith("MLE") for r in rows):
            rows.append((f"MLE ({summary_steps(out)['pretrain_steps']} steps; time includes the sweep)", m["mle_t1_nll_oracle"],
                         m["mle_t1_nll_gen"], pre["seconds"]))
        rows.append((f"MLE + {est} ({summary['steps']} adversarial steps)", m["nll_oracle"], m["nll_gen"], wall))
        sweeps[est] = {k: v for k, v in m.items() if k.startswith("mle_t")}
        (args.out / f"{est}-summary.json").write_text(json.dumps(summary, indent=2))

    lines = ["| model | NLL_oracle | NLL_gen | wall time |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {o:.3f} | {g:.3f} | {s / 60:.1f} min |" for name, o, g, s in rows]
    lines.append(f"| oracle's own samples (floor) | {oracle_floor:.3f} | | |")
    print("\n".join(lines))
    est = next(iter(sweeps))
    temps = sorted({float(k[len("mle_t"):].split("_")[0]) for k in sweeps[est]})
    print("\nMLE temperature sweep (the pre-trained model, before the adversarial phase):\n")
    print("| temperature | NLL_oracle | NLL_gen |\n|---:|---:|---:|")
    for t in temps:
        print(f"| {t:g} | {sweeps[est][f'mle_t{t:g}_nll_oracle']:.3f} | {sweeps[est][f'mle_t{t:g}_nll_gen']:.3f} |")


def summary_steps(run_dir: Path) -> dict:
    import tomllib

    return tomllib.loads((run_dir / "config.toml").read_text())["train"]


if __name__ == "__main__":
    main()
