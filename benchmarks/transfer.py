"""Transfer learning (the seed document's advice 10.3): a small target set trained from scratch vs initialised
from a run on other data (``--init-from``), at equal steps, refnet FD over steps.

Image (default): the source run is the default recipe on MNIST 5k's digits 0-4 (2,500 images); the target set
is 200 images of the digits 5-9 (40 each), which the source never saw. Audio (``--domain audio --data FSDD``):
the source is every speaker but one, the target that speaker's clips. Both arms on the target use the default
recipe, conditional (same class count, so every shape matches), and are scored every ``--eval-every`` steps
by the target's own refnet (the same classifier for both arms).

    python benchmarks/transfer.py                                   # image, about 6 minutes
    python benchmarks/transfer.py --domain audio --data ../shared/data/fsdd-3spk --speaker lucas --steps 1000
    python benchmarks/transfer.py --out docs/images/transfer.png --keep /tmp/transfer

Prints a markdown table (per step and arm: FD, then IS as a share of the real clips' and the classes covered, where
the domain reports them) and writes a PNG plot of FD. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from plotting import line_plot  # noqa: E402

GENKIT = [sys.executable, "-m", "genkit"]


def genkit(*args: str) -> None:
    result = subprocess.run([*GENKIT, *args], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"genkit {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")


def image_sets(work: Path, target_size: int) -> tuple[str, str]:
    """Source npz (digits 0-4) and target npz (``target_size`` images of digits 5-9, equal per class)."""
    from importlib import resources

    import numpy as np

    with resources.as_file(resources.files("genkit_image").joinpath("datasets", "mnist5k.npz")) as p, np.load(p) as npz:
        images, labels = npz["images"], npz["labels"]
    src = labels < 5
    per_class = target_size // 5
    tgt = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(5, 10)])
    np.savez(work / "source.npz", images=images[src], labels=labels[src])
    np.savez(work / "target.npz", images=images[tgt], labels=labels[tgt] - 5)
    return str(work / "source.npz"), str(work / "target.npz")


def audio_sets(work: Path, data: Path, speaker: str) -> tuple[str, str]:
    """Two folders of symbolic links: every FSDD-named clip ``{digit}_{speaker}_{take}.wav`` not by ``speaker``,
    and those by ``speaker``."""
    for name in ("source", "target"):
        (work / name).mkdir(parents=True, exist_ok=True)
    for wav in sorted(data.glob("*.wav")):
        side = "target" if wav.name.split("_")[1] == speaker else "source"
        link = work / side / wav.name
        if not link.exists():
            link.symlink_to(wav.resolve())
    if not any((work / "target").iterdir()):
        raise SystemExit(f"{data}: no clips by speaker {speaker!r}")
    return str(work / "source"), str(work / "target")


def evaluations(run: Path) -> dict[int, dict]:
    """The run's evaluations by step (metrics.jsonl rows that carry refnet_fd)."""
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "refnet_fd" in r}


def cell(row: dict | None) -> str:
    """FD, then IS as a share of the real clips' and the classes covered, where the run reports them."""
    if row is None:
        return "-"
    text = f"{row['refnet_fd']:.1f}"
    if row.get("refnet_is_real"):
        text += f" / {row['refnet_is'] / row['refnet_is_real']:.2f} / {row.get('refnet_classes', float('nan')):.0f}"
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--domain", choices=["image", "audio"], default="image")
    ap.add_argument("--data", type=Path, help="audio: a folder of FSDD-named clips")
    ap.add_argument("--speaker", default="lucas", help="audio: the target speaker")
    ap.add_argument("--target-size", type=int, default=200, help="image: target images (digits 5-9)")
    ap.add_argument("--steps", type=int, default=2000, help="training steps on the target, both arms")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--source-steps", type=int, default=None, help="source run steps (default: the recipe's)")
    ap.add_argument("--out", type=Path, default=Path("transfer.png"))
    ap.add_argument("--keep", type=Path, default=None, help="keep the data and runs here")
    args = ap.parse_args()
    os.environ.setdefault("GENKIT_CACHE", str(Path(tempfile.gettempdir()) / "genkit-bench-cache"))
    work = args.keep or Path(tempfile.mkdtemp(prefix="transfer-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.domain == "image":
        source, target = image_sets(work, args.target_size)
    else:
        if args.data is None:
            raise SystemExit("--domain audio needs --data FOLDER of FSDD-named clips")
        source, target = audio_sets(work, args.data, args.speaker)
    src_run = work / "source-run"
    if not (src_run / "summary.json").is_file():
        print(f"source run on {source} -> {src_run}", file=sys.stderr)
        extra = ["--steps", str(args.source_steps)] if args.source_steps else []
        genkit("run", args.domain, "--data", source, "--out", str(src_run), "--quiet", "--eval-every", "0", *extra)
    common = ["--data", target, "--steps", str(args.steps), "--eval-every", str(args.eval_every),
              "--checkpoint-every", str(args.steps), "--sample-every", str(args.steps), "--quiet"]
    curves = {}
    for arm, extra in (("from scratch", []), ("--init-from source", ["--init-from", str(src_run)])):
        run = work / ("scratch" if not extra else "init-from")
        print(f"{arm} on {target} -> {run}", file=sys.stderr)
        genkit("run", args.domain, "--out", str(run), *common, *extra)
        curves[arm] = evaluations(run)
    steps = sorted({s for c in curves.values() for s in c})
    print("| step | " + " | ".join(f"FD / IS x real / classes, {arm}" for arm in curves) + " |")
    print("| --- | " + " | ".join("---" for _ in curves) + " |")
    for s in steps:
        print(f"| {s} | " + " | ".join(cell(c.get(s)) for c in curves.values()) + " |")
    line_plot({f"{args.domain}: refnet FD on the target set":
               {a: [(float(s), r["refnet_fd"]) for s, r in sorted(c.items())] for a, c in curves.items()}},
              args.out, "training steps on the target", "refnet FD")
    print(f"plot: {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
