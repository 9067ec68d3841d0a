"""The adversarial-training engine: one loop for every domain.

One *step* is one generator update, preceded by ``n_critic`` discriminator updates, each on a fresh real
batch. Per step::

    for _ in range(n_critic):
        real, cond = next batch                     # resumable, seeded order
        fake = domain.fake(G, z ~ prior, cond)       # no gradient to G
        L_D = loss.discriminator(D(real), D(fake)) [+ gp * GP] [+ r1 * R1] [+ lecam * LeCam]
        update D
    L_G = domain.generator_loss(...) or loss.generator(D(domain.fake(G, z, cond)))
    update G; update the EMA copy of G

The engine never names a domain: everything domain-specific goes through ``genkit.Domain``.
Exact resume: model weights, optimizer states, the step, the global and latent RNG states and the data
position are all checkpointed, so N steps == N/2 steps + resume + N/2 steps, bit for bit on the same device.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import __version__
from .checkpoint import MODEL_FILES, check_state_value, load_state, load_weights
from .config import RunConfig
from .domain import Data, Domain, PhaseControl, StepContext
from .errors import GenkitError
from .losses import LECAM_DECAY, Loss, gradient_penalty, lecam_penalty, mismatched_rows, r1_penalty
from .progress import progress_bar
from .provenance import stamp_snapshot
from .run import Run


def resolve_device(name: str) -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; asking for an absent accelerator is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GenkitError(f"device {name!r} requested but CUDA is not available (use --device cpu or auto)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GenkitError("device 'mps' requested but MPS is not available (use --device cpu or auto)")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass
    torch.manual_seed(seed)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Batches:
    """An endless, seeded, resumable stream of real batches.

    Each epoch is a fresh permutation drawn from a generator seeded by ``(seed, epoch)``, so the whole
    position is two integers. A ``TensorDataset`` is gathered a batch at a time with one index operation.
    """

    def __init__(self, dataset: Any, batch_size: int, seed: int, device: torch.device,
                 transform: Callable | None = None, rank: int = 0, world: int = 1):
        self.dataset = dataset
        self.n = len(dataset)
        if self.n < batch_size:
            raise GenkitError(f"the data holds {self.n} examples, fewer than --batch-size {batch_size}; "
                              f"pass --batch-size {self.n} or less, or add examples")
        self.batch_size = batch_size
        self.seed = seed
        self.device = device
        self.transform = transform
        self.rank, self.world = rank, world  # under torch.distributed: this rank's slice of each global batch
        self.epoch = 0
        self.pos = 0
        self._perm: torch.Tensor | None = None
        self._tensors = getattr(dataset, "tensors", None)
        if self._tensors is not None and device.type != "cpu":
            self._tensors = tuple(t.to(device) for t in self._tensors)

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next(self, whole: bool = False) -> tuple[torch.Tensor, Any]:
        """The next batch: this rank's slice of the global batch (the whole of it with ``whole``)."""
        if self._perm is None:
            self._perm = self._permutation()
        if self.pos + self.batch_size > self.n:  # drop the ragged tail: every batch is full
            self.epoch += 1
            self.pos = 0
            self._perm = self._permutation()
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        if self.world > 1 and not whole:
            b = self.batch_size // self.world
            idx = idx[self.rank * b:(self.rank + 1) * b]
        if self._tensors is not None:
            idx = idx.to(self.device) if self.device.type != "cpu" else idx
            items = tuple(t[idx] for t in self._tensors)
        else:
            from torch.utils.data import default_collate

            rows = [self.dataset[int(i)] for i in idx]
            rows = [r if isinstance(r, (tuple, list)) else (r,) for r in rows]
            items = tuple(None if any(r[k] is None for r in rows) else default_collate([r[k] for r in rows])
                          for k in range(len(rows[0])))
            if self.device.type == "cuda":  # page-locked host memory: the copy below overlaps with compute
                items = tuple(t.pin_memory() if torch.is_tensor(t) else t for t in items)
            items = tuple(t.to(self.device, non_blocking=True) if torch.is_tensor(t) else t for t in items)
        x = items[0]
        cond = items[1] if len(items) > 1 else None
        if self.transform is not None:
            x = self.transform(x)
        return x, cond

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        self._perm = self._permutation()


