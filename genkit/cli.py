"""The ``genkit`` command line (click): a thin layer over the Python API (``genkit.train``, ``genkit.Run``).

``genkit --help`` imports no torch: commands import the engine only when they run. ``genkit run`` and
``genkit info`` get one sub-command per registered domain (the way datasette's ``publish`` is filled), whose
options are generated from the settings' declarations: the engine's (``genkit.config.TrainConfig``) and the
domain's ``Options``. Every error is one line on stderr: exit 2 for a bad value or flag, 1 for anything else.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click

from . import __version__, verbosity
from . import plugins as _plugins
from .config import TRAIN_SETTINGS, engine_defaults, resolve
from .errors import GenkitError, first_line, warn
from .options import AUTO, Setting, settings
from .plugins import registry

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _debug() -> bool:
    return os.environ.get("GENKIT_DEBUG", "") not in ("", "0")


def _rank() -> int:
    """This process's rank under torchrun (0 otherwise): rank 0 alone reports what every rank would say."""
    return int(os.environ.get("RANK", "0") or 0)


def _echo_json(obj: Any) -> None:
    from .run import dumps  # NaN / infinity as null: the output stays valid JSON

    click.echo(dumps(obj, indent=2, default=str))


class SettingType(click.ParamType):
    """A flag's value, parsed and checked by its setting's own rules (type, finiteness, range)."""

    def __init__(self, setting: Setting):
        self.setting = setting
        self.name = "auto|" + setting.kind.__name__ if setting.optional else setting.kind.__name__

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            raw = value
        elif self.setting.optional and value == "auto":
            raw = AUTO
        else:
            try:
                raw = self.setting.kind(value) if self.setting.kind is not str else value
            except ValueError:
                self.fail(f"{value!r} is not a valid {self.setting.kind.__name__}", param, ctx)
        try:
            return self.setting.convert(raw)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class SettingChoice(click.Choice):
    """A choice flag (completes in the shell) that yields the setting's typed value."""

    def __init__(self, setting: Setting, choices: list[Any]):
        super().__init__([str(c) for c in choices] + (["auto"] if setting.optional else []))
        self.typed = {str(c): c for c in choices}
        self.typed["auto"] = AUTO

    def convert(self, value, param, ctx):
        return self.typed[super().convert(str(value), param, ctx)]


def _shown(setting: Setting, value: Any) -> str:
    if value is None:
        return f"auto: {setting.spec.auto or 'decided at run time'}"
    if isinstance(value, bool):
        return "on" if value else "off"
    return repr(value) if value == "" else str(value)


def setting_option(setting: Setting, default: Any, choices: list[Any] | None = None) -> Any:
    """The click option of one setting; ``default`` is the effective default shown in ``--help``."""
    help_text = f"{setting.spec.help} [default: {_shown(setting, default)}]"
    if setting.kind is bool:
        return click.option(f"{setting.flag}/--no-{setting.flag[2:]}", setting.name, default=None, help=help_text)
    choices = choices if choices is not None else (list(setting.choices) if setting.choices else None)
    ptype = SettingChoice(setting, choices) if choices else SettingType(setting)
    return click.option(setting.flag, setting.name, type=ptype, default=None, help=help_text)


def _setting_decorators(domain) -> list:
    """The engine's settings (loss names from the loss registry) and the domain's options, defaults as resolved."""
    train_defaults, option_defaults = engine_defaults(domain)
    losses = sorted(registry().losses)
    out = [setting_option(s, train_defaults[s.name], losses if s.name == "loss" else None)
           for s in TRAIN_SETTINGS.values()]
    out += [setting_option(s, option_defaults[s.name]) for s in settings(domain.Options)]
    return out


