"""The picture of docs/cross-modal.md: one row of generated digits under each condition (a phrase, or a WAV file).

Usage: python examples/cross_modal/figure.py RUN OUT.png CONDITION [CONDITION ...]
"""

from __future__ import annotations

import sys

import torch
from PIL import Image, ImageDraw

import genkit
from genkit.crossmodal import use_condition

PER_ROW, SCALE, LABEL_W = 8, 2, 190


def main(run_dir: str, out: str, conditions: list[str]) -> None:
    loaded = genkit.Run.open(run_dir).load()
    rows = []
    for value in conditions:
        use_condition(loaded.generator, loaded.data, value)
        images, _ = loaded.generate(PER_ROW, seed=0)
        rows.append(((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[:, 0])  # (8, 28, 28)
    side = rows[0].shape[-1] * SCALE
    sheet = Image.new("L", (LABEL_W + PER_ROW * (side + 2), len(rows) * (side + 2)), 255)
    draw = ImageDraw.Draw(sheet)
    for r, (value, row) in enumerate(zip(conditions, rows)):
        draw.text((4, r * (side + 2) + side // 2 - 6), value.rsplit("/", 1)[-1], fill=0)
        for c, img in enumerate(row):
            tile = Image.fromarray(img.numpy(), "L").resize((side, side), Image.NEAREST)
            sheet.paste(tile, (LABEL_W + c * (side + 2), r * (side + 2)))
    sheet.save(out)
    print(out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
