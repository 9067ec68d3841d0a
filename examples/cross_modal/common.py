"""Shared by the cross-modal experiments: train, then print the row of docs/cross-modal.md's table."""

from __future__ import annotations

import json
import sys
import time

import genkit


def experiment(name: str, out: str, target: str = "image", **settings) -> None:
    start = time.time()
    run = genkit.train(target, out=out, quiet=False, **settings)
    metrics = run.read_summary()["metrics"]
    row = {"experiment": name, "cond_accuracy": metrics.get("refnet_cond_accuracy"),
           "refnet_fd": metrics.get("refnet_fd"), "refnet_is": metrics.get("refnet_is"),
           "refnet_classes": metrics.get("refnet_classes"), "wall_s": round(time.time() - start), "run": out}
    json.dump(row, sys.stdout)
    print()
