"""The ``genkit`` command line (click). Built by ``create_cli()`` so that tests get a fresh one.

``genkit --help`` imports no torch: commands import the engine only when they run. ``genkit run`` and
``genkit info`` get one sub-command per registered domain (the way datasette's ``publish`` is filled),
each with the common training options plus the domain's own options.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from . import __version__
from .config import RESUMABLE_OVERRIDES, TRAIN_FIELDS, from_dict, read_toml, resolve
from .errors import GenkitError, warn
from . import plugins as _plugins
from .plugins import registry

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# (flag, python name, type, help) of the options every domain shares.
COMMON_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--steps", "steps", int, "Generator updates to train for."),
    ("--batch-size", "batch_size", int, "Examples per batch."),
    ("--loss", "loss", str, "Adversarial loss: ns, minimax, wgan-gp, wgan, hinge, lsgan, rsgan, or a plugin's."),
    ("--lr-g", "lr_g", float, "Generator learning rate (Adam)."),
    ("--lr-d", "lr_d", float, "Discriminator learning rate (Adam)."),
    ("--beta1", "beta1", float, "Adam beta1 for both networks."),
    ("--beta2", "beta2", float, "Adam beta2 for both networks."),
    ("--n-critic", "n_critic", int, "Discriminator updates per generator update."),
    ("--gp", "gp", float, "Gradient-penalty weight (default: the loss's, 10 for wgan-gp)."),
    ("--r1", "r1", float, "R1 penalty weight on real data (0 = off)."),
    ("--ema", "ema", float, "EMA decay of the generator used for samples (0 = off, e.g. 0.999)."),
    ("--seed", "seed", int, "Random seed (same seed, same run)."),
    ("--device", "device", str, "auto, cpu, cuda, cuda:N or mps."),
    ("--checkpoint-every", "checkpoint_every", int, "Steps between checkpoints (0 = only at the end)."),
    ("--keep-checkpoints", "keep_checkpoints", int, "Keep only the newest N checkpoints, plus the best (0 = all)."),
    ("--sample-every", "sample_every", int, "Steps between sample snapshots (0 = only at the end)."),
    ("--log-every", "log_every", int, "Steps between metrics.jsonl lines."),
    ("--eval-every", "eval_every", int, "Steps between domain evaluations (0 = only at the end)."),
    ("--pretrain-steps", "pretrain_steps", int, "Steps of the domain's pre-training phase, where it has one."),
]


def _debug() -> bool:
    return os.environ.get("GENKIT_DEBUG", "") not in ("", "0")


def _echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def _domain_option_decorators(domain) -> list:
    decorators = []
    for opt in domain.options:
        kind = type(opt.default)
        help_text = f"{opt.help} [default: {opt.default}]"
        if kind is bool:
            flag = opt.flag
            decorators.append(click.option(f"{flag}/--no-{flag[2:]}", opt.name, default=None, help=help_text))
        else:
            ctype = click.Choice([str(c) for c in opt.choices]) if opt.choices else kind
            decorators.append(click.option(opt.flag, opt.name, type=ctype, default=None, help=help_text))
    return decorators


def _split_params(domain, params: dict[str, Any]) -> dict[str, Any]:
    """CLI parameters -> config overrides (train fields and domain options), typed."""
    overrides: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        if key in TRAIN_FIELDS:
            overrides[key] = value
        else:
            opt = next((o for o in domain.options if o.name == key), None)
            if opt is not None:
                overrides[key] = type(opt.default)(value) if opt.choices and not isinstance(opt.default, bool) else value
    return overrides


class DomainGroup(click.Group):
    """A group whose sub-commands are the registered domains, built on demand."""

    def __init__(self, *args, action: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.action = action

    def list_commands(self, ctx):
        return sorted(registry().domains)

    def get_command(self, ctx, name):
        domains = registry().domains
        if name not in domains:
            return None
        return make_run_command(domains[name]) if self.action == "run" else make_info_command(domains[name])

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and name not in registry().domains:
            raise GenkitError(f"unknown domain {name!r} (available: {', '.join(sorted(registry().domains)) or 'none'})")
        return super().resolve_command(ctx, args)


def _new_run_dir(domain_name: str) -> Path:
    base = Path("runs") / f"{domain_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise GenkitError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if (out / "config.toml").exists():
            raise GenkitError(f"--out {out} already holds a run; continue it with --resume {out}, or choose another --out")
        raise GenkitError(f"--out {out} is not empty; genkit writes runs only into a new or empty folder")


def make_run_command(domain) -> click.Command:
    def callback(**params):
        run_domain(domain, params)

    cmd = click.Command(
        domain.name, callback=callback, context_settings=CONTEXT,
        help=f"Train the {domain.name} domain: {domain.summary}" + (f"\n\nPaper: {domain.paper}" if domain.paper else ""),
        short_help=domain.summary,
    )
    decorators = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="Config file (TOML), e.g. a run's config.toml."),
        click.option("--preset", type=click.Choice(sorted(domain.all_presets())), help="Named bundle of settings."),
        click.option("--data", type=str, help="Training data (domain-specific: a folder, a file, or a built-in name)."),
    ]
    decorators += [click.option(flag, name, type=kind, default=None, help=help_) for flag, name, kind, help_ in COMMON_OPTIONS]
    decorators += [
        click.option("--out", type=click.Path(path_type=Path), help="Run directory to create (default: runs/DOMAIN-TIME)."),
        click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this directory from its latest checkpoint."),
        click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar or messages on stderr."),
    ]
    decorators += _domain_option_decorators(domain)
    for deco in decorators:  # on a Command, click.option appends: keep the listed order
        cmd = deco(cmd)
    return cmd


def make_info_command(domain) -> click.Command:
    def callback(config_file, preset, data, as_json, **params):
        info_domain(domain, config_file, preset, data, as_json, params)

    cmd = click.Command(domain.name, callback=callback, context_settings=CONTEXT,
                        help=f"Describe the {domain.name} model that `genkit run {domain.name}` would train.",
                        short_help=domain.summary)
    decorators = [
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="Config file (TOML)."),
        click.option("--preset", type=click.Choice(sorted(domain.all_presets())), help="Named bundle of settings."),
        click.option("--data", type=str, help="Training data."),
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ] + _domain_option_decorators(domain)
    for deco in decorators:  # on a Command, click.option appends: keep the listed order
        cmd = deco(cmd)
    return cmd


def _cache_dir() -> Path:
    return Path(os.environ.get("GENKIT_CACHE", Path.home() / ".cache" / "genkit"))


def _check_pretrain(domain, cfg) -> None:
    from .domain import Domain

    if cfg.train.pretrain_steps > 0 and type(domain).pretrain is Domain.pretrain:
        raise GenkitError(f"domain {domain.name!r} has no pre-training phase; drop --pretrain-steps")


def run_domain(domain, params: dict[str, Any]) -> None:
    reg = registry()
    config_file = params.pop("config_file")
    resume: Path | None = params.pop("resume")
    out: Path | None = params.pop("out")
    as_json = params.pop("as_json")
    quiet = params.pop("quiet")
    overrides = _split_params(domain, params)
    overrides["preset"] = params.get("preset")
    overrides["data"] = params.get("data")

    ckpt = None
    if resume is not None:
        if out is not None or config_file is not None:
            raise GenkitError("--resume continues a run in place: it takes neither --out nor --config")
        from_run = resume / "config.toml"
        if not resume.is_dir() or not from_run.is_file():
            raise GenkitError(f"--resume {resume}: no genkit run there (no config.toml)")
        raw = read_toml(from_run)
        if raw.get("domain") != domain.name:
            raise GenkitError(f"--resume {resume}: that run is of domain {raw.get('domain')!r}, not {domain.name!r}")
        cfg = from_dict(raw, domain, str(from_run))
        changed = {k: v for k, v in overrides.items() if v is not None and k not in RESUMABLE_OVERRIDES}
        if changed:
            raise GenkitError(f"--resume: cannot change {', '.join(sorted(changed))} of an existing run "
                              f"(only {', '.join(sorted(RESUMABLE_OVERRIDES))})")
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg.train, key, value)
        from .config import validate_train

        validate_train(cfg.train, reg.losses)
        from .checkpoint import latest_checkpoint

        ckpt = latest_checkpoint(resume / "checkpoints")
        if ckpt is None:
            if not _stopped_before_any_checkpoint(resume):
                raise GenkitError(f"--resume {resume}: the run has no checkpoint to continue from")
            warn(f"--resume {resume}: the run stopped before its first checkpoint; starting it again from step 0")
        out = resume
    else:
        cfg = resolve(domain, reg.losses, file=config_file, overrides=overrides)
        out = out if out is not None else _new_run_dir(domain.name)
        _check_out_dir(out)
    _check_pretrain(domain, cfg)
    loss = reg.loss(cfg.train.loss)

    from .engine import Interrupted, Trainer

    data = domain.load_data(cfg.data, cfg.options, cache_dir=_cache_dir())
    trainer = Trainer(domain=domain, config=cfg, data=data, loss=loss, out=out, quiet=quiet)
    if ckpt is not None:
        trainer.load(ckpt)
        if trainer.step >= cfg.train.steps:
            raise GenkitError(f"--resume {resume}: the run is already at step {trainer.step} of {cfg.train.steps}; "
                              "pass --steps N to train longer")
    # Everything is validated: only now does anything touch the disk.
    out.mkdir(parents=True, exist_ok=True)
    if resume is not None and ckpt is None:  # the log and best pointer of the attempt that starts again
        trainer.paths.metrics.unlink(missing_ok=True)
        (trainer.paths.checkpoints / "best").unlink(missing_ok=True)
    cfg.write(trainer.paths.config)
    trainer.paths.data_meta.write_text(json.dumps(domain.save_data_meta(data, out), indent=2) + "\n", encoding="utf-8")
    if not quiet:
        where = f"resuming {out} at step {trainer.step}" if ckpt is not None else f"writing {out}"
        click.echo(f"genkit: {domain.name} on {data.source or cfg.data}, {cfg.train.steps} steps, "
                   f"loss {loss.name}, device {trainer.device}; {where}", err=True)
    try:
        summary = trainer.run()
    except Interrupted as stop:
        where = f"at step {stop.step}; checkpoint {stop.checkpoint}" if stop.checkpoint else \
            "during pre-training, which restarts on resume; no checkpoint"
        click.echo(f"genkit: interrupted {where}; continue with: genkit run {domain.name} --resume {out}", err=True)
        sys.exit(128 + stop.signum)
    if as_json:
        _echo_json(summary)
    else:
        for path in summary["samples"]:
            click.echo(path)


def info_domain(domain, config_file, preset, data_spec, as_json, params) -> None:
    reg = registry()
    overrides = _split_params(domain, params)
    overrides["preset"] = preset
    overrides["data"] = data_spec
    cfg = resolve(domain, reg.losses, file=config_file, overrides=overrides)
    import torch

    from .engine import count_parameters

    data = domain.load_data(cfg.data, cfg.options, cache_dir=_cache_dir())
    torch.manual_seed(cfg.train.seed)
    G, D = domain.build_models(cfg.options, data)
    info = {
        "domain": domain.name,
        "summary": domain.summary,
        "paper": domain.paper,
        "parameters": {"generator": count_parameters(G), "discriminator": count_parameters(D)},
        "sample_shape": list(domain.sample_shape(cfg.options, data)),
        "data": {"spec": cfg.data, "source": data.source, "examples": len(data.train) if data.train is not None else None,
                 "conditional": data.conditional, "num_classes": data.num_classes},
        "config": cfg.to_dict(),
    }
    if as_json:
        _echo_json(info)
        return
    click.echo(f"{domain.name}: {domain.summary}")
    if domain.paper:
        click.echo(f"paper: {domain.paper}")
    click.echo(f"generator parameters:     {info['parameters']['generator']:,}")
    click.echo(f"discriminator parameters: {info['parameters']['discriminator']:,}")
    click.echo(f"sample shape: {tuple(info['sample_shape'])}")
    click.echo(f"data: {data.source} ({info['data']['examples']} examples)")
    click.echo("config:")
    click.echo(cfg.to_toml().rstrip())


def _stopped_before_any_checkpoint(run_dir: Path) -> bool:
    """True for a run that a signal stopped before its first checkpoint (e.g. during pre-training): its
    summary says "interrupted" with no checkpoint. Anything else without checkpoints is not restarted."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return summary.get("status") == "interrupted" and not summary.get("checkpoint")


