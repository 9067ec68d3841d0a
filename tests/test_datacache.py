"""The decoded-data cache (genkit.datacache): a folder is decoded once, re-decoded when a file changes, and a
cached folder warns about the files it skipped exactly as the first decoding did."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

import genkit_image.data as imdata


def _folder(root, n=6):
    for i in range(n):
        (root / str(i % 2)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((28, 28), 40 * i, dtype=np.uint8)).save(root / str(i % 2) / f"{i}.png")
    (root / "0" / "broken.png").write_bytes(b"not a png")
    return root


def test_a_folder_is_decoded_once_and_again_when_a_file_changes(tmp_path, cache, monkeypatch, capsys):
    root = _folder(tmp_path / "imgs")
    decoded = []
    real = imdata._decode_folder
    monkeypatch.setattr(imdata, "_decode_folder", lambda *a: decoded.append(1) or real(*a))
    x1, y1, names1, _ = imdata.load_folder(root, 28, 1)
    first = capsys.readouterr().err
    x2, y2, names2, _ = imdata.load_folder(root, 28, 1)
    second = capsys.readouterr().err
    assert len(decoded) == 1  # the second load came from the cache
    assert (x1 == x2).all() and (y1 == y2).all() and names1 == names2 == ["0", "1"]
    assert "broken.png: skipped" in first and second == first  # the cached load repeats the skipped file's warning
    imdata.load_folder(root, 32, 1)  # other parameters: another entry
    assert len(decoded) == 2
    path = root / "1" / "1.png"
    Image.fromarray(np.full((28, 28), 255, dtype=np.uint8)).save(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    x3, *_ = imdata.load_folder(root, 28, 1)
    assert len(decoded) == 3 and not (x3 == x1).all()  # the changed file was decoded again
    (root / "1" / "extra.png").write_bytes((root / "1" / "1.png").read_bytes())
    x4, *_ = imdata.load_folder(root, 28, 1)
    assert len(decoded) == 4 and len(x4) == len(x3) + 1


def test_a_damaged_entry_is_decoded_again_and_the_cache_can_be_turned_off(tmp_path, cache, monkeypatch):
    root = _folder(tmp_path / "imgs")
    x1, *_ = imdata.load_folder(root, 28, 1)
    for entry in (cache / "decoded").rglob("*.pt"):
        entry.write_bytes(b"garbage")
    x2, *_ = imdata.load_folder(root, 28, 1)
    assert (x1 == x2).all()
    monkeypatch.setenv("GENKIT_DATA_CACHE", "0")
    decoded = []
    real = imdata._decode_folder
    monkeypatch.setattr(imdata, "_decode_folder", lambda *a: decoded.append(1) or real(*a))
    imdata.load_folder(root, 28, 1)
    imdata.load_folder(root, 28, 1)
    assert len(decoded) == 2
