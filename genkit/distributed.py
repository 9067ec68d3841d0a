"""Data-parallel training on torch.distributed (docs/distributed.md).

``genkit run DOMAIN --nproc N`` starts N local workers with torchrun's own machinery (``torch.distributed.run``);
``torchrun --nnodes ... -m genkit run DOMAIN`` starts them on several machines. Each worker is an ordinary
``genkit run`` that finds torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...) and
joins the process group: gloo on CPU, NCCL on CUDA. A process group that the caller already initialised (Lightning
Fabric, Accelerate, a hand-written launcher) is used as it is and left open.

The semantics (the single-process run is the reference):

- ``--batch-size`` is the *global* batch: each of the N ranks trains on ``batch_size / N`` examples per update, its
  slice of the batch a single process would draw (same seeded order, same latents), so a run means the same thing
  whatever N is.
- Gradients are averaged over the ranks with one ``all_reduce`` after every backward pass, before the optimizer
  step, for the generator and the discriminator alike: the reduction ``DistributedDataParallel`` performs, done
  explicitly (as StyleGAN2-ADA does) because DDP does not support ``torch.autograd.grad``, which the gradient
  penalty and R1 need (their double backward contributes to the parameters' gradients, which are then reduced
  like any other), nor several forward passes of D per update, and because domains receive plain modules.
- Every rank holds identical weights (same initialisation, checked at start-up; identical averaged updates), so the
  EMA copy is identical too; only rank 0 writes samples, metrics, checkpoints, the summary and evaluations, and
  every rank resumes from the same checkpoint (a shared filesystem on several machines).
- Batch-norm statistics are each rank's own unless ``--sync-bn`` converts them (``torch.nn.SyncBatchNorm``,
  CUDA only).
- A pre-training phase (the text domain's MLE) runs on every rank with the whole batch (it is the domain's own
  loop), and rank 0's weights are broadcast at its end: it is correct but not faster.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from .errors import GenkitError


class Dist:
    """This process's place in the job: ``world`` ranks, this one ``rank``. ``Dist()`` is a single process."""

    def __init__(self, world: int = 1, rank: int = 0, local_rank: int = 0, owns_group: bool = False):
        self.world, self.rank, self.local_rank, self.owns_group = world, rank, local_rank, owns_group

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        """True on the rank that writes (rank 0)."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"Dist(world={self.world}, rank={self.rank})"

    # -- collectives (no-ops on one process) ----------------------------------------------------------
    def reduce_gradients(self, module: nn.Module) -> None:
        """Average the gradients of ``module`` over the ranks (one flat ``all_reduce``)."""
        if not self.enabled:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The mean of ``tensor`` over the ranks."""
        if not self.enabled:
            return tensor
        out = tensor.clone()
        torch.distributed.all_reduce(out)
        return out / self.world

    def all(self, flag: bool, device: torch.device) -> bool:
        """True when ``flag`` is true on every rank (every rank gets the same answer)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1 if flag else 0], device=device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return bool(t.item())

    def any(self, flag: bool, device: torch.device) -> bool:
        return not self.all(not flag, device) if self.enabled else flag

    def broadcast(self, module: nn.Module) -> None:
        """Rank 0's parameters and buffers to every rank."""
        if not self.enabled:
            return
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(t.data, src=0)

    def check_same(self, module: nn.Module, what: str, device: torch.device) -> None:
        """Refuse to train when ranks start from different weights (a domain that initialises from global state)."""
        if not self.enabled:
            return
        from .checkpoint import weights_digest

        digest = torch.tensor([int(weights_digest(module)[:12], 16)], dtype=torch.int64, device=device)
        lo, hi = digest.clone(), digest.clone()
        torch.distributed.all_reduce(lo, op=torch.distributed.ReduceOp.MIN)
        torch.distributed.all_reduce(hi, op=torch.distributed.ReduceOp.MAX)
        if lo.item() != hi.item():
            raise GenkitError(f"the ranks built different {what} weights; the domain's build_models must depend only "
                              "on the seed")

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def launched() -> bool:
    """True in a worker started by torchrun (or any launcher that sets ``WORLD_SIZE`` > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def setup(device: str = "auto") -> Dist:
    """This process's ``Dist``: the caller's process group when one is initialised, else one from torchrun's
    environment (gloo on CPU, NCCL on CUDA), else a single process."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return Dist(dist.get_world_size(), dist.get_rank(), local, owns_group=False)
    if not launched():
        return Dist()
    if not dist.is_available():
        raise GenkitError("WORLD_SIZE > 1 but this torch has no torch.distributed")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if cuda:
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("nccl" if cuda else "gloo")
    except Exception as exc:
        raise GenkitError(f"cannot join the process group ({exc.__class__.__name__}: {str(exc).splitlines()[0][:200]})"
                          ) from None
    return Dist(dist.get_world_size(), dist.get_rank(), local, owns_group=True)


def device_for(dist: Dist, device: torch.device) -> torch.device:
    """Each rank its own GPU: ``cuda`` becomes ``cuda:LOCAL_RANK``."""
    if dist.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", dist.local_rank)
    return device


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    if device.type != "cuda":
        raise GenkitError("--sync-bn needs CUDA (torch.nn.SyncBatchNorm has no CPU implementation); drop it on CPU")
    return nn.SyncBatchNorm.convert_sync_batchnorm(module)


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``genkit ARGV`` in ``nproc`` local workers through ``torch.distributed.run`` (torchrun) and return the exit
    status: 0, or 1 when a worker failed (each worker has said why on stderr)."""
    import logging

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's own default, set here so that it does not warn about it
    for name in ("torch.distributed.elastic", "torch.distributed.elastic.agent.server.api",
                 "torch.distributed.elastic.multiprocessing.api", "torch.distributed.run"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # each worker says what went wrong itself
    args = get_args_parser().parse_args(["--standalone", "--nnodes", "1", "--nproc-per-node", str(nproc),
                                         "--max-restarts", "0", "--monitor-interval", "0.2",
                                         "-m", "genkit", *argv])
    try:
        run(args)
    except SignalException as exc:  # Ctrl-C / SIGTERM: torchrun passed it on; rank 0 has said where it stopped
        return 128 + int(exc.sigval)
    except ChildFailedError as exc:
        failures = getattr(exc, "failures", {}) or {}
        codes = {f.exitcode for f in failures.values()} or {1}
        code = max(codes)
        return code if 0 < code < 256 else 1
    return 0


def strip_nproc(argv: list[str]) -> list[str]:
    """``argv`` without ``--nproc N`` / ``--nproc=N`` (the workers are single ranks)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        out.append(arg)
    return out

