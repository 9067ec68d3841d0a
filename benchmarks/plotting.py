"""One small line plot for the benchmarks (Pillow only, so the benchmarks need no matplotlib)."""

from __future__ import annotations

import math
from pathlib import Path

COLOURS = [(200, 60, 40), (40, 90, 200), (40, 150, 60), (150, 80, 170)]


def line_plot(panels: dict[str, dict[str, list[tuple[float, float]]]], path: Path, xlabel: str, ylabel: str) -> Path:
    """``panels``: title -> series name -> [(x, y)]; y on a log scale, one panel per title side by side."""
    from PIL import Image, ImageDraw

    W, H, pad = 440, 320, 56
    img = Image.new("RGB", (W * max(len(panels), 1), H), "white")
    draw = ImageDraw.Draw(img)
    for i, (title, series) in enumerate(panels.items()):
        x0 = i * W
        pts_all = [(x, y) for pts in series.values() for x, y in pts if math.isfinite(y) and y > 0]
        if not pts_all:
            continue
        lo, hi = math.log10(min(y for _, y in pts_all)), math.log10(max(y for _, y in pts_all))
        lo, hi = (lo - 0.05, hi + 0.05) if hi > lo else (lo - 0.5, lo + 0.5)
        xmax = max(x for x, _ in pts_all) or 1.0

        def xy(x: float, y: float, x0: int = x0, xmax: float = xmax, lo: float = lo, hi: float = hi) -> tuple[float, float]:
            return (x0 + pad + (W - 2 * pad) * x / xmax, H - pad - (H - 2 * pad) * (math.log10(y) - lo) / (hi - lo))

        draw.rectangle([x0 + pad, pad, x0 + W - pad, H - pad], outline="black")
        draw.text((x0 + pad, 12), title, fill="black")
        draw.text((x0 + pad, 28), f"{ylabel} (log scale)", fill="black")
        draw.text((x0 + W // 2 - 30, H - 22), xlabel, fill="black")
        for frac in (0.0, 0.5, 1.0):
            draw.text((x0 + 4, H - pad - frac * (H - 2 * pad) - 6), f"{10 ** (lo + frac * (hi - lo)):.3g}", fill="black")
        for x in sorted({x for x, _ in pts_all}):
            draw.text((xy(x, 10 ** lo)[0] - 8, H - pad + 6), f"{x:g}", fill="black")
        for j, (name, pts) in enumerate(series.items()):
            colour = COLOURS[j % len(COLOURS)]
            line = [xy(x, y) for x, y in pts if math.isfinite(y) and y > 0]
            if len(line) > 1:
                draw.line(line, fill=colour, width=3)
            for px, py in line:
                draw.ellipse([px - 4, py - 4, px + 4, py + 4], fill=colour)
            draw.text((x0 + W - pad - 120, pad + 8 + 14 * j), name, fill=colour)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
