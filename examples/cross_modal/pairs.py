"""Your own pairs (--pairs FILE, docs/cross-modal.md): writes a manifest FOLDER/pairs.csv of image files (digits of
the MNIST subset shipped with genkit) and a phrase naming each one's digit, keyed by the digit, then trains the image
domain conditioned on the text domain's embedding of the rows' phrases.
Usage: python examples/cross_modal/pairs.py [FOLDER] [RUN_DIR] [PER_DIGIT] [STEPS]"""

import csv
import sys
from pathlib import Path

from common import experiment
from PIL import Image

from genkit_image.data import mnist5k

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PHRASES = ["{w}", "a handwritten {w}", "the digit {w}", "the number {d}"]


def write_manifest(folder: Path, per_digit: int) -> Path:
    x, y, _, _ = mnist5k()
    (folder / "images").mkdir(parents=True, exist_ok=True)
    manifest = folder / "pairs.csv"
    with manifest.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["image", "text", "key"])
        for d, word in enumerate(WORDS):
            for j, i in enumerate((y == d).nonzero().flatten()[:per_digit].tolist()):
                name = f"images/{d}-{j:04d}.png"
                Image.fromarray(x[i, 0].numpy()).save(folder / name)
                out.writerow([name, PHRASES[j % len(PHRASES)].format(w=word, d=d), word])
    return manifest


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/pairs-data")
    manifest = write_manifest(folder, int(sys.argv[3]) if len(sys.argv) > 3 else 200)
    steps = {"steps": int(sys.argv[4])} if len(sys.argv) > 4 else {}  # default: the image recipe's 7,500
    experiment("text -> image, --pairs", sys.argv[2] if len(sys.argv) > 2 else "runs/pairs2image",
               condition="text", condition_data="digits", pairs=str(manifest), **steps)
