"""Quality per CPU-minute: refnet FD and IS after 1, 2, 5 and 10 minutes of training, genkit's default recipe
against a plain loop with the seed document's settings, for the image and the audio domain.

"Plain" is the papers' models and the seed document's training as written: DCGAN (widths 64, batch 128) or
WaveGAN (d = 64, batch 64), Adam 2e-4 with beta1 0.5, the non-saturating loss, one D step per G step, no EMA,
unconditional. Both run through ``genkit run`` with a step count too large to finish and are stopped with
SIGINT after the last mark (genkit saves a checkpoint on the way out). Checkpoints are kept every ``--every``
steps; afterwards, for each mark, the last checkpoint saved before it (by the training clock in
metrics.jsonl, which leaves out data loading and evaluation) is scored with ``genkit eval``.

    python benchmarks/quality_curve.py                      # image and audio, marks 1 2 5 10 (about 45 minutes)
    python benchmarks/quality_curve.py --domains image --minutes 0.5 1
    python benchmarks/quality_curve.py --out docs/images/quality-curve.png --json results.json
    python benchmarks/quality_curve.py --domains audio --previous docs/images/quality-curve.json \
        --json docs/images/quality-curve.json --out docs/images/quality-curve.png   # audio again, image rows kept
    python benchmarks/quality_curve.py --domains audio --variants default --previous ...   # one arm again

Prints one table (markdown) and writes one PNG plot (FD against minutes, log scale). Run it on an idle
machine: the clock is the measurement. It is a benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from plotting import line_plot  # noqa: E402

GENKIT = [sys.executable, "-m", "genkit"]

PLAIN = {
    "image": ["--preset", "paper", "--no-conditional", "--loss", "ns", "--lr-g", "2e-4", "--lr-d", "2e-4",
              "--beta1", "0.5", "--beta2", "0.999", "--ema", "0"],
    "audio": ["--preset", "paper", "--no-conditional", "--loss", "ns", "--n-critic", "1", "--lr-g", "2e-4",
              "--lr-d", "2e-4", "--beta1", "0.5", "--beta2", "0.999", "--ema", "0"],
}
EVERY = {("image", "default"): 250, ("image", "plain"): 50, ("audio", "default"): 100, ("audio", "plain"): 5}


def train_for(domain: str, variant: str, data: str | None, seconds: float, every: int, out: Path) -> None:
    """``genkit run`` until the training clock passes ``seconds``, keeping a checkpoint every ``every`` steps."""
    cmd = [*GENKIT, "run", domain, "--out", str(out), "--steps", "10000000", "--checkpoint-every", str(every),
           "--keep-checkpoints", "0", "--sample-every", "0", "--eval-every", "0", "--log-every", str(every), "--quiet"]
    if data:
        cmd += ["--data", data]
    if variant == "plain":
        cmd += PLAIN[domain]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    while proc.poll() is None:
        time.sleep(2)
        if _clock(metrics) >= seconds:
            proc.send_signal(signal.SIGINT)  # genkit checkpoints and exits
            break
    _, err = proc.communicate()
    if proc.returncode not in (0, 130):
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")


def _records(metrics: Path) -> list[dict]:
    if not metrics.is_file():
        return []
    out = []
    for line in metrics.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # the line being written
            pass
    return out


def _clock(metrics: Path) -> float:
    seconds = [r["seconds"] for r in _records(metrics) if "seconds" in r]
    return max(seconds, default=0.0)


def score_marks(run: Path, marks: list[float]) -> list[dict]:
    """For each mark (minutes), ``genkit eval`` of the last checkpoint saved by then."""
    clock = {r["step"]: r["seconds"] for r in _records(run / "metrics.jsonl") if "seconds" in r}
    ckpts = sorted((run / "checkpoints").glob("step-*"))
    rows = []
    for mark in marks:
        done = [c for c in ckpts if clock.get(int(c.name.split("-")[1]), float("inf")) <= mark * 60 + 1]
        if not done:
            rows.append({"minutes": mark, "step": 0})
            continue
        ckpt = done[-1]
        result = subprocess.run([*GENKIT, "eval", str(ckpt), "--json"], capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"genkit eval {ckpt} failed:\n{result.stderr}")
        m = json.loads(result.stdout)["metrics"]
        rows.append({"minutes": mark, "step": int(ckpt.name.split("-")[1]), "fd": m["refnet_fd"], "is": m["refnet_is"],
                     "is_real": m["refnet_is_real"], "classes": m["refnet_classes"]})
    return rows


def plot(results: dict, path: Path) -> None:
    """FD against training minutes, one panel per domain."""
    panels: dict = {}
    for (domain, variant), rows in results.items():
        panels.setdefault(f"{domain}: refnet FD vs training minutes", {})[variant] = [
            (r["minutes"], r["fd"]) for r in rows if "fd" in r]
    line_plot(panels, path, "training minutes", "refnet FD")


def _previous(path: Path, running: list[tuple[str, str]]) -> dict:
    """The rows of an earlier ``--json`` for the (domain, variant) arms not in ``running``, keyed as ``results``."""
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--previous {path}: not a quality-curve JSON file ({exc.__class__.__name__})") from None
    kept = {}
    for key, value in rows.items():
        domain, _, variant = key.partition("/")
        if (domain, variant) not in running:
            kept[(domain, variant)] = value
    return kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domains", nargs="+", default=["image", "audio"])
    ap.add_argument("--variants", nargs="+", default=["default", "plain"], choices=["default", "plain"])
    ap.add_argument("--minutes", nargs="+", type=float, default=[1, 2, 5, 10])
    ap.add_argument("--audio-data", default=None, help="--data for the audio runs (default: the domain's own)")
    ap.add_argument("--out", type=Path, default=Path("quality-curve.png"), help="the plot (PNG)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run directories here")
    ap.add_argument("--previous", type=Path, default=None,
                    help="an earlier --json: its rows of the arms not run now join the table and the plot")
    args = ap.parse_args()
    running = [(d, v) for d in args.domains for v in args.variants]
    earlier = _previous(args.previous, running) if args.previous else {}
    os.environ.setdefault("GENKIT_CACHE", str(Path(tempfile.gettempdir()) / "genkit-bench-cache"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="quality-curve-"))
    results: dict = dict(earlier)
    for domain in args.domains:
        for variant in args.variants:
            run = work / f"{domain}-{variant}"
            data = args.audio_data if domain == "audio" else None
            print(f"{domain} {variant}: training {max(args.minutes):g} min -> {run}", file=sys.stderr)
            train_for(domain, variant, data, max(args.minutes) * 60, EVERY[(domain, variant)], run)
            results[(domain, variant)] = score_marks(run, args.minutes)
    variants = ("default", "plain")  # the same colour for the same arm in every panel
    domains = list(dict.fromkeys(d for d, _ in results))
    results = {k: results[k] for k in sorted(results, key=lambda k: (domains.index(k[0]), variants.index(k[1])))}
    print("| domain | recipe | " + " | ".join(f"{m:g} min: FD / IS (step)" for m in args.minutes) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in args.minutes) + " |")
    for (domain, variant), rows in results.items():
        cells = [f"{r['fd']:.1f} / {r['is']:.2f} ({r['step']})" if "fd" in r else "no checkpoint yet" for r in rows]
        print(f"| {domain} | {variant} | " + " | ".join(cells) + " |")
    plot(results, args.out)
    print(f"plot: {args.out}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps({f"{d}/{v}": r for (d, v), r in results.items()}, indent=2))


if __name__ == "__main__":
    main()
