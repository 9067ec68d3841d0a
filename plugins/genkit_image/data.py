"""Image data sources for the image domain. Every source becomes a uint8 tensor (N, C, H, W) plus labels.

- ``mnist5k`` (default, offline): 5,000 MNIST digits (500 per class) shipped inside genkit as package data,
  ``genkit_image/datasets/mnist5k.npz`` (MNIST by Yann LeCun and Corinna Cortes, CC BY-SA 3.0; see the
  README beside it).
- a folder: PNG/JPEG/BMP/WebP/GIF files found recursively; labels from first-level sub-folder names.
  Unreadable files are skipped with a warning naming each one.
- a ``.npz`` file: images under ``x``/``images``/``arr_0`` ((N,H,W), (N,H,W,C) or (N,C,H,W); uint8 or
  floats in [0, 1] or [-1, 1]); optional labels under ``y``/``labels``/``arr_1``.
- ``mnist``, ``fashion-mnist``, ``cifar10``: torchvision datasets, downloaded into the cache folder when
  online; a clear error when offline and not cached.
- single files (``read_image``): a ``genkit sample --condition`` image and the images a ``--pairs`` manifest lists.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from genkit import GenkitError, warn

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif"}
TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10"}
MNIST_CLASSES = [str(i) for i in range(10)]


def mnist5k() -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    resource = resources.files(__package__).joinpath("datasets", "mnist5k.npz")
    try:
        with resources.as_file(resource) as path, np.load(path, allow_pickle=False) as npz:
            images, labels = npz["images"], npz["labels"]
    except (OSError, KeyError, ValueError) as exc:
        raise GenkitError(f"{resource}: the shipped MNIST subset is missing or unreadable ({exc.__class__.__name__}); "
                          "reinstall genkit") from None
    x = torch.from_numpy(images.reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y, MNIST_CLASSES, "MNIST 5k subset (shipped with genkit)"


def _to_nchw_uint8(arr: np.ndarray, where: str) -> torch.Tensor:
    if arr.ndim == 3:
        arr = arr[:, None]
    elif arr.ndim == 4 and arr.shape[-1] in (1, 3, 4) and arr.shape[1] not in (1, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)
    elif arr.ndim != 4:
        raise GenkitError(f"{where}: images must have shape (N,H,W), (N,H,W,C) or (N,C,H,W), got {arr.shape}")
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= -1.0 - 1e-6 and hi <= 1.0 + 1e-6:
            arr = (arr + 1.0) / 2.0 if lo < 0 else arr
            arr = arr * 255.0
        elif lo < 0 or hi > 255:
            raise GenkitError(f"{where}: pixel values must be uint8, or floats in [0, 1] or [-1, 1] (got {lo}..{hi})")
        arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
    if arr.shape[1] == 4:
        arr = arr[:, :3]
    return torch.from_numpy(np.ascontiguousarray(arr))


def load_npz(path: Path):
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise GenkitError(f"{path}: not a readable .npz file ({exc.__class__.__name__})") from None
    keys = list(npz.keys())
    xkey = next((k for k in ("x", "images", "x_train", "arr_0") if k in keys), None)
    if xkey is None:
        raise GenkitError(f"{path}: no image array (expected a key x, images, x_train or arr_0; found {keys})")
    x = _to_nchw_uint8(npz[xkey], str(path))
    ykey = next((k for k in ("y", "labels", "y_train", "arr_1") if k in keys), None)
    y, names = None, []
    if ykey is not None:
        labels = npz[ykey].reshape(-1)
        if len(labels) != len(x):
            raise GenkitError(f"{path}: {len(x)} images but {len(labels)} labels")
        uniq = sorted(set(labels.tolist()))
        index = {v: i for i, v in enumerate(uniq)}
        y = torch.tensor([index[v] for v in labels.tolist()], dtype=torch.int64)
        names = [str(v) for v in uniq]
    return x, y, names, f"{path} ({len(x)} images)"


def load_folder(root: Path, size: int, channels: int):
    """Every readable image under ``root``, ``size`` x ``size`` with ``channels``, labelled by sub-folder when every file
    is in one. Decoded once: later runs and evaluations read it from the decoded-data cache (genkit.datacache)."""
    from genkit.datacache import cached

    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise GenkitError(f"{root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))}, recursively)")
    x, y, names, source = cached("image-folder", root, files, {"size": size, "channels": channels},
                                 lambda: _decode_folder(root, files, size, channels))
    return x, y, list(names), source


def _decode_folder(root: Path, files: list[Path], size: int, channels: int):
    from PIL import Image, UnidentifiedImageError

    labelled = all(len(p.relative_to(root).parts) > 1 for p in files)
    names = sorted({p.relative_to(root).parts[0] for p in files}) if labelled else []
    index = {n: i for i, n in enumerate(names)}
    mode = "L" if channels == 1 else "RGB"
    images, labels, bad = [], [], 0
    for p in files:
        try:
            with Image.open(p) as im:
                if im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: keep the high byte, not saturate
                    im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
                im = im.convert(mode)
                if im.size != (size, size):
                    im = _center_crop_resize(im, size)
                images.append(np.asarray(im, dtype=np.uint8))
        except Image.DecompressionBombError:
            warn(f"{p}: skipped, too many pixels to decode safely (PIL's decompression-bomb limit)")
            bad += 1
            continue
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            warn(f"{p}: skipped, not a readable image ({exc.__class__.__name__})")
            bad += 1
            continue
        if labelled:
            labels.append(index[p.relative_to(root).parts[0]])
    if bad:
        warn(f"{root}: skipped {bad} unreadable file(s) of {len(files)}")
    if not images:
        raise GenkitError(f"{root}: none of the {len(files)} image files could be read")
    x = _to_nchw_uint8(np.stack(images), str(root))
    y = torch.tensor(labels, dtype=torch.int64) if labelled else None
    if labelled and len(set(labels)) < len(names):  # a class folder of unreadable files only: not a class
        empty = [n for i, n in enumerate(names) if i not in set(labels)]
        warn(f"{root}: no readable image in sub-folder(s) {', '.join(empty)}; left out of the classes")
        kept = [n for n in names if n not in empty]
        y = torch.tensor([kept.index(names[i]) for i in labels], dtype=torch.int64)
        names = kept
    how = f", {len(names)} classes from sub-folders" if labelled else ""  # as the audio folder's first line says
    return x, y, names, f"{root} ({len(images)} images{how})"


def read_image(path: Path, where: str) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """One image file as a uint8 (1, C, H, W) tensor at its own size, C = 1 for grayscale files and 3 otherwise,
    and its (channels, height, width) as stored. A missing or unreadable file is one ``GenkitError`` line that
    starts with ``where`` (the file as the user named it)."""
    from PIL import Image, UnidentifiedImageError

    try:
        found = path.is_file()
    except (OSError, ValueError):
        found = False
    if not found:
        raise GenkitError(f"{where}: no such image file")
    try:
        with Image.open(path) as im:
            if im.mode in ("I", "I;16", "I;16B", "I;16L"):  # 16-bit grayscale: the high byte, as load_folder
                im = Image.fromarray((np.asarray(im, dtype=np.uint32) >> 8).clip(0, 255).astype(np.uint8), "L")
            gray = im.mode in ("1", "L", "LA", "F")
            arr = np.array(im.convert("L" if gray else "RGB"), dtype=np.uint8)  # a writable copy
    except Image.DecompressionBombError:
        raise GenkitError(f"{where}: too many pixels to decode safely (PIL's decompression-bomb limit)") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise GenkitError(f"{where}: not a readable image ({exc.__class__.__name__})") from None
    x = _to_nchw_uint8(arr[None] if arr.ndim == 2 else arr[None].transpose(0, 3, 1, 2), where)
    return x, (int(x.shape[1]), int(x.shape[2]), int(x.shape[3]))


def _center_crop_resize(im, size: int):
    from PIL import Image

    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS)


def load_torchvision(name: str, cache_dir: Path):
    import torchvision

    cls = getattr(torchvision.datasets, TORCHVISION[name])
    root = cache_dir / "torchvision"
    try:
        ds = cls(root=str(root), train=True, download=False)
    except RuntimeError:
        try:
            root.mkdir(parents=True, exist_ok=True)
            ds = cls(root=str(root), train=True, download=True)
        except Exception as exc:
            raise GenkitError(f"could not download {name} into {root} (offline? {exc.__class__.__name__}); "
                              "place it there, or use --data FOLDER or FILE.npz") from None
    data = ds.data
    x = data if torch.is_tensor(data) else torch.from_numpy(np.asarray(data))
    x = _to_nchw_uint8(x.numpy(), name)
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return x, y, [str(c) for c in ds.classes], f"{TORCHVISION[name]} (torchvision, {len(x)} images)"


def fit(x: torch.Tensor, size: int, channels: int) -> torch.Tensor:
    """Convert a uint8 (N, C, H, W) batch to ``channels`` and ``size`` x ``size``."""
    if x.shape[1] != channels:
        if channels == 1:  # ITU-R 601 luma, as PIL's "L"
            w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            x = x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[-1] != size or x.shape[-2] != size:
        side = min(x.shape[-2:])
        top, left = (x.shape[-2] - side) // 2, (x.shape[-1] - side) // 2
        x = x[..., top:top + side, left:left + side]
        out = []
        for chunk in x.split(1024):
            out.append(F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False).round().clamp(0, 255).to(torch.uint8))
        x = torch.cat(out)
    return x
