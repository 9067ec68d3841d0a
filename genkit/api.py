"""The Python API: ``genkit.train`` and ``genkit.Run``. The CLI is a thin layer over these (docs/python-api.md).

    import genkit
    run = genkit.train("image", steps=200, g_width=16, out="runs/digits")
    grid = run.sample(16, seed=0)          # a tensor in the domain's form, nothing written
    print(run.evaluate())                  # {"refnet_is": ..., ...}
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from .errors import GenkitError, warn
from .run import Run, cache_dir


def train(domain: Any, out: Path | str | None = None, *, preset: str | None = None, data: str | None = None,
          config: Path | str | None = None, resume: Path | str | None = None, quiet: bool = True,
          _source: str = "genkit.train", **settings: Any) -> Run:
    """Train ``domain`` (a registered name or a ``genkit.Domain``) and return its ``Run``.

    ``settings`` are the engine's settings and the domain's options by their Python names (``steps=500``,
    ``lr_g=1e-4``, ``g_width=16``), exactly the CLI's flags; ``preset``, ``data`` and ``config`` (a TOML file)
    are the CLI's ``--preset``, ``--data`` and ``--config``. ``out`` is the run directory to create (default
    ``runs/DOMAIN-TIME``); ``resume`` continues an existing run instead, accepting only settings that may change.
    Progress goes to stderr unless ``quiet``. A Ctrl-C / SIGTERM raises ``genkit.engine.Interrupted`` once the
    checkpoint is written.
    """
    from .config import resolve
    from .config import resume as resume_layer
    from .plugins import prepare_domain, registry

    reg = registry()
    if isinstance(domain, str):
        dom = reg.domain(domain)
    else:  # an instance: checked as a registered one would be
        dom = domain
        if reg.domains.get(dom.name) is not dom:
            problem = prepare_domain(dom, "genkit.train")
            if problem:
                raise GenkitError(problem)
    ckpt = ckpt_state = None
    if resume is not None:
        if out is not None or config is not None or preset is not None or data is not None:
            raise GenkitError("--resume continues a run in place: it takes no --out, --config, --preset or --data",
                              exit_code=2)
        run = Run(resume)
        if not run.root.is_dir() or not run.exists():
            raise GenkitError(f"--resume {run.root}: no genkit run there (no config.toml)")
        if run.domain.name != dom.name:
            raise GenkitError(f"--resume {run.root}: that run is of domain {run.domain.name!r}, not {dom.name!r}")
        ckpt = run.latest_checkpoint()
        if ckpt is not None:  # config.toml against what the checkpoint was trained with
            from .checkpoint import load_state
            from .config import check_against_checkpoint

            ckpt_state = load_state(ckpt)  # read once: the check here, then Trainer.load
            saved_toml = ckpt_state.get("config_toml")
            if isinstance(saved_toml, str):
                check_against_checkpoint(run.config, saved_toml, dom, f"--resume {run.root}",
                                         run.read_data_meta(required=False))
        cfg = resume_layer(run.config, dom, reg.losses, settings)
        if ckpt is None:  # stopped (signal, kill, crash) before its first checkpoint: never stranded
            if run.read_summary().get("status") == "completed":  # a finished run is never retrained over
                raise GenkitError(f"--resume {run.root}: the run has no checkpoint to continue from")
            warn(f"--resume {run.root}: the run stopped before its first checkpoint; starting it again from step 0")
    else:
        cfg = resolve(dom, reg.losses, preset=preset, data=data, file=Path(config) if config else None,
                      flags=settings, flags_source=_source)
        run = Run(out if out is not None else Run.new_path(dom.name))
        run.check_new()
    if cfg.train.pretrain_steps > 0 and not dom.phases:
        raise GenkitError(f"domain {dom.name!r} has no pre-training phase; drop --pretrain-steps", exit_code=2)
    if cfg.train.tensorboard:  # an optional extra: missing, it is a one-line error before anything is written
        from .board import check_available

        check_available()
    loss = reg.loss(cfg.train.loss)

    from .distributed import setup as join_process_group
    from .engine import Trainer

    dist = join_process_group(cfg.train.device)  # a single process unless under torchrun (or a caller's group)
    from .crossmodal import load_data

    loaded = load_data(dom, cfg, cache_dir())  # the domain's --data (or a --pairs manifest's examples)
    trainer = Trainer(domain=dom, config=cfg, data=loaded, loss=loss, out=run, quiet=quiet, dist=dist)
    cfg = trainer.config  # with "auto" options resolved from the data
    if cfg.train.condition_from and not cfg.train.condition:
        raise GenkitError("--condition-from needs --condition SOURCE", exit_code=2)
    if cfg.train.condition_from and ckpt is None:  # a frozen encoder from another cross-modal run
        from .crossmodal import load_encoder

        used = load_encoder(trainer.G, trainer.D, cfg.train.condition_from, cfg, trainer.device)
        if trainer.ema is not None:  # the EMA generator shares nothing with D: copy the encoder over
            trainer.ema.model.load_state_dict(trainer.G.state_dict())
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, condition_from=str(used)))
        trainer.config = cfg
    if cfg.train.init_from and ckpt is None:  # transfer learning: config.toml records the checkpoint folder used
        used = trainer.init_from(cfg.train.init_from, cfg.train.init_from_parts)
        cfg = cfg.replace(train=dataclasses.replace(cfg.train, init_from=str(used)))
        trainer.config = cfg
    if ckpt is not None:
        trainer.load(ckpt, ckpt_state)
        if trainer.step >= cfg.train.steps:
            raise GenkitError(f"--resume {run.root}: the run is already at step {trainer.step} of {cfg.train.steps}; "
                              "pass --steps N to train longer")
    trainer.check_domain_state()  # a state that cannot be checkpointed fails now, not at the first checkpoint
    # Everything is validated: only now does anything touch the disk, under the run's lock (one process per run
    # folder), after checking again what another process may have written meanwhile.
    run._domain = dom
    if not dist.main:  # rank 0 checks, locks and writes the folder; the others train alongside once it has
        try:
            dist.barrier()
            trainer.run()
        finally:
            dist.close()
        return run
    flag = "--resume" if resume is not None else "--out"
    trainer.check_space(flag)
    created = not run.root.exists()
    try:
        lock = run.lock(flag)
    except OSError as exc:  # an unwritable place: before anything is trained
        raise GenkitError(f"{flag} {run.root}: cannot write there ({exc.strerror or exc})") from None
    try:
        if resume is None:
            try:
                run.check_new()  # again, under the lock: another process may have started it meanwhile
            except GenkitError:
                if created and [p.name for p in run.root.iterdir()] == [".lock"]:  # leave nothing behind
                    Run.unlock(lock)
                    (run.root / ".lock").unlink(missing_ok=True)
                    run.root.rmdir()
                raise
        elif run.latest_checkpoint() != ckpt:
            raise GenkitError(f"--resume {run.root}: another process wrote a checkpoint while this one was starting; "
                              "run --resume again")
        if resume is not None and ckpt is None:  # the log and best pointer of the attempt that starts again
            run.metrics_path.unlink(missing_ok=True)
            run.forget_best()
        if ckpt is not None:  # forget what was logged after the checkpoint (under the lock: never another's log)
            run.truncate_metrics(trainer.step)
        run.write_config(cfg)
        if resume is None:
            run.write_run_id()  # a run keeps the id it was created with (older runs: their folder's name)
        run.write_data_meta(dom.save_data_meta(loaded, run.root))
        if not quiet:
            where = f"resuming {run.root} at step {trainer.step}" if ckpt is not None else f"writing {run.root}"
            click.echo(f"genkit: {dom.name} on {loaded.source or cfg.data}, {cfg.train.steps} steps, "
                       f"loss {loss.name}, device {trainer.device}; {where}", err=True)
            import torch

            from .engine import count_parameters
            from .verbosity import note  # --verbose: the detail behind that line

            note(f"device {trainer.device} ({torch.get_num_threads()} CPU threads), generator "
                 f"{count_parameters(trainer.G):,} / discriminator {count_parameters(trainer.D):,} parameters" +
                 (f", from checkpoint {ckpt}" if ckpt is not None else "") +
                 (", TensorBoard in " + str(run.root / "tensorboard") if cfg.train.tensorboard else ""))
            note("resolved config:\n" + cfg.to_toml().rstrip())
        dist.barrier()  # the folder is ready: the other ranks start
        trainer.run()
    finally:
        Run.unlock(lock)
        dist.close()
    return run
