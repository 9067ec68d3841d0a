"""Atomic writes: a file or folder is written under a temporary name, flushed to the disk (fsync), and renamed into
place, so a crash, a power cut or a full disk never leaves a half-written file where a reader (or ``--resume``)
would trust it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file, or a folder's entries) to the disk; a no-op where the system cannot."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file():
                _fsync(child)
    _fsync(path)


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` to create a file or folder at a temporary path next to ``path``, then move it to ``path``
    (replacing what was there). The temporary path is removed first if an earlier attempt left it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    _remove(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(tmp)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_tree(tmp)  # the data is on the disk before the name points at it
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)  # os.replace cannot replace a non-empty folder
    os.replace(tmp, path)
    _fsync(path.parent)  # and the rename itself
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