class EMA:
    """Exponential moving average of the generator's weights (buffers are copied as they are)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self._src: list[torch.Tensor] = list(model.parameters())
        self._dst: list[torch.Tensor] = list(self.model.parameters())

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        torch._foreach_lerp_(self._dst, [p.detach() for p in self._src], 1.0 - self.decay)
        for b_dst, b_src in zip(self.model.buffers(), model.buffers()):
            b_dst.copy_(b_src)


class Diverged(GenkitError):
    """A loss or the weights became NaN or infinite: the run stops without saving that state (exit 1)."""

    def __init__(self, step: int, what: str, checkpoint: Path | None = None):
        self.step, self.what, self.checkpoint = step, what, checkpoint
        last = f"the last good checkpoint is {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(f"the run diverged at step {step}: {what}; nothing after it was saved and {last} "
                         "(lower --lr-g / --lr-d; --on-nan skip skips isolated bad batches)")


def phase_log_every(steps: int, log_every: int) -> int:
    """Steps between the plain progress lines of a pre-training phase: ``log_every`` times 1, 2, 5, 10, 20, 50...,
    the first that gives at most 20 lines (the text corpus recipe's 1,800 MLE steps at --log-every 10: every 100)."""
    every, factors = max(int(log_every), 1), (2, 2.5, 2)
    i = 0
    while steps / every > 20:
        every = int(every * factors[i % 3])
        i += 1
    return every


def _eta(steps_left: int, rate: float) -> str:
    """``11m30s`` for ``steps_left`` steps at ``rate`` steps/s (``?`` before there is a rate)."""
    left = steps_left / rate if rate > 0 else float("inf")
    return f"{int(left // 60)}m{int(left % 60):02d}s" if math.isfinite(left) else "?"


class Interrupted(Exception):
    """Raised after a Ctrl-C / SIGTERM once the checkpoint is safely written.

    ``checkpoint`` is None when the signal came during a pre-training phase, which stops cooperatively and saves
    nothing (a phase is not resumable mid-way; ``--resume`` then starts the run again).
    """

    def __init__(self, step: int, signum: int, checkpoint: Path | None, run_dir: Path | None = None):
        super().__init__(f"interrupted at step {step}")
        self.step, self.signum, self.checkpoint, self.run_dir = step, signum, checkpoint, run_dir


@dataclass
class Trainer:
    """Trains ``domain``'s generator and discriminator under ``config``; writes the run directory ``out``."""

    domain: Domain
    config: RunConfig
    data: Data
    loss: Loss
    out: Path | Run
    quiet: bool = False
    dist: Any = None  # genkit.distributed.Dist: this process's rank (None: a single process)
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # "auto" options take the values the loaded data implies (no-op for a resolved, saved config).
        self.config = self.config.replace(options=self.domain.resolve_options(self.config.options, self.data))
        cfg = self.config.train
        self.run_dir = self.out if isinstance(self.out, Run) else Run(self.out)
        from .distributed import Dist, device_for, sync_batchnorm

        self.dist = self.dist if self.dist is not None else Dist()
        self.device = device_for(self.dist, resolve_device(cfg.device))
        if self.dist.enabled and cfg.batch_size % self.dist.world:
            raise GenkitError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by the "
                              f"{self.dist.world} processes", exit_code=2)
        if not self.dist.main:
            self.quiet = True  # one progress display: rank 0's
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        seed_everything(cfg.seed)
        from .crossmodal import build_models

        G, D = build_models(self.domain, self.config, self.data)
        if cfg.sync_bn and self.dist.enabled:
            G, D = sync_batchnorm(G, self.device), sync_batchnorm(D, self.device)
        self.G, self.D = G.to(self.device), D.to(self.device)
        if cfg.channels_last:  # in place; state_dict values keep their logical (N, C, H, W) shape
            if not any(p.dim() == 4 for p in (*self.G.parameters(), *self.D.parameters())):
                from .errors import warn

                warn(f"--channels-last has no effect on the {self.domain.name} domain's models (no 4-D weights)")
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.dist.check_same(self.G, "generator", self.device)
        self.dist.check_same(self.D, "discriminator", self.device)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.ema = EMA(self.G, cfg.ema) if cfg.ema > 0 else None
        # --lecam: moving averages of D's mean output on real and on generated data (checkpointed)
        self.lecam_anchors = torch.zeros(2, device=self.device)
        # --precision fp16: one gradient scaler per network (bf16 and fp32 need none)
        fp16 = cfg.precision == "fp16"
        self.scaler_d = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.scaler_g = torch.amp.GradScaler(self.device.type, enabled=fp16)
        if cfg.compile:  # in place: the modules' state_dict keys, EMA and checkpoints stay as they are
            import os

            backend = os.environ.get("GENKIT_COMPILE_BACKEND", "inductor")  # tests: aot_eager, which compiles fast
            self.G.compile(backend=backend)
            self.D.compile(backend=backend)
        # Two RNG streams besides torch's global one: the latent/penalty noise and the data order.
        self.rng = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.batches = Batches(self.data.train, cfg.batch_size, cfg.seed, self.device, self.data.transform,
                               self.dist.rank, self.dist.world)
        n = self.domain.snapshot_size(self.config.options)
        fixed_rng = torch.Generator(device=self.device).manual_seed(cfg.seed + 2)
        self.fixed_z = self.domain.sample_latent(n, self.config.options, rng=fixed_rng, device=self.device)
        fixed_cond = self.domain.snapshot_conditions(n, self.data)
        self.fixed_cond = fixed_cond.to(self.device) if fixed_cond is not None else None
        self.elapsed = 0.0
        self.pretrained = False
        self._in_phase = False
        self.pretrain_seconds = 0.0
        self.ctx = StepContext.create(self.config, self.G, self.D, self.loss, self.device, self.rng, self.data)
        self.best: dict[str, Any] = {}  # {"step": int, "value": float} of the best evaluation so far
        self._acc: torch.Tensor | None = None
        self._acc_n = 0
        self._stop_signal: int | None = None
        self._nan_run = 0  # updates skipped in a row (--on-nan skip)
        # On an accelerator with --on-nan stop, the finiteness of each update's loss is kept on the device and read
        # at the next log, evaluation, snapshot or checkpoint (one host sync there, none per update); the run then
        # stops naming the first bad step, exactly as when checking every update, and saves nothing after it.
        self._defer_nan = self.device.type != "cpu" and cfg.on_nan == "stop" and not self.dist.enabled
        self._pending: list[tuple[int, str, torch.Tensor, torch.Tensor]] = []
        self.nan_skipped = 0
        self._board: Any = None  # genkit.board.Board while a --tensorboard run trains

    @property
    def paths(self) -> Run:  # the name of the first API; kept for scripts that used it
        return self.run_dir

    # -- one step -----------------------------------------------------------------------------------
    def _real(self) -> tuple[torch.Tensor, Any]:
        real, cond = self.batches.next(whole=self._in_phase)  # a phase is the domain's own loop: every rank all of it
        if self.config.train.channels_last and real.dim() == 4:
            real = real.contiguous(memory_format=torch.channels_last)
        return real, (cond if self.data.conditional else None)

    def _autocast(self) -> Any:
        """The forward passes' arithmetic (``--precision``)."""
        p = self.config.train.precision
        if p == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if p == "bf16" else torch.float16)

    def _exact(self) -> Any:
        """fp32 and eager for the penalties: their double backward neither underflows in fp16 nor meets
        torch.compile, which does not support double backward."""
        stack = contextlib.ExitStack()
        if self.config.train.precision != "fp32":
            stack.enter_context(torch.autocast(self.device.type, enabled=False))
        if self.config.train.compile:
            stack.enter_context(torch.compiler.set_stance("force_eager"))
        return stack

    def _update(self, loss: torch.Tensor, model: nn.Module, opt: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler) -> None:
        """Backward, the gradients' mean over the ranks, optimizer step (through the fp16 scaler when there is one)."""
        scaler.scale(loss).backward()
        self.dist.reduce_gradients(model)  # scaled or not, the mean is the same linear map
        scaler.step(opt)
        scaler.update()

    def _latent(self) -> torch.Tensor:
        """The latents of one update: the global batch's, drawn alike on every rank; this rank's slice of them."""
        cfg = self.config.train
        z = self.domain.sample_latent(cfg.batch_size, self.config.options, rng=self.rng, device=self.device)
        if self.dist.enabled:
            b = cfg.batch_size // self.dist.world
            z = z[self.dist.rank * b:(self.dist.rank + 1) * b]
        return z

    def train_step(self) -> torch.Tensor:
        """One generator update after ``n_critic`` discriminator updates; returns the step's statistics."""
        cfg, dom, ctx = self.config.train, self.domain, self.ctx
        G, D, loss = self.G, self.D, self.loss
        ctx.step = self.step
        D.requires_grad_(True)
        for _ in range(cfg.n_critic):
            real, cond = self._real()
            ctx.real, ctx.cond = real, cond
            z = self._latent()
            with torch.no_grad(), self._autocast():
                fake = dom.fake(G, z, cond, ctx)
            with self._autocast():
                d_real = D(real, cond).float()
                rows = mismatched_rows(cond, self.rng) if cfg.mismatch else None
                relabel = getattr(D, "relabel", None) if rows is not None else None
                # Real examples under other examples' classes, on the fake side. A discriminator with relabel()
                # scores them from the features of the pass just made on the same examples (one pass, not two).
                d_mis = relabel(rows, cond).float() if callable(relabel) else None
                d_fake = D(fake, cond).float()
                loss_d = loss.discriminator(d_real, d_fake)
                if rows is not None:
                    if d_mis is None:
                        d_mis = D(real[rows], cond).float()
                    loss_d = (1 - cfg.mismatch) * loss_d + cfg.mismatch * loss.discriminator(d_real, d_mis)
            penalty = torch.zeros((), device=self.device)
            if (cfg.gp or cfg.r1 or loss.penalty is not None) and not real.is_floating_point():
                # Real token ids against (soft) one-hot fakes (text): the penalties need the reals as one-hot
                # vectors over the fakes' last dimension, the input space the gradient is taken in.
                real = torch.nn.functional.one_hot(real, fake.shape[-1]).to(fake.dtype)
            if fake.is_floating_point() and fake.dtype != real.dtype:  # an autocast fake beside fp32 reals
                fake = fake.to(real.dtype) if real.is_floating_point() else fake.float()
            with self._exact():
                if cfg.gp:  # resolved: never None here
                    penalty = penalty + cfg.gp * gradient_penalty(D, real, fake, cond, self.rng)
                if cfg.r1:
                    penalty = penalty + cfg.r1 * r1_penalty(D, real, cond)
                if loss.penalty is not None:
                    penalty = penalty + loss.penalty(D, real, fake, cond)
                if cfg.lecam:
                    means = self.dist.mean(torch.stack([d_real.detach().mean(), d_fake.detach().mean()]))
                    self.lecam_anchors.mul_(LECAM_DECAY).add_(means, alpha=1 - LECAM_DECAY)
                    penalty = penalty + cfg.lecam * lecam_penalty(d_real, d_fake, self.lecam_anchors)
            extra_term = getattr(D, "auxiliary_loss", None)
            aux = extra_term() if callable(extra_term) else None
            if aux is not None:  # a discriminator's own extra term (e.g. a cross-modal encoder's class term)
                penalty = penalty + aux
            self.opt_d.zero_grad(set_to_none=True)
            if self._finite("loss_d", loss_d + penalty):
                self._update(loss_d + penalty, D, self.opt_d, self.scaler_d)  # penalties' gradients included
        D.requires_grad_(False)  # no discriminator gradients are needed for the generator update
        z = self._latent()
        with self._autocast():
            loss_g = dom.generator_loss(z, cond, ctx)
            if loss_g is None:
                fake = dom.fake(G, z, cond, ctx)
                real_logits = D(real, cond).float() if loss.uses_real_in_generator else None
                loss_g = loss.generator(D(fake, cond).float(), real_logits)
        loss_g = loss_g.float()
        self.opt_g.zero_grad(set_to_none=True)
        if self._finite("loss_g", loss_g):
            self._update(loss_g, G, self.opt_g, self.scaler_g)
        if self.ema is not None:
            self.ema.update(G)
        self.step += 1
        return torch.stack([loss_d.detach(), loss_g.detach(), d_real.detach().mean(),
                            d_fake.detach().mean(), penalty.detach()])

    def _log_line(self, record: dict[str, Any], start_step: int, start_elapsed: float) -> None:
        """``genkit: image step 500/7500 loss_d 0.701 loss_g 1.702 | 9.8 steps/s, ETA 11m30s`` on stderr."""
        import click

        total = self.config.train.steps
        rate = (self.step - start_step) / max(self.elapsed - start_elapsed, 1e-9)
        click.echo(f"genkit: {self.domain.name} step {self.step}/{total} loss_d {record['loss_d']:.3f} "
                   f"loss_g {record['loss_g']:.3f} | {rate:.1f} steps/s, ETA {_eta(total - self.step, rate)}", err=True)

    def _phase_line(self, phase: str, done: int, total: int, values, seconds: float) -> None:
        """``genkit: text mle step 300/1800 nll 4.812 | 4.9 steps/s, ETA 5m06s`` on stderr, for a phase without a
        terminal (a phase may end before ``total``: the text domain's early stopping)."""
        import click

        rate = done / max(seconds, 1e-9)
        shown = "".join(f" {k} {float(v):.3f}" for k, v in values.items())
        click.echo(f"genkit: {self.domain.name} {phase} step {done}/{total}{shown} | {rate:.1f} steps/s, "
                   f"ETA {_eta(total - done, rate)}", err=True)

    def _finite(self, name: str, value: torch.Tensor) -> bool:
        """True when ``value`` is finite. Otherwise stop the run (``--on-nan stop``) or skip this update (``skip``,
        at most ``--nan-skips`` in a row). Deferred on an accelerator (``_defer_nan``): see ``_check_pending``."""
        if self._defer_nan:
            value = value.detach()
            self._pending.append((self.step, name, value, torch.isfinite(value).all()))
            return True
        if self.dist.all(bool(torch.isfinite(value).all()), self.device):  # every rank takes the same branch
            self._nan_run = 0
            return True
        what = f"{name} is {float(value.detach().float().sum())}"
        if self.config.train.on_nan == "skip" and self._nan_run < self.config.train.nan_skips:
            self._nan_run += 1
            self.nan_skipped += 1
            return False
        raise Diverged(self.step, what if self.config.train.on_nan == "stop" else
                       f"{what}, {self._nan_run} updates in a row (--nan-skips)")

    def _check_pending(self) -> None:
        """The deferred checks of ``_finite``: one host sync for every update since the last call; raises
        ``Diverged`` naming the first non-finite loss."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        finite = torch.stack([flag for *_, flag in pending]).cpu()
        if bool(finite.all()):
            return
        step, name, value, _ = pending[int((~finite).nonzero()[0])]
        raise Diverged(step, f"{name} is {float(value.float().sum())}")

    def _check_weights(self) -> None:
        for label, model in (("generator", self.G), ("discriminator", self.D)):
            for name, p in model.state_dict().items():
                if p.is_floating_point() and not bool(torch.isfinite(p).all()):
                    raise Diverged(self.step, f"the {label}'s {name} is not finite")

    # -- snapshots, metrics, checkpoints ------------------------------------------------------------
    @property
    def sampler(self) -> nn.Module:
        """The generator used for samples: the EMA copy when there is one."""
        return self.ema.model if self.ema is not None else self.G

    def _sampling(self) -> nn.Module:
        """``sampler`` as samples are drawn from it: with ``--standing-stats N``, a copy with standing batch-norm
        statistics of its weights as they are now (``genkit.sampling.standing_statistics``); then as the domain
        wraps it (``Domain.sampler``, with the discriminator when the domain asks for it)."""
        from .sampling import standing_statistics

        cfg, options = self.config.train, self.config.options
        G = standing_statistics(self.domain, self.sampler, options, self.data, cfg.standing_stats, cfg.batch_size,
                                device=self.device)
        D = self.D if self.domain.sampler_uses_discriminator(options) else None
        return self.domain.sampler(G, D, options)

    @torch.no_grad()
    def snapshot(self, name: str) -> list[Path]:
        self._check_pending()
        if not self.dist.main:  # rank 0 writes
            return []
        G = self._sampling()
        was_training = G.training
        G.eval()
        with torch.random.fork_rng(devices=[]):
            samples = self.domain.generate(G, self.fixed_z, self.fixed_cond, self.config.options)
        G.train(was_training)
        self.run_dir.samples_dir.mkdir(parents=True, exist_ok=True)
        files = self.domain.write_snapshot(samples.cpu() if torch.is_tensor(samples) else samples,
                                           None if self.fixed_cond is None else self.fixed_cond.cpu(),
                                           self.run_dir.samples_dir / name, self.config.options, self.data)
        stamp_snapshot(self, files)  # provenance: step, seed, run id, weights hash (docs/run-directory.md)
        if self._board is not None:
            self._board.snapshot(files, self.run_dir.samples_dir, self.step)
        return files

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        self._check_pending()
        if not self.dist.main:  # rank 0 evaluates; the others wait for it at their next collective
            return {}
        G = self._sampling()
        was_training = G.training
        G.eval()
        with torch.random.fork_rng(devices=[]):
            self.ctx.step = self.step
            self.ctx.generator = G
            try:
                metrics = self.domain.evaluate(self.ctx)
            finally:
                self.ctx.generator = self.G
        G.train(was_training)
        return {k: float(v) for k, v in metrics.items()}

    def _log(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        if not self.dist.main:
            return
        self.run_dir.log(record)
        if self._board is not None:
            self._board.metrics(record, {"generator": self.opt_g.param_groups[0]["lr"],
                                         "discriminator": self.opt_d.param_groups[0]["lr"]})

    def _flush_metrics(self, extra: dict[str, float] | None = None) -> dict[str, Any] | None:
        self._check_pending()
        if self._acc is None or self._acc_n == 0:
            if extra:
                record = {"step": self.step, "seconds": round(self.elapsed, 3), **extra}
                self._log(record)
                return record
            return None
        mean = self.dist.mean(self._acc / self._acc_n).tolist()  # over the ranks too
        record = {"step": self.step, "loss_d": mean[0], "loss_g": mean[1], "d_real": mean[2], "d_fake": mean[3]}
        if self.config.train.gp or self.config.train.r1 or self.config.train.lecam or self.loss.penalty is not None or \
                callable(getattr(self.D, "auxiliary_loss", None)):
            record["penalty"] = mean[4]
        record["seconds"] = round(self.elapsed, 3)
        record.update(extra or {})
        self._acc, self._acc_n = None, 0
        self._log(record)
        return record

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {
            "step": self.step,
            "elapsed": self.elapsed,
            "pretrained": self.pretrained,
            "pretrain_seconds": self.pretrain_seconds,
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            **({"scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict()}
               if self.scaler_g.is_enabled() else {}),
            "rng_torch": torch.get_rng_state(),
            "rng_latent": self.rng.get_state(),
            "batches": self.batches.state_dict(),
            "fixed_z": self.fixed_z.cpu(),
            "config_toml": self.config.to_toml(),
            "domain": self.domain.name,
            "genkit_version": __version__,
            "best": dict(self.best),
            "domain_state": self._domain_state(),
            "lecam_anchors": self.lecam_anchors.cpu(),
        }
        if self.fixed_cond is not None and torch.is_tensor(self.fixed_cond):
            state["fixed_cond"] = self.fixed_cond.cpu()
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        if self._acc is not None:
            state["acc"] = self._acc.cpu()
            state["acc_n"] = self._acc_n
        return state

    def _domain_state(self) -> dict[str, Any]:
        state = self.domain.state_dict(self.data)
        for key, value in state.items():
            check_state_value(value, key)
        return state

    def check_space(self, flag: str = "--out") -> None:
        """Refuse to start when the run folder's disk cannot hold one checkpoint (weights, EMA copy and the optimizers'
        two moments: about four times the parameters), rather than failing at the first save."""
        import shutil

        need = 4 * sum(p.numel() * p.element_size() for m in (self.G, self.D) for p in m.parameters()) + 2**20
        where = self.run_dir.root
        while not where.exists() and where != where.parent:
            where = where.parent
        try:
            free = shutil.disk_usage(where).free
        except OSError:
            return
        if free < need:
            raise GenkitError(f"{flag} {self.run_dir.root}: {free / 2**20:.0f} MiB free on that disk, less than one "
                              f"checkpoint needs (about {need / 2**20:.0f} MiB); free some space or choose another folder")

    def check_domain_state(self) -> None:
        """Raise ``GenkitError`` naming a value of the domain's state that a checkpoint could not hold."""
        self._domain_state()

    def save(self) -> Path | None:
        """Write a checkpoint (rank 0; the others return None)."""
        self._check_pending()
        self._check_weights()  # a non-finite state is never saved (so never `latest`, and pruning keeps good ones)
        if not self.dist.main:
            return None
        models = {"generator": self.G, "discriminator": self.D}
        if self.ema is not None:
            models["generator_ema"] = self.ema.model
        return self.run_dir.save_checkpoint(self.step, models, self.state_dict(), self.config.train.keep_checkpoints)

    def init_from(self, source: Path | str, parts: str = "gd") -> Path:
        """Start from another run's weights (``--init-from``): its generator (and with ``parts == "gd"`` its
        discriminator); the EMA copy starts from the source's EMA generator when it has one. Shapes must match:
        a mismatch is one line naming the layer and both shapes. Returns the checkpoint folder used."""
        from safetensors import safe_open

        src = Run.open(source)
        if src.domain.name != self.domain.name:
            raise GenkitError(f"--init-from {source}: that run is of domain {src.domain.name!r}, not {self.domain.name!r}")
        ckpt = src.checkpoint()
        src_state = load_state(ckpt)
        ignore = set(self.domain.legacy_weight_keys)
        targets = [("generator", self.G)] + ([("discriminator", self.D)] if parts == "gd" else [])
        for name, module in targets:
            path = ckpt / MODEL_FILES[name]
            own = module.state_dict()
            try:
                with safe_open(str(path), framework="pt") as f:
                    shapes = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
            except Exception as exc:
                raise GenkitError(f"--init-from {source}: cannot read {path} ({exc.__class__.__name__})") from None
            for key, tensor in own.items():
                if key not in shapes:
                    raise GenkitError(f"--init-from {source}: {name} layer {key} is missing from {path.name}")
                if tuple(tensor.shape) != shapes[key]:
                    raise GenkitError(f"--init-from {source}: {name} layer {key} has shape {shapes[key]} there, "
                                      f"{tuple(tensor.shape)} here")
            extra = sorted(set(shapes) - set(own) - ignore)
            if extra:
                raise GenkitError(f"--init-from {source}: {name} layer {extra[0]} is in {path.name} but not in this model")
            load_weights(module, path, self.device, ignore, src_state)
        if self.ema is not None:
            ema_path = ckpt / MODEL_FILES["generator_ema"]
            if ema_path.is_file():
                load_weights(self.ema.model, ema_path, self.device, ignore, src_state)
            else:
                self.ema.model.load_state_dict(self.G.state_dict())
        return ckpt

    def load(self, ckpt: Path, state: dict[str, Any] | None = None) -> None:
        """Continue from checkpoint ``ckpt`` (its ``state.pt`` already read as ``state``, or read here)."""
        state = state if state is not None else load_state(ckpt)
        if "domain_state" in state:
            self.domain.load_state_dict(self.data, state["domain_state"])
        else:  # written by genkit 0.1
            self.domain.upgrade_state(self.data, ckpt, self.config.options)
        ignore = self.domain.legacy_weight_keys
        load_weights(self.G, ckpt / MODEL_FILES["generator"], self.device, ignore, state)
        load_weights(self.D, ckpt / MODEL_FILES["discriminator"], self.device, ignore, state)
        if self.ema is not None:
            load_weights(self.ema.model, ckpt / MODEL_FILES["generator_ema"], self.device, ignore, state)
        self.opt_g.load_state_dict(state["optimizer_g"])
        self.opt_d.load_state_dict(state["optimizer_d"])
        if "scaler_g" in state and self.scaler_g.is_enabled():
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])
        self.step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.pretrained = bool(state.get("pretrained", False))
        self.pretrain_seconds = float(state.get("pretrain_seconds", 0.0))
        self.best = dict(state.get("best", {}))
        torch.set_rng_state(state["rng_torch"])
        self.rng.set_state(state["rng_latent"])
        if "rng_cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        self.batches.load_state_dict(state["batches"])
        self.fixed_z = state["fixed_z"].to(self.device)
        if "fixed_cond" in state:
            self.fixed_cond = state["fixed_cond"].to(self.device)
        if "acc" in state:
            self._acc, self._acc_n = state["acc"].to(self.device), int(state["acc_n"])
        if "lecam_anchors" in state:  # checkpoints before --lecam have none (and trained without it)
            self.lecam_anchors = state["lecam_anchors"].to(self.device)
        # The metrics up to the checkpoint. Nothing is written here: genkit.train truncates metrics.jsonl to them
        # (so that a resumed run does not log steps twice) only once it holds the run's lock, on rank 0.
        self.history = [r for r in self.run_dir.metrics() if r.get("step", 0) <= self.step]

    def _improves(self, metrics: dict[str, float] | None) -> bool:
        """True (and ``self.best`` updated) when the domain's ``best_metric`` beats the best so far."""
        spec = self.domain.best_metric
        if not spec or not metrics or spec[0] not in metrics or not math.isfinite(metrics[spec[0]]):
            return False
        name, mode = spec
        value = metrics[name]
        if self.best and not (value < self.best["value"] if mode == "min" else value > self.best["value"]):
            return False
        self.best = {"step": self.step, "metric": name, "value": value}
        return True

    def _mark_best(self, ckpt: Path | None) -> None:
        if ckpt is not None:
            self.run_dir.mark_best(ckpt)

    # -- the run ------------------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        if self._stop_signal is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self._stop_signal = signum
        if not self.quiet:
            from .errors import warn

            if self._in_phase:
                warn("stopping the pre-training phase after this step; it is not checkpointed and restarts on --resume")
            else:
                warn("stopping: writing a checkpoint after this step (press Ctrl-C again to abort without one)")

    def _stopping(self) -> bool:
        """A Ctrl-C / SIGTERM arrived, on any rank: every rank checkpoints and stops after the same step."""
        if not self.dist.enabled:
            return self._stop_signal is not None
        if self.dist.any(self._stop_signal is not None, self.device):
            self._stop_signal = self._stop_signal or signal.SIGTERM
            return True
        return False

    def _warm_condition(self) -> None:
        """``--condition-warmup``: a fresh cross-modal run trains its condition encoder alone first (crossmodal.warm_up),
        logged at step 0 as a pre-training line."""
        cfg = self.config.train
        if not cfg.condition or cfg.condition_from or cfg.condition_warmup <= 0 or self.step > 0 or self.pretrained:
            return
        from .crossmodal import warm_up

        start = time.perf_counter()
        bar = progress_bar(total=cfg.condition_warmup, desc="condition encoder", disable=self.quiet)

        def on_step(n: int, values: dict[str, float]) -> None:
            bar.update(n)
            bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)

        try:
            stats = warm_up(self.D, cfg.condition_warmup, cfg.batch_size, self.device, cfg.seed + 3, on_step)
        finally:
            bar.close()
        if not stats:
            return
        self.dist.broadcast(self.D)  # the encoder is shared by G and D: rank 0's is everyone's
        if self.ema is not None:  # the averaged generator holds its own copy of the encoder
            self.ema.model.load_state_dict(self.G.state_dict())
        self.elapsed += time.perf_counter() - start
        self._log({"step": 0, "phase": "condition-warmup", "seconds": round(self.elapsed, 3), **stats})

    def _phases(self) -> None:
        """Run the domain's declared phases (``Domain.phases``), ``pretrain_steps`` steps each, then checkpoint."""
        cfg = self.config.train
        if cfg.pretrain_steps <= 0 or self.pretrained or not self.domain.phases:
            return
        self.ctx.step = 0
        start = time.perf_counter()
        stats: dict[str, Any] = {}
        every = phase_log_every(cfg.pretrain_steps, cfg.log_every)
        for phase in self.domain.phases:
            bar = progress_bar(total=cfg.pretrain_steps, desc=f"{self.domain.name} {phase.name}", disable=self.quiet)
            phase_start, done = time.perf_counter(), [0]

            def on_step(n: int, values, bar=bar, name=phase.name, phase_start=phase_start, done=done) -> None:
                bar.update(n)
                if values:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in values.items()}, refresh=False)
                before, done[0] = done[0], done[0] + n
                if bar.disable and not self.quiet and done[0] // every > before // every:  # no terminal: plain lines
                    self._phase_line(name, done[0], cfg.pretrain_steps, values, time.perf_counter() - phase_start)

            control = PhaseControl(on_step, lambda: self._stop_signal is not None)
            self._in_phase = True
            try:
                stats.update(getattr(self.domain, phase.method)(self.ctx, self._real, cfg.pretrain_steps, control) or {})
            finally:
                self._in_phase = False
                bar.close()
            if self._stop_signal is not None and control.steps_done < cfg.pretrain_steps:  # stopped cooperatively
                self.elapsed += time.perf_counter() - start
                self._write_summary("interrupted", None, [])
                raise Interrupted(0, self._stop_signal, None, self.run_dir.root)
        self.pretrain_seconds = time.perf_counter() - start
        self.elapsed += self.pretrain_seconds
        self.pretrained = True
        self.dist.broadcast(self.G)  # every rank ran the phase; rank 0's result is everyone's
        self.dist.broadcast(self.D)
        if self.ema is not None:  # average the pre-trained generator, not its random initialisation
            with torch.no_grad():
                for dst, src in zip(self.ema.model.state_dict().values(), self.G.state_dict().values()):
                    dst.copy_(src)
        self._log({"step": 0, "phase": ",".join(p.name for p in self.domain.phases),
                   "seconds": round(self.elapsed, 3), **stats})
        ckpt = self.save()  # step 0: a later interruption or crash never costs the pre-training again
        if self._stop_signal is not None:  # the signal came after the phase's last step
            self._write_summary("interrupted", ckpt, [])
            raise Interrupted(0, self._stop_signal, ckpt, self.run_dir.root)

    def run(self) -> dict[str, Any]:
        """Train to ``config.train.steps``; returns the summary (also written to ``summary.json``)."""
        if self.dist.main:
            self.run_dir.samples_dir.mkdir(parents=True, exist_ok=True)
        handlers = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                handlers[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not in the main thread (e.g. some notebook kernels)
                pass
        if self.config.train.tensorboard and self.dist.main:
            self._board = self._open_board()
        try:
            self._warm_condition()
            self._phases()
            return self._loop()
        except Diverged as exc:  # name the checkpoint to go back to; summary.json says what happened
            ckpt = self.run_dir.latest_checkpoint()
            self._write_summary("diverged", ckpt, [], {})
            raise Diverged(exc.step, exc.what, ckpt) from None
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            if self._board is not None:
                self._board.close()
                self._board = None

    def _open_board(self) -> Any:
        """``RUN/tensorboard/`` (--tensorboard). A resume appends a new event file there and drops what the earlier
        process logged after its checkpoint (TensorBoard's purge step), as metrics.jsonl does."""
        from .board import Board

        folder = self.run_dir.root / "tensorboard"
        purge = (self.step + 1 if self.step > 0 or self.pretrained else 0) if folder.is_dir() else None
        board = Board(folder, purge_step=purge)
        board.start(self.step, self.elapsed)
        return board

    def _loop(self) -> dict[str, Any]:
        cfg = self.config.train
        self.G.train()
        self.D.train()
        bar = progress_bar(total=cfg.steps, initial=self.step, desc=f"{self.domain.name}", disable=self.quiet)
        last_ckpt: Path | None = None
        start_step, start_elapsed = self.step, self.elapsed
        if cfg.eval_at_start and self.step == 0:  # the baseline of every metric curve (not again on a resume)
            baseline = self.evaluate()
            if baseline:
                self._log({"step": 0, "seconds": round(self.elapsed, 3), **baseline})
        tick = time.perf_counter()
        while self.step < cfg.steps:
            stats = self.train_step()
            self._acc = stats if self._acc is None else self._acc + stats
            self._acc_n += 1
            now = time.perf_counter()
            self.elapsed += now - tick
            tick = now
            bar.update(1)
            final = self.step >= cfg.steps
            evaluate_now = bool(cfg.eval_every) and self.step % cfg.eval_every == 0 and not final
            if self.step % cfg.log_every == 0 or final or evaluate_now:  # an evaluation also logs the losses so far
                extra = self.evaluate() if evaluate_now else None
                record = self._flush_metrics(extra)
                if self._improves(extra):
                    self._mark_best(self.save())
                if record is not None and "loss_d" in record:
                    bar.set_postfix(loss_d=f"{record['loss_d']:.3f}", loss_g=f"{record['loss_g']:.3f}", refresh=False)
                    if bar.disable and not self.quiet:  # no terminal (nohup, a batch job): one plain line instead
                        self._log_line(record, start_step, start_elapsed)
            if cfg.sample_every and self.step % cfg.sample_every == 0 and not final:
                self.snapshot(f"step-{self.step:08d}")
            stopping = self._stopping()
            if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and not final) or \
                    (stopping and not final):
                last_ckpt = self.save()
            if stopping and not final:
                bar.close()
                self._write_summary("interrupted", last_ckpt, [])
                raise Interrupted(self.step, self._stop_signal or signal.SIGTERM, last_ckpt, self.run_dir.root)
            tick = time.perf_counter()
        bar.close()
        final_eval = self.evaluate()
        if final_eval:
            self._log({"step": self.step, "seconds": round(self.elapsed, 3), **final_eval})
        improved = self._improves(final_eval)
        last_ckpt = self.save()
        if improved:
            self._mark_best(last_ckpt)
        files = self.snapshot("final")
        exported = self.domain.export(self._sampling(), self.run_dir.root, self.config.options, self.data) \
            if self.dist.main else []
        stamp_snapshot(self, exported)
        return self._write_summary("completed", last_ckpt, files, final_eval, exported)

    def _write_summary(self, status: str, ckpt: Path | None, files: list[Path],
                       metrics: dict[str, float] | None = None, exported: list[Path] | None = None) -> dict[str, Any]:
        last: dict[str, Any] = next((r for r in reversed(self.history) if "loss_d" in r), {})
        summary = {
            "status": status,
            "domain": self.domain.name,
            "preset": self.config.preset,
            "data": self.config.data,
            "data_source": self.data.source,
            "steps": self.step,
            "seconds": round(self.elapsed, 3),
            "pretrain_seconds": round(self.pretrain_seconds, 3),
            "seconds_per_step": round((self.elapsed - self.pretrain_seconds) / max(self.step, 1), 5),
            "loss": self.loss.name,
            "loss_d": last.get("loss_d"),
            "loss_g": last.get("loss_g"),
            "parameters": {"generator": count_parameters(self.G), "discriminator": count_parameters(self.D)},
            "device": str(self.device),
            "run_dir": str(self.run_dir.root),
            "samples": [str(p) for p in files],
            "checkpoint": str(ckpt) if ckpt else None,
            "metrics": metrics or {},
            "best": dict(self.best),
            "exported": [str(p) for p in (exported or [])],
            "init_from": ({"checkpoint": self.config.train.init_from, "parts": self.config.train.init_from_parts}
                          if self.config.train.init_from else None),
            "nan_skipped": self.nan_skipped,
            "world_size": self.dist.world,
            "genkit_version": __version__,
        }
        if self.dist.main:
            self.run_dir.write_summary(summary)
        return summary