def _common_decorators(domain) -> list:
    names = ", ".join(domain.data_names)
    try:
        default = domain.default_data(domain.Options())
    except Exception:  # a plugin's default_data needs more than the defaults: say nothing rather than fail
        default = ""
    takes = getattr(domain, "data_help", "") or "a folder or a file"
    data_help = f"Training data: {takes}" + (f", or a built-in name: {names}" if names else "") + \
        (f" [default: {default}]" if default else "")
    return [
        click.option("--config", "config_file", type=click.Path(path_type=Path),
                     help="Config file (TOML), e.g. a run's config.toml."),
        click.option("--preset", type=click.Choice(sorted(domain.all_presets())), help="Named bundle of settings."),
        click.option("--data", type=str, help=data_help),
    ]


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
        return with_verbosity(make_run_command(domains[name]) if self.action == "run" else
                              make_info_command(domains[name]))

    def resolve_command(self, ctx, args):
        name = args[0] if args else None
        if name is not None and not name.startswith("-") and name not in registry().domains:
            from .plugins import unknown_domain

            raise GenkitError(unknown_domain(name, registry().domains))
        return super().resolve_command(ctx, args)


VERBOSITY_FLAGS = (
    ("quiet", ("--quiet", "-q"), "No progress bar, warnings or notes on stderr (errors still print)."),
    ("verbose", ("--verbose", "-v"), "More detail on stderr: the resolved config and device, the checkpoint used, "
                                     "timing."),
)


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    """-q / -v, at the root (``genkit -q run image``) or on a command: one state for the whole invocation."""
    if not value:
        return
    wanted = verbosity.QUIET if param.name == "quiet" else verbosity.VERBOSE
    meta = ctx.find_root().meta
    if meta.get("genkit.verbosity", wanted) != wanted:
        raise click.UsageError("--quiet and --verbose exclude each other", ctx)
    meta["genkit.verbosity"] = wanted
    verbosity.set_level(wanted)