def _open_run(path: Path, best: bool):
    """A run directory or checkpoint folder -> (run_dir, checkpoint, domain, resolved config)."""
    from .engine import find_checkpoint

    run_dir, ckpt = find_checkpoint(path, best)
    raw = read_toml(run_dir / "config.toml")
    domain = registry().domain(raw.get("domain", ""))
    return run_dir, ckpt, domain, from_dict(raw, domain, str(run_dir / "config.toml"))


def _build_from_checkpoint(domain, cfg, data, ckpt: Path, dev, with_discriminator: bool = False):
    """The run's networks with the checkpoint's weights (the EMA generator when there is one), in eval mode."""
    import torch

    from .checkpoint import MODEL_FILES, load_weights

    torch.manual_seed(cfg.train.seed)
    G, D = domain.build_models(cfg.options, data)
    weights = ckpt / MODEL_FILES["generator_ema"]
    if not weights.is_file():
        weights = ckpt / MODEL_FILES["generator"]
    load_weights(G, weights, dev)
    G.to(dev).eval()
    if with_discriminator:
        load_weights(D, ckpt / MODEL_FILES["discriminator"], dev)
        D.to(dev).eval()
    return G, D, weights


def sample_run(path: Path, n: int, out: Path | None, seed: int, device: str, as_json: bool, best: bool = False) -> None:
    run_dir, ckpt, domain, cfg = _open_run(path, best)
    meta_path = run_dir / "data.json"
    if not meta_path.is_file():
        raise GenkitError(f"{run_dir} has no data.json; was it written by genkit run?")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GenkitError(f"{meta_path}: not valid JSON ({exc})") from None
    if n <= 0:
        raise GenkitError(f"-n must be positive, got {n}")
    if out is None:
        i = 1
        while (run_dir / "samples" / f"sample-{i:03d}").exists():
            i += 1
        out = run_dir / "samples" / f"sample-{i:03d}"
    else:
        _check_out_dir(out)
    import torch

    from .engine import resolve_device

    dev = resolve_device(device)
    data = domain.load_data_meta(meta, run_dir)
    G, _, weights = _build_from_checkpoint(domain, cfg, data, ckpt, dev)
    rng = torch.Generator(device=dev).manual_seed(seed)
    z = domain.sample_latent(n, cfg.options, rng=rng, device=dev)
    cond = domain.snapshot_conditions(n, data)
    cond = cond.to(dev) if cond is not None else None
    with torch.no_grad():
        torch.manual_seed(seed)
        samples = domain.generate(G, z, cond, cfg.options)
    out.mkdir(parents=True, exist_ok=True)
    files = domain.write_samples(samples.cpu() if torch.is_tensor(samples) else samples,
                                 cond.cpu() if cond is not None else None, out, cfg.options, data)
    if as_json:
        _echo_json({"run_dir": str(run_dir), "checkpoint": str(ckpt), "weights": weights.name, "seed": seed,
                    "out": str(out), "files": [str(f) for f in files]})
    else:
        for f in files:
            click.echo(str(f))


