"""A cache of decoded data sets: a folder of images or audio is decoded once, not on every run and every evaluation.

    from genkit.datacache import cached

    x, y = cached("image-folder", root, files, {"size": 64, "channels": 3}, lambda: decode(files))

The entry is keyed by the loader's name and parameters and by every file's path, size and modification time, so
adding, removing, replacing or touching a file decodes the folder again. Entries are ``torch.save`` files of
tensors, numbers, strings, lists and dicts, read back with ``weights_only=True`` (nothing is unpickled), written
atomically under ``GENKIT_CACHE/decoded/``. The warnings the decoding gave (a skipped file...) are kept with the
entry and repeated on every load, so a cached folder says what the uncached one said. ``GENKIT_DATA_CACHE=0`` turns
the cache off.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

FORMAT = 1


def _key(kind: str, root: Path, files: Sequence[Path], params: dict[str, Any]) -> str:
    h = hashlib.sha256(json.dumps({"kind": kind, "format": FORMAT, "root": str(Path(root).resolve()),
                                   "params": params}, sort_keys=True, default=str).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cached(kind: str, root: Path, files: Sequence[Path], params: dict[str, Any], build: Callable[[], Any]) -> Any:
    """``build()``'s result for these ``files`` and ``params``, from the cache when it holds it (see the module)."""
    import torch

    from . import errors
    from .files import atomic_write
    from .run import cache_dir

    if os.environ.get("GENKIT_DATA_CACHE", "1") == "0":
        return build()
    path = cache_dir() / "decoded" / kind / f"{_key(kind, root, files, params)}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            for message in entry["warnings"]:
                errors.warn(message)
            return entry["value"]
        except Exception:  # a damaged entry (or a torch that cannot read it): decode again
            pass
    with errors.recording_warnings() as said:
        value = build()
    try:
        atomic_write(path, lambda tmp: torch.save({"value": value, "warnings": said}, tmp))
    except (OSError, RuntimeError) as exc:  # a read-only or full cache only costs the speed-up
        errors.warn(f"{path.parent}: could not cache the decoded data ({exc.__class__.__name__}); it is decoded "
                    "on each run")
    return value
