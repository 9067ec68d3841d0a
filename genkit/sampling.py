"""Drawing samples from a trained generator: one loop for snapshots' callers, ``genkit sample``, ``Run.sample``
and the domains' evaluations."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

EVAL_SEED = 12345  # evaluations draw their own latents (never the training's stream), the same at every evaluation
STANDING_SEED = 271828  # the latents of standing statistics (their own stream, the same at every call)


@torch.no_grad()
def standing_statistics(domain: Any, generator: torch.nn.Module, options: Any, data: Any, batches: int,
                        batch_size: int, *, device: torch.device) -> torch.nn.Module:
    """A copy of ``generator`` (eval mode) whose batch-norm layers hold *standing statistics* (Brock, Donahue &
    Simonyan, "Large Scale GAN Training for High Fidelity Natural Image Synthesis", ICLR 2019, section 3.1 and
    appendix): each layer's mean and variance averaged over ``batches`` batches of ``batch_size`` fresh latents
    (and snapshot conditions), every layer normalising its batch by the batch's own statistics as in training.

    The running averages that training keeps trail the weights that changed under them, so that a generator in
    eval mode is not the one the discriminator saw; these are the statistics of the weights as they are. Seeded
    (``STANDING_SEED``), so the result depends on the weights alone; the caller's random streams do not move.
    A generator without batch norm, or ``batches`` 0, is returned as it is.
    """
    from torch.nn.modules.batchnorm import _BatchNorm

    if batches <= 0 or not any(isinstance(m, _BatchNorm) and m.track_running_stats for m in generator.modules()):
        return generator
    copied = copy.deepcopy(generator).eval()  # dropout off, a cross-modal generator draws held-out pairs
    sums: dict[_BatchNorm, list[torch.Tensor]] = {}

    def batch_statistics(module: _BatchNorm, inputs: tuple[torch.Tensor, ...], _output: torch.Tensor) -> torch.Tensor:
        x = inputs[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=True)
        total = sums.setdefault(module, [torch.zeros_like(mean), torch.zeros_like(var)])
        total[0] += mean
        total[1] += var
        return F.batch_norm(x, None, None, module.weight, module.bias, True, 0.0, module.eps)  # training's output

    norms = [m for m in copied.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    hooks = [m.register_forward_hook(batch_statistics) for m in norms]
    rng = torch.Generator(device=device).manual_seed(STANDING_SEED)
    cond_all = domain.snapshot_conditions(batch_size, data)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(STANDING_SEED)
            for _ in range(batches):
                z = domain.sample_latent(batch_size, options, rng=rng, device=device)
                copied(z, cond_all.to(device) if cond_all is not None else None)
    finally:
        for hook in hooks:
            hook.remove()
    for m in filter(sums.__contains__, norms):  # a layer the forward pass never reached keeps its averages
        mean, var = sums[m]
        assert m.running_mean is not None and m.running_var is not None  # track_running_stats
        m.running_mean.copy_(mean / batches)
        m.running_var.copy_(var / batches)
    return copied


@torch.no_grad()
def generate(domain: Any, generator: torch.nn.Module, n: int, options: Any, data: Any, *, device: torch.device,
             seed: int = 0, chunk: int = 500) -> tuple[Any, torch.Tensor | None]:
    """``n`` samples of ``domain.generate`` and their conditions, on the CPU, reproducible from ``seed``.

    Latents come from a generator seeded with ``seed`` on ``device``; conditions from
    ``domain.snapshot_conditions`` (class ``i % num_classes`` by default); torch's global RNG (dropout, a
    sampler's own draws) is seeded with ``seed`` inside ``fork_rng``, so the caller's random streams do not move.
    Work is done ``chunk`` samples at a time.
    """
    rng = torch.Generator(device=device).manual_seed(seed)
    cond_all = domain.snapshot_conditions(n, data)
    pairs = []
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            z = domain.sample_latent(m, options, rng=rng, device=device)
            cond = cond_all[start:start + m].to(device) if cond_all is not None else None
            out = domain.generate(generator, z, cond, options)
            pairs.append((out.cpu() if torch.is_tensor(out) else out, cond.cpu() if cond is not None else None))
    return _stack(pairs)


# -- samples by seed and latent walks (genkit sample --seeds / --interpolate) -----------------------------------
MAX_SEEDS = 100_000
SILENCE_SECONDS = 0.25  # between the clips of an audio walk


def parse_seeds(spec: str) -> list[int]:
    """``"0-15"``, ``"3"``, ``"1,5,9"``, ``"0-3,10"`` -> the seeds in the order given; ``GenkitError`` (exit 2) for
    anything else (a seed is an integer >= 0)."""
    from .errors import GenkitError

    def bad(why: str) -> GenkitError:
        return GenkitError(f"--seeds {spec!r}: {why} (examples: 0-15, 3, 1,5,9, 0-3,10)", exit_code=2)

    seeds: list[int] = []
    for part in str(spec).replace(" ", "").split(","):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise bad(f"{part!r} is not a seed (an integer >= 0) or a range A-B" if part else "an empty item")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a:
            raise bad(f"the range {part} runs backwards")
        if max(a, b) >= 2**63:
            raise bad(f"{max(a, b)} is too large for a seed")
        if len(seeds) + b - a + 1 > MAX_SEEDS:
            raise bad(f"more than {MAX_SEEDS:,} seeds")
        seeds.extend(range(a, b + 1))
    return seeds


def seed_latent(domain: Any, options: Any, seed: int, device: torch.device) -> torch.Tensor:
    """The latent of one sample of ``seed``: ``domain.sample_latent(1, ...)`` from a generator seeded with ``seed``."""
    return domain.sample_latent(1, options, rng=torch.Generator(device=device).manual_seed(seed), device=device)


def seed_condition(domain: Any, data: Any, seed: int) -> torch.Tensor | None:
    """The condition of ``seed``'s sample: row ``seed`` of ``domain.snapshot_conditions`` (class ``seed %
    num_classes`` by default), or None for an unconditional run."""
    conds = domain.snapshot_conditions(seed + 1, data)
    return None if conds is None else conds[seed:seed + 1]


@torch.no_grad()
def _one(domain: Any, generator: torch.nn.Module, z: torch.Tensor, cond: torch.Tensor | None, options: Any,
         device: torch.device, seed: int) -> tuple[Any, torch.Tensor | None]:
    """One sample from latent ``z`` (batch of one), torch's global RNG seeded with ``seed`` inside ``fork_rng``."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        out = domain.generate(generator, z, cond.to(device) if cond is not None else None, options)
    return (out.cpu() if torch.is_tensor(out) else out), cond