def eval_run(path: Path, device: str, as_json: bool, best: bool = False) -> None:
    import torch

    from .domain import Domain, StepContext
    from .engine import resolve_device

    run_dir, ckpt, domain, cfg = _open_run(path, best)
    reg = registry()
    if type(domain).evaluate is Domain.evaluate:
        raise GenkitError(f"domain {domain.name!r} defines no evaluation")
    dev = resolve_device(device)
    data = domain.load_data(cfg.data, cfg.options, cache_dir=_cache_dir())
    G, D, weights = _build_from_checkpoint(domain, cfg, data, ckpt, dev, with_discriminator=True)
    step = int(ckpt.name.split("-")[-1]) if ckpt.name.startswith("step-") else 0
    ctx = StepContext(generator=G, discriminator=D, loss=reg.loss(cfg.train.loss), step=step,
                      total_steps=cfg.train.steps, batch_size=cfg.train.batch_size, device=dev,
                      rng=torch.Generator(device=dev).manual_seed(cfg.train.seed), options=cfg.options, data=data)
    with torch.no_grad():
        metrics = {k: float(v) for k, v in domain.evaluate(ctx).items()}
    result = {"run_dir": str(run_dir), "checkpoint": str(ckpt), "weights": weights.name, "step": step,
              "metrics": metrics}
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"{run_dir} @ {ckpt.name} ({weights.name})")
        for key, value in metrics.items():
            click.echo(f"{key}: {value:.6g}")