def with_verbosity(cmd: click.Command) -> click.Command:
    """Add -q/--quiet and -v/--verbose to ``cmd`` and its sub-commands (a plugin's too), unless it has such a flag."""
    taken = {opt for p in cmd.params for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
    for name, flags, text in VERBOSITY_FLAGS:
        if not taken & set(flags):
            cmd.params.append(click.Option([name, *flags], is_flag=True, expose_value=False, callback=_set_verbosity,
                                           help=text))
    for sub in getattr(cmd, "commands", {}).values():
        with_verbosity(sub)
    return cmd


def _build(name: str, callback, decorators: list, **kwargs) -> click.Command:
    cmd = click.Command(name, callback=callback, context_settings=CONTEXT, **kwargs)
    for deco in decorators:  # on a Command, click.option appends: keep the listed order
        cmd = deco(cmd)
    return cmd


def make_run_command(domain) -> click.Command:
    def callback(**params):
        run_domain(domain, params)

    decorators = _common_decorators(domain) + [
        click.option("--out", type=click.Path(path_type=Path), help="Run directory to create (default: runs/DOMAIN-TIME)."),
        click.option("--nproc", type=click.IntRange(min=1), default=None,
                     help="Train data-parallel in N local processes started by torchrun (torch.distributed.run); "
                          "--batch-size stays the global batch. See docs/distributed.md."),
        click.option("--resume", type=click.Path(path_type=Path),
                     help="Continue the run in this directory from its latest checkpoint."),
        click.option("--json", "as_json", is_flag=True, help="Print summary.json to stdout at the end."),
    ] + _setting_decorators(domain)  # -q/--quiet and -v/--verbose: with_verbosity, as on every command
    return _build(domain.name, callback, decorators,
                  help=f"Train the {domain.name} domain: {domain.summary}" +
                       (f"\n\nPaper: {domain.paper}" if domain.paper else ""),
                  short_help=domain.summary)


def make_info_command(domain) -> click.Command:
    def callback(config_file, preset, data, as_json, **params):
        info_domain(domain, config_file, preset, data, as_json, params)

    decorators = _common_decorators(domain) + [
        click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
    ] + _setting_decorators(domain)
    return _build(domain.name, callback, decorators,
                  help=f"Describe the {domain.name} model that `genkit run {domain.name}` would train.",
                  short_help=domain.summary)


def run_domain(domain, params: dict[str, Any]) -> None:
    from .api import train
    from .engine import Interrupted

    config_file, resume, out = params.pop("config_file"), params.pop("resume"), params.pop("out")
    nproc = params.pop("nproc")
    from .distributed import launched

    if nproc and nproc > 1 and not launched():  # this process only launches the workers, each a `genkit run`
        from .distributed import launch, strip_nproc
        from .run import Run

        argv = strip_nproc(sys.argv[1:])
        if out is None and resume is None:  # every worker must name the same folder
            argv += ["--out", str(Run.new_path(domain.name))]
        sys.exit(launch(nproc, argv))
    as_json, quiet = params.pop("as_json"), verbosity.quiet()
    preset, data = params.pop("preset"), params.pop("data")
    try:
        run = train(domain, out, preset=preset, data=data, config=config_file, resume=resume, quiet=quiet,
                    _source="command line", **{k: v for k, v in params.items() if v is not None})
    except Interrupted as stop:
        if _rank() != 0:  # under torchrun: rank 0 says where the run stopped
            sys.exit(128 + stop.signum)
        where = f"at step {stop.step}; checkpoint {stop.checkpoint}" if stop.checkpoint else \
            "during pre-training, which restarts on resume; no checkpoint"
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        again = f" --nproc {world}" if world > 1 else ""
        click.echo(f"genkit: interrupted {where}; continue with: genkit run {domain.name}{again} --resume {stop.run_dir}",
                   err=True)
        sys.exit(128 + stop.signum)
    if _rank() != 0:  # under torchrun: rank 0 reports
        return
    summary = run.read_summary()
    verbosity.note(f"{summary.get('status')}: {summary.get('steps')} steps, {summary.get('seconds')} s of training "
                   f"({summary.get('seconds_per_step')} s/step); checkpoint {summary.get('checkpoint')}")
    if as_json:
        _echo_json(summary)
    else:
        for path in summary.get("samples", []):
            click.echo(path)


def info_domain(domain, config_file, preset, data_spec, as_json, params) -> None:
    from .run import cache_dir

    reg = registry()
    cfg = resolve(domain, reg.losses, preset=preset, data=data_spec, file=config_file,
                  flags={k: v for k, v in params.items() if v is not None})
    import torch

    from .engine import count_parameters

    data = domain.load_data(cfg.data, cfg.options, cache_dir=cache_dir())
    cfg = cfg.replace(options=domain.resolve_options(cfg.options, data))
    torch.manual_seed(cfg.train.seed)
    from .crossmodal import build_models

    G, D = build_models(domain, cfg, data)
    info = {
        "domain": domain.name,
        "summary": domain.summary,
        "paper": domain.paper,
        "parameters": {"generator": count_parameters(G), "discriminator": count_parameters(D)},
        "sample_shape": list(domain.sample_shape(cfg.options, data)),
        "data": {"spec": cfg.data, "source": data.source, "examples": len(data.train) if data.train is not None else None,
                 "conditional": data.conditional, "num_classes": data.num_classes, "built_in": list(domain.data_names)},
        "config": cfg.to_dict(),
        "settings": describe_settings(domain),
        "phases": [{"name": p.name, "help": p.help} for p in domain.phases],
        "evaluates": domain.evaluates,
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


def describe_settings(domain) -> dict[str, list[dict[str, Any]]]:
    """Every setting of a run of ``domain`` as JSON, with the domain's effective defaults and the loss names."""
    train_defaults, option_defaults = engine_defaults(domain)
    train = []
    for s in TRAIN_SETTINGS.values():
        row = {**s.describe(), "default": train_defaults[s.name]}
        if s.name == "loss":
            row["choices"] = sorted(registry().losses)
        train.append(row)
    return {"train": train,
            domain.name: [{**s.describe(), "default": option_defaults[s.name]} for s in settings(domain.Options)]}


def sample_run(path: Path, n: int, out: Path | None, seed: int, device: str, as_json: bool, best: bool = False,
               condition: str | None = None, seeds: str | None = None, interpolate: int | None = None) -> None:
    from .run import Run
    from .sampling import parse_seeds

    seed_list = parse_seeds(seeds) if seeds is not None else None  # a bad spec fails before anything loads
    run = Run.open(path)
    ckpt = run.checkpoint(best)
    verbosity.note(f"sampling {run.root} ({run.domain.name}) from checkpoint {ckpt}, device {device}, seed {seed}")
    files = run.write_samples(n, out, seed=seed, best=best, device=device, condition=condition, seeds=seed_list,
                              interpolate=interpolate)
    if as_json:
        walk = seed_list if seed_list is not None or interpolate is None else [0, 1]
        _echo_json({"run_dir": str(run.root), "checkpoint": str(ckpt), "weights": run.generator_weights(ckpt).name,
                    "seed": seed, "seeds": walk, "interpolate": interpolate, "condition": condition,
                    "out": str(files[0].parent) if files else str(out),
                    "files": [str(f) for f in files]})
    else:
        for f in files:
            click.echo(str(f))


def eval_run(path: Path, device: str, as_json: bool, best: bool = False) -> None:
    from .run import Run

    run = Run.open(path)
    verbosity.note(f"evaluating {run.root} ({run.domain.name}) at checkpoint {run.checkpoint(best)}, device {device}")
    loaded, metrics = run.evaluate_checkpoint(best, device)
    result = {"run_dir": str(run.root), "checkpoint": str(loaded.checkpoint), "weights": loaded.weights.name,
              "step": loaded.step, "metrics": metrics}
    if as_json:
        _echo_json(result)
    else:
        click.echo(f"{run.root} @ {loaded.checkpoint.name} ({loaded.weights.name})")
        for key, value in metrics.items():
            click.echo(f"{key}: {value:.6g}")


def provenance_file(file: Path, run_path: Path | None, as_json: bool) -> None:
    """Print the provenance record of ``file``; with ``run_path``, verify it against that run (exit 1 if not)."""
    from . import provenance

    record = provenance.read(file)
    verified = provenance.verify(record, run_path) if run_path is not None else None
    if as_json:
        _echo_json({"file": str(file), "provenance": record, "verified": verified})
        return
    for key, value in record.items():
        click.echo(f"{key}: {value}")
    if verified is not None:
        click.echo(f"verified: the generator weights of {verified['weights']} made this file "
                   f"(run {verified['run_id']})")


class RootGroup(click.Group):
    """The ``genkit`` group: every error is one line on stderr (usage errors exit 2), Ctrl-C exits 130."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return self._main(args, prog_name, complete_var, standalone_mode, **extra)
        finally:  # -q / -v hold for one command: an in-process caller's next command starts at the normal level
            verbosity.set_level(verbosity.NORMAL)

    def _main(self, args, prog_name, complete_var, standalone_mode, **extra):
        start = time.perf_counter()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"genkit: error: {exc.format_message()}{hint}", err=True)
            sys.exit(exc.exit_code)
        except GenkitError as exc:  # expected: one line even with GENKIT_DEBUG
            if exc.exit_code != 2 or _rank() == 0:  # a bad value: rank 0 says it once
                exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"genkit: error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("genkit: interrupted", err=True)
            sys.exit(130)
        except Exception as exc:  # an unexpected failure: one line, unless debugging
            if _debug():
                raise
            first = first_line(exc)
            click.echo(f"genkit: error: {exc.__class__.__name__}: {first} (set GENKIT_DEBUG=1 for the traceback)",
                       err=True)
            sys.exit(1)
        verbosity.note(f"done in {time.perf_counter() - start:.2f} s")
        sys.exit(rv if isinstance(rv, int) else 0)


def create_cli() -> click.Group:
    @click.group(name="genkit", cls=RootGroup, context_settings=CONTEXT)
    @click.version_option(__version__, "--version", "-V", prog_name="genkit")
    def cli():
        """genkit: adversarial generative training for images, audio and text.

        One training engine (generator vs discriminator, the losses of the literature), domains as
        plugins, one command line. Start with `genkit run image`.

        \b
        Environment variables:
          GENKIT_CACHE         where data sets, reference classifiers and converted models are kept
                               (default ~/.cache/genkit)
          GENKIT_LOAD_PLUGINS  comma-separated third-party plugins to load ('' = none; built-ins always load)
          GENKIT_DEBUG=1       show the traceback of an unexpected error
          GENKIT_PROGRESS=0    no progress bar (without a terminal genkit prints one line per --log-every,
                               and about 20 for a pre-training phase)
          GENKIT_DATA_CACHE=0  decode data folders on every run (default: once, cached under GENKIT_CACHE)
          GENKIT_COMPILE_BACKEND  torch.compile backend for --compile (default inductor)
          OMP_NUM_THREADS      torch's CPU threads (--threads N sets them for a run)

        \b
        Shell completion (bash; zsh and fish: zsh_source, fish_source):
          eval "$(_GENKIT_COMPLETE=bash_source genkit)"
        """

    @cli.group(cls=DomainGroup, action="run", context_settings=CONTEXT)
    def run():
        """Train a domain: genkit run DOMAIN [OPTIONS]."""

    @cli.group(cls=DomainGroup, action="info", context_settings=CONTEXT)
    def info():
        """Show the model a domain would train: parameter counts, sample shape, resolved config."""

    @cli.command(context_settings=CONTEXT)
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("-n", "n", type=click.IntRange(min=1), default=100, show_default=True, help="Number of samples.")
    @click.option("--out", type=click.Path(path_type=Path), help="Folder to write (default: RUN/samples/sample-NNN).")
    @click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent draw.")
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
    @click.option("--best", is_flag=True, help="Use the run's best checkpoint (checkpoints/best), not the latest.")
    @click.option("--condition", "condition", default=None,
                  help="A cross-modal run's condition, in the source domain's terms: a string (text), a WAV file "
                       "(audio) or an image file (image); every sample is generated from it.")
    @click.option("--seeds", "seeds", default=None, metavar="SPEC",
                  help="One sample per seed instead of -n: 0-15, 3, 1,5,9 or 0-3,10. Files seed-0007.png..., each "
                       "the same whatever seeds come with it; in a conditional run seed S has class S % "
                       "num_classes. Not with -n or --seed.")
    @click.option("--interpolate", "interpolate", type=click.IntRange(min=0), default=None, metavar="K",
                  help="A latent walk with K frames between each pair of --seeds (default: seeds 0,1), joined into "
                       "interpolation.png (a strip), interpolation.wav (0.25 s of silence between clips) or "
                       "interpolation.txt (one sample per line); the frames are kept in frames/.")
    @click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
    @click.pass_context
    def sample(ctx, path, n, out, seed, device, best, condition, seeds, interpolate, as_json):
        """Generate N samples from a run directory or checkpoint folder (EMA weights when present).

        Every file written carries its provenance (see `genkit provenance`)."""
        from click.core import ParameterSource

        if seeds is not None or interpolate is not None:
            for name, flag in (("n", "-n"), ("seed", "--seed")):
                if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE:
                    what = "--seeds" if seeds is not None else "--interpolate"
                    raise click.UsageError(f"{flag} and {what} conflict: {what} draws one sample per seed "
                                           "(give the seeds with --seeds)", ctx)
        sample_run(path, n, out, seed, device, as_json, best, condition, seeds, interpolate)

    @cli.command(name="eval", context_settings=CONTEXT)
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or mps.")
    @click.option("--best", is_flag=True, help="Use the run's best checkpoint (checkpoints/best), not the latest.")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def eval_(path, device, best, as_json):
        """Score a run's latest checkpoint (or a checkpoint folder) with its domain's offline metrics."""
        eval_run(path, device, as_json, best)

    @cli.command(name="provenance", context_settings=CONTEXT)
    @click.argument("file", type=click.Path(path_type=Path))
    @click.option("--run", "run_path", type=click.Path(path_type=Path),
                  help="Verify against this run: its checkpoint of the record's step must hold the generator "
                       "weights that made the file, and its run id must match (exit 1 if not).")
    @click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
    def provenance_(file, run_path, as_json):
        """Show the provenance a generated file carries (PNG text chunks, a WAV's INFO chunk, or a
        FILE.provenance.json sidecar): genkit version, domain, run id, step, seed, generator weights' SHA-256."""
        provenance_file(file, run_path, as_json)

    @cli.command(name="report", context_settings=CONTEXT)
    @click.argument("path", type=click.Path(path_type=Path))
    @click.option("--out", type=click.Path(path_type=Path),
                  help="HTML file to write (default: RUN/report.html); an existing file is replaced only if it is "
                       "a genkit report.")
    @click.option("--device", default="cpu", show_default=True,
                  help="Where a conditional run's per-class samples are generated: auto, cpu, cuda or mps.")
    @click.option("--json", "as_json", is_flag=True, help='Print {"report": PATH} as JSON.')
    def report(path, out, device, as_json):
        """Write one self-contained HTML page about a run: config, curves, samples, evaluation, provenance."""
        from .report import write_report

        written = write_report(path, out, device=device)
        if as_json:
            _echo_json({"report": str(written)})
        else:
            click.echo(str(written))

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

    @cli.command(name="new-plugin", context_settings=CONTEXT)
    @click.argument("name")
    @click.option("--dir", "parent", type=click.Path(path_type=Path), default=Path("."), show_default=True,
                  help="Folder in which to create genkit-NAME/.")
    @click.option("--json", "as_json", is_flag=True, help="Print the files written as JSON.")
    def new_plugin(name, parent, as_json):
        """Write an installable plugin package genkit-NAME/ (one domain, tests using genkit.testing, a README)."""
        from .scaffold import new_plugin as write

        root = write(name, parent)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        if as_json:
            _echo_json({"folder": str(root), "files": files})
            return
        click.echo(str(root))
        click.echo(f"genkit: next: pip install -e '{root}[test]' && genkit run {name} && pytest {root}", err=True)

    # Plugins may add commands; remember which plugin added which. A plugin may not replace a command.
    reg = registry()
    owners = {name: "genkit" for name in cli.commands}
    for impl in _plugins.pm.hook.genkit_register_commands.get_hookimpls():
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except Exception as exc:
            cli.commands.clear()
            cli.commands.update(before)
            first = first_line(exc)
            warn(f"plugin {impl.plugin_name!r}: its genkit_register_commands hook failed ({exc.__class__.__name__}: "
                 f"{first}); its commands were skipped ({_plugins.RECOVERY})")
            continue
        for name, cmd in list(cli.commands.items()):
            if name in before and cmd is not before[name]:
                cli.commands[name] = before[name]
                held = "genkit" if owners[name] == "genkit" else f"plugin {owners[name]!r}"
                warn(f"plugin {impl.plugin_name!r}: the command {name!r} is already registered by {held}; "
                     f"skipped it ({_plugins.RECOVERY})")
        added = sorted(set(cli.commands) - set(before))
        owners.update(dict.fromkeys(added, impl.plugin_name))
        if impl.plugin_name in reg.plugins:
            reg.plugins[impl.plugin_name].commands = added
    with_verbosity(cli)  # -q / -v at the root and on every command, a plugin's included
    return cli


def main(argv: list[str] | None = None) -> None:
    words = sys.argv[1:] if argv is None else list(argv)
    words = words[:words.index("--")] if "--" in words else words
    if {"-q", "--quiet"} & set(words):  # also silences the warnings of loading plugins, before the command is parsed
        verbosity.set_level(verbosity.QUIET)
    try:
        cli = create_cli()
    except KeyboardInterrupt:  # Ctrl-C while plugins (and torch) load: the documented 130, no traceback
        click.echo("genkit: interrupted", err=True)
        sys.exit(130)
    except GenkitError as exc:  # raised while building the CLI (e.g. two plugins claim one domain)
        if _debug():
            raise
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:
        if _debug():
            raise
        first = first_line(exc)
        click.echo(f"genkit: error: {exc.__class__.__name__}: {first} (set GENKIT_DEBUG=1 for the traceback)", err=True)
        sys.exit(1)
    cli.main(args=argv, prog_name="genkit")
