"""Train one domain with several adversarial losses and print the domain's metrics side by side.

Works for any domain, built-in or third-party, because it only drives the CLI and reads summary.json:

    python examples/loss_sweep.py image --steps 1000 --losses ns,hinge,lsgan,wgan-gp
    python examples/loss_sweep.py audio --steps 200 --losses wgan-gp,hinge -- --model-size 16
    python examples/loss_sweep.py ring --losses ns,minimax,rsgan       (after pip install -e examples/genkit-ring)

Arguments after `--` are passed to every `genkit run`. Runs go to sweeps/DOMAIN-LOSS-SEED/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("domain")
    ap.add_argument("--losses", default="ns,hinge,lsgan,wgan-gp")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", type=Path, default=Path("sweeps"))
    ap.add_argument("extra", nargs="*", help="options passed to genkit run (after --)")
    args = ap.parse_args()
    rows = []
    for loss in args.losses.split(","):
        for seed in args.seeds.split(","):
            run_dir = args.out / f"{args.domain}-{loss}-{seed}"
            cmd = [sys.executable, "-m", "genkit", "run", args.domain, "--loss", loss, "--steps", str(args.steps),
                   "--seed", seed, "--out", str(run_dir), "--json", "--quiet", *args.extra]
            print("+", " ".join(cmd), file=sys.stderr)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{loss} seed {seed}: failed: {done.stderr.strip()}", file=sys.stderr)
                continue
            summary = json.loads(done.stdout)
            rows.append({"loss": loss, "seed": seed, "seconds": summary["seconds"], **summary["metrics"]})
    if not rows:
        sys.exit("no run succeeded")
    keys = list(dict.fromkeys(k for r in rows for k in r))
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.4g}" if isinstance(r.get(k), float) else str(r.get(k, "")) for k in keys) + " |")


if __name__ == "__main__":
    main()