def create_cli() -> click.Group:
    @click.group(context_settings=CONTEXT)
    @click.version_option(__version__, "--version", "-V", prog_name="genkit")
    def cli():
        """genkit: adversarial generative training for images, audio and text.

        One training engine (generator vs discriminator, the losses of the literature), domains as
        plugins, one command line. Start with `genkit run image`.
        """

    @cli.group(cls=DomainGroup, action="run", context_settings=CONTEXT)
    def run():
        """Train a domain: genkit run DOMAIN [OPTIONS]."""

    @cli.group(cls=DomainGroup, action="info", context_settings=CONTEXT)
    def info():
        """Show the model a domain would train: parameter counts, sample shape, resolved config."""

    @cli.command(context_settings=CONTEXT)
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("-n", "n", type=int, default=100, show_default=True, help="Number of samples.")
    @click.option("--out", type=click.Path(path_type=Path), help="Folder to write (default: RUN/samples/sample-NNN).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent draw.")
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
    @click.option("--best", is_flag=True, help="Use the run's best checkpoint (checkpoints/best), not the latest.")
    @click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
    def sample(path, n, out, seed, device, best, as_json):
        """Generate N samples from a run directory or checkpoint folder (EMA weights when present)."""
        sample_run(path, n, out, seed, device, as_json, best)

    @cli.command(name="eval", context_settings=CONTEXT)
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
    @click.option("--best", is_flag=True, help="Use the run's best checkpoint (checkpoints/best), not the latest.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def eval_(path, device, best, as_json):
        """Score a run's latest checkpoint (or a checkpoint folder) with its domain's offline metrics."""
        eval_run(path, device, as_json, best)

    @cli.command(context_settings=CONTEXT)
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def plugins(as_json):
        """List the loaded plugins and the domains, losses and commands each registers."""
        reg = registry()
        rows = [vars(p) for p in reg.plugins.values()]
        if as_json:
            _echo_json(rows)
            return
        for p in rows:
            parts = [f"{k}: {', '.join(p[k])}" for k in ("domains", "losses", "commands") if p[k]]
            click.echo(f"{p['name']} {p['version']}" + (f"  ({'; '.join(parts)})" if parts else ""))

    # Plugins may add commands; remember which plugin added which.
    reg = registry()
    for impl in _plugins.pm.hook.genkit_register_commands.get_hookimpls():
        before = set(cli.commands)
        impl.function(cli=cli)
        added = sorted(set(cli.commands) - before)
        if impl.plugin_name in reg.plugins:
            reg.plugins[impl.plugin_name].commands = added
    return cli


def main(argv: list[str] | None = None) -> None:
    try:
        cli = create_cli()
        cli.main(args=argv, prog_name="genkit")
    except click.ClickException as exc:  # raised while building the CLI (e.g. two plugins claim one domain)
        if _debug():
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # an unexpected failure: one line, unless debugging
        if _debug():
            raise
        first = (str(exc).strip().splitlines() or [""])[0]
        click.echo(f"genkit: error: {exc.__class__.__name__}: {first} (set GENKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
