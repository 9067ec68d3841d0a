"""Drawing samples from a trained generator: one loop for snapshots' callers, ``genkit sample``, ``Run.sample``
and the domains' evaluations."""

from __future__ import annotations

from typing import Any

import torch

EVAL_SEED = 12345  # evaluations draw their own latents (never the training's stream), the same at every evaluation


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
    outs, conds = [], []
    forked = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):
        torch.manual_seed(seed)
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            z = domain.sample_latent(m, options, rng=rng, device=device)
            cond = cond_all[start:start + m].to(device) if cond_all is not None else None
            out = domain.generate(generator, z, cond, options)
            outs.append(out.cpu() if torch.is_tensor(out) else out)
            if cond is not None:
                conds.append(cond.cpu())
    samples = torch.cat(outs) if all(torch.is_tensor(o) for o in outs) else [x for o in outs for x in o]
    return samples, (torch.cat(conds) if conds else None)
