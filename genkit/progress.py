"""The one progress-bar helper: tqdm on stderr with the ETA, off when stderr is not a terminal, under ``--quiet``
(or when asked)."""

from __future__ import annotations

import os
import sys


def progress_bar(total: int | None = None, desc: str = "", initial: int = 0, disable: bool | None = None):
    from tqdm.auto import tqdm

    from .verbosity import quiet

    if disable is None or disable is False:
        disable = not sys.stderr.isatty() or os.environ.get("GENKIT_PROGRESS", "1") == "0" or quiet()
    # tqdm's own format with a total: "desc: 40%|####      | 400/1000 [00:41<01:02, 9.71it/s, loss_d=...]" (<ETA)
    return tqdm(total=total, desc=desc, initial=initial, disable=disable, file=sys.stderr,
                dynamic_ncols=True, leave=False)