def _stack(pairs: list[tuple[Any, torch.Tensor | None]]) -> tuple[Any, torch.Tensor | None]:
    outs = [o for o, _ in pairs]
    samples = torch.cat(outs) if all(torch.is_tensor(o) for o in outs) else [x for o in outs for x in o]
    conds = [c for _, c in pairs if c is not None]
    return samples, (torch.cat(conds) if conds else None)


def generate_seeds(domain: Any, generator: torch.nn.Module, seeds: list[int], options: Any, data: Any, *,
                   device: torch.device) -> tuple[Any, torch.Tensor | None]:
    """One sample per seed, each drawn on its own (``seed_latent``, ``seed_condition``, torch's RNG seeded with
    the seed), so the sample of a seed is the same whichever other seeds are drawn with it."""
    return _stack([_one(domain, generator, seed_latent(domain, options, s, device), seed_condition(domain, data, s),
                        options, device, s) for s in seeds])


def gaussian_latent(domain: Any, options: Any, device: torch.device) -> bool:
    """True when the domain's latents look Gaussian (values beyond [-1, 1]): walks then use ``slerp``."""
    z = domain.sample_latent(64, options, rng=torch.Generator(device=device).manual_seed(0), device=device)
    return bool(z.is_floating_point() and z.abs().max() > 1.0)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from ``a`` (t = 0) to ``b`` (t = 1), row by row; linear where the rows are
    (anti)parallel or zero."""
    fa, fb = a.reshape(len(a), -1).double(), b.reshape(len(b), -1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1)).clamp_min(1e-12)
    omega = cos.clamp(-1.0, 1.0).acos()
    sin = omega.sin()
    wa = torch.where(sin > 1e-6, ((1 - t) * omega).sin() / sin, torch.full_like(sin, 1 - t))
    wb = torch.where(sin > 1e-6, (t * omega).sin() / sin, torch.full_like(sin, t))
    return (wa[:, None] * fa + wb[:, None] * fb).reshape(a.shape).to(a.dtype)


def walk_frames(seeds: list[int], k: int) -> list[tuple[int, int, float]]:
    """The frames of a walk through ``seeds`` with ``k`` frames between each pair: ``(from, to, t)``; the seeds'
    own frames are ``(s, s, 0.0)``."""
    frames = [(seeds[0], seeds[0], 0.0)]
    for a, b in zip(seeds, seeds[1:]):
        frames += [(a, b, j / (k + 1)) for j in range(1, k + 1)] + [(b, b, 0.0)]
    return frames


def generate_walk(domain: Any, generator: torch.nn.Module, seeds: list[int], k: int, options: Any, data: Any, *,
                  device: torch.device) -> tuple[Any, torch.Tensor | None]:
    """A latent walk: ``len(seeds) + (len(seeds) - 1) * k`` samples, the seeds' own samples (as
    ``generate_seeds`` draws them) with ``k`` samples from interpolated latents between each pair (``slerp`` for
    Gaussian latents, linear otherwise). What the latent does not carry (the condition, the domain's own random
    draws) comes from the nearer seed."""
    interp = slerp if gaussian_latent(domain, options, device) else (lambda a, b, t: torch.lerp(a, b, t))
    latents = {s: seed_latent(domain, options, s, device) for s in seeds}
    if len(set(seeds)) > 1 and all(torch.equal(latents[seeds[0]], z) for z in latents.values()):
        from .errors import warn_once

        warn_once(f"the {domain.name} domain's latent does not depend on the seed: the walk shows each seed's own "
                  "sample, switching half way between them")
    pairs = []
    for a, b, t in walk_frames(seeds, k):
        z = latents[a] if t == 0.0 else interp(latents[a], latents[b], t)
        near = a if t < 0.5 else b
        pairs.append(_one(domain, generator, z, seed_condition(domain, data, near), options, device, near))
    return _stack(pairs)


def _by_suffix(files: list[Path]) -> dict[str, list[Path]]:
    groups: dict[str, list[Path]] = {}
    for f in files:
        if Path(f).is_file():
            groups.setdefault(Path(f).suffix.lower(), []).append(Path(f))
    return groups


def _seed_name(seed: int, name: str, i: int) -> str:
    prefix = f"sample-{i:05d}"  # the built-in domains' per-sample names; others keep theirs after the seed
    return f"seed-{seed:04d}" + (name[len(prefix):] if name.startswith(prefix) else f"-{name}")


def write_seed_files(domain: Any, samples: Any, cond: Any, seeds: list[int], out: Path, options: Any,
                     data: Any) -> list[tuple[Path, Any]]:
    """Write ``samples`` (one per seed, in order) with ``domain.write_samples`` into ``out`` and name each sample's
    file after its seed (``seed-0007.png``; a label the domain adds is kept). A text file holding one line per
    sample is split into one file per seed. Returns ``(file, seed)`` pairs; the seed of a file showing every
    sample (a grid) is the list of seeds."""
    written = domain.write_samples(samples, cond, out, options, data)
    n = len(seeds)
    result: list[tuple[Path, Any]] = []
    for suffix, group in _by_suffix(written).items():
        lines = group[0].read_text(encoding="utf-8").splitlines() if suffix == ".txt" and len(group) == 1 else []
        if len(lines) == n:
            for s, line in zip(seeds, lines):
                target = out / f"seed-{s:04d}{suffix}"
                target.write_text(line + "\n", encoding="utf-8")
                result.append((target, s))
            group[0].unlink()
            continue
        per_seed = group[:n] if len(group) >= n else []
        for i, (s, f) in enumerate(zip(seeds, per_seed)):
            target = f.rename(out / _seed_name(s, f.name, i))
            result.append((target, s))
        result += [(f, list(seeds)) for f in group[len(per_seed):]]
    return result


def write_walk_files(domain: Any, samples: Any, cond: Any, frames: int, out: Path, options: Any,
                     data: Any) -> tuple[list[Path], list[Path]]:
    """Write a walk's ``frames`` samples with ``domain.write_samples`` into ``out/frames`` and join them by file
    type into ``out``: PNGs into one horizontal strip ``interpolation.png``, WAVs into ``interpolation.wav`` with
    ``SILENCE_SECONDS`` of silence between clips, text into ``interpolation.txt`` (one sample per line). Returns
    ``(joined files, frame files)``."""
    folder = out / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    written = domain.write_samples(samples, cond, folder, options, data)
    joined = []
    for suffix, group in _by_suffix(written).items():
        target = out / f"interpolation{suffix}"
        if suffix == ".png" and len(group) >= frames:
            joined.append(_png_strip(group[:frames], target))
        elif suffix == ".wav" and len(group) >= frames:
            joined.append(_join_wavs(group[:frames], target))
        elif suffix == ".txt":
            texts = [f.read_text(encoding="utf-8") for f in (group[:frames] if len(group) >= frames else group)]
            lines = [t.strip().replace("\n", " ") for t in texts] if len(group) >= frames else \
                [line for t in texts for line in t.splitlines()]
            target.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            joined.append(target)
    if not joined:
        from .errors import warn

        kinds = ", ".join(sorted(s or "extension-less" for s in _by_suffix(written))) or "no"
        warn(f"no joined interpolation file for {kinds} files (only .png, .wav and .txt samples are joined); "
             f"the frames are in {folder}")
    return joined, list(written)


def _png_strip(files: list[Path], target: Path) -> Path:
    """The images side by side, in order, in one PNG (no padding: its width is the sum of theirs)."""
    from PIL import Image

    images = [Image.open(f) for f in files]
    mode = images[0].mode
    strip = Image.new(mode, (sum(im.width for im in images), max(im.height for im in images)))
    x = 0
    for im in images:
        strip.paste(im.convert(mode), (x, 0))
        x += im.width
    strip.save(target)
    return target


def _join_wavs(files: list[Path], target: Path) -> Path:
    """The clips one after another, ``SILENCE_SECONDS`` of silence between them, at their common rate."""
    import numpy as np
    import soundfile as sf

    from .errors import GenkitError

    info = sf.info(str(files[0]))
    dtype = {"PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32"}.get(info.subtype, "float64")
    clips = []
    for f in files:
        x, rate = sf.read(str(f), dtype=dtype, always_2d=True)
        if rate != info.samplerate or x.shape[1] != info.channels:
            raise GenkitError(f"{f}: {rate} Hz x {x.shape[1]} channels, not {info.samplerate} Hz x "
                              f"{info.channels} like {files[0].name}; cannot join them")
        clips.append(x)
    gap = np.zeros((round(SILENCE_SECONDS * info.samplerate), info.channels), dtype=clips[0].dtype)
    parts = [p for clip in clips for p in (gap, clip)][1:]
    sf.write(str(target), np.concatenate(parts), info.samplerate, subtype=info.subtype, format="WAV")
    return target
