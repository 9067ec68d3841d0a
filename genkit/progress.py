"""The one progress-bar helper: tqdm on stderr, off when stderr is not a terminal (or when asked)."""

from __future__ import annotations

import os
import sys


def progress_bar(total: int | None = None, desc: str = "", initial: int = 0, disable: bool | None = None):
    from tqdm.auto import tqdm

    if disable is None or disable is False:
        disable = not sys.stderr.isatty() or os.environ.get("GENKIT_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=desc, initial=initial, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False)
