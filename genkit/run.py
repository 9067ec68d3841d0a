"""``genkit.Run``: the one owner of a run directory (docs/run-directory.md).

Layout::

    RUN/config.toml          the resolved config (genkit.config)
    RUN/data.json            what the data is (Domain.save_data_meta)
    RUN/metrics.jsonl        one JSON object per logged step
    RUN/summary.json         written at the end (or on a signal)
    RUN/samples/             snapshots, and genkit sample's folders
    RUN/checkpoints/step-NNNNNNNN/   checkpoint folders (genkit.checkpoint)
    RUN/checkpoints/latest   text: the newest checkpoint's folder name
    RUN/checkpoints/best     text: the folder name of the best evaluation (Domain.best_metric)
    RUN/.lock                held (flock) by the process training the run; released by the kernel when it dies
    RUN/run_id               text: the run's id (random hex, written when the run is created; genkit.provenance)

A ``Run`` also loads a trained generator: ``Run.open(path).sample(16)`` is the Python form of ``genkit sample``.
Importing this module imports no torch.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from .errors import GenkitError

CONFIG, DATA, METRICS, SUMMARY, LOCK = "config.toml", "data.json", "metrics.jsonl", "summary.json", ".lock"
SAMPLES, CHECKPOINTS, LATEST, BEST = "samples", "checkpoints", "latest", "best"
RUN_ID = "run_id"


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: metrics.jsonl and summary.json stay valid JSON
    (``json.dumps`` would write the bare ``NaN``, which JSON does not have)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    return json.dumps(finite_json(value), allow_nan=False, **kwargs)


def cache_dir() -> Path:
    """Where domains keep downloads and derived files (``GENKIT_CACHE``, default ``~/.cache/genkit``)."""
    import os

    return Path(os.environ.get("GENKIT_CACHE", Path.home() / ".cache" / "genkit"))


class Run:
    """A run directory. ``Run(path)`` names one; ``Run.open(path)`` opens an existing run (or a checkpoint folder)."""

    def __init__(self, root: Path | str, checkpoint: Path | None = None):
        self.root = Path(root)
        self._pinned = Path(checkpoint) if checkpoint is not None else None  # opened as a checkpoint folder
        self._domain: Any = None
        self._config: Any = None

    def __repr__(self) -> str:
        return f"Run({str(self.root)!r})"

    # -- layout -------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.root / CONFIG

    @property
    def data_meta_path(self) -> Path:
        return self.root / DATA

    @property
    def metrics_path(self) -> Path:
        return self.root / METRICS

    @property
    def summary_path(self) -> Path:
        return self.root / SUMMARY

    @property
    def samples_dir(self) -> Path:
        return self.root / SAMPLES

    @property
    def checkpoints_dir(self) -> Path:
        return self.root / CHECKPOINTS

    def exists(self) -> bool:
        return self.config_path.is_file()

    @property
    def run_id(self) -> str:
        """The run's stable id (``RUN/run_id``), named by the provenance of every file it generates. A run written
        before genkit had run ids has no such file: its id is its folder's name (nothing is written into it)."""
        try:
            found = (self.root / RUN_ID).read_text(encoding="utf-8").strip()
        except OSError:
            found = ""
        return found or self.root.resolve().name

    def write_run_id(self) -> str:
        """Give a new run its id (a uuid4 hex in ``RUN/run_id``) unless it has one; returns the id."""
        if not (self.root / RUN_ID).is_file():
            import uuid

            from .files import atomic_write_text

            atomic_write_text(self.root / RUN_ID, uuid.uuid4().hex + "\n")
        return self.run_id

    # -- creating ------------------------------------------------------------------------------------
    @staticmethod
    def new_path(domain_name: str, parent: Path | str = "runs") -> Path:
        """``runs/DOMAIN-YYYYmmdd-HHMMSS`` (with a suffix when taken)."""
        base = Path(parent) / f"{domain_name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, i = base, 1
        while path.exists():
            i += 1
            path = base.with_name(f"{base.name}-{i}")
        return path

    def check_new(self, flag: str = "--out", what: str = "run") -> None:
        """A new run (or ``what`` else: "samples") is written only into a new or empty folder: never over a user's
        files or another run."""
        if self.root.exists() and not self.root.is_dir():
            raise GenkitError(f"{flag} {self.root} exists and is not a folder")
        if self.root.is_dir() and any(p.name != LOCK for p in self.root.iterdir()):
            if self.exists() and what != "run":
                raise GenkitError(f"{flag} {self.root} is a run folder; write the {what} elsewhere (without {flag} "
                                  f"they go to {self.root / 'samples'}/sample-NNN)")
            if self.exists():
                raise GenkitError(f"{flag} {self.root} already holds a run; continue it with --resume {self.root}, "
                                  "or choose another --out")
            raise GenkitError(f"{flag} {self.root} is not empty; genkit writes runs only into a new or empty folder")

    def lock(self, flag: str = "--out") -> Any:
        """Take the run's lock (``RUN/.lock``) for this process, or raise ``GenkitError`` naming the process holding
        it. The lock is an advisory ``flock``: the kernel releases it when its process ends, however it ends, so a
        crashed or killed run never leaves it stuck. Returns the open lock file (keep it; ``unlock`` releases it).
        """
        import os

        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        handle = open(path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no flock; runs are not protected there
            return handle
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise GenkitError(f"{flag} {self.root}: the run is in use by {holder}; wait for it to finish or stop it "
                              "(one process per run folder)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        return handle

    @staticmethod
    def unlock(handle: Any) -> None:
        if handle is not None and not handle.closed:
            handle.close()  # closing the file releases the flock

    # -- opening ------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str) -> Run:
        """An existing run directory, or a checkpoint folder inside one (then that checkpoint is the one used)."""
        path = Path(path)
        if not path.exists():
            raise GenkitError(f"no such run or checkpoint: {path}")
        from .checkpoint import STATE_FILE

        if (path / STATE_FILE).is_file():
            run = cls(path.resolve().parent.parent, checkpoint=path)
        else:
            run = cls(path)
        if not run.exists():
            raise GenkitError(f"{run.root} holds no genkit run (no {CONFIG})")
        return run

    @property
    def domain(self) -> Any:
        """The registered domain this run was trained with."""
        if self._domain is None:
            from .config import read_toml
            from .plugins import registry

            self._domain = registry().domain(read_toml(self.config_path).get("domain", ""))
        return self._domain

    @property
    def config(self) -> Any:
        """The run's resolved ``RunConfig`` (a config saved by an earlier genkit is upgraded on the way in)."""
        if self._config is None:
            from .config import from_saved, read_toml

            meta = self.read_data_meta(required=False)
            self._config = from_saved(read_toml(self.config_path), self.domain, str(self.config_path), meta)
        return self._config

    def write_config(self, config: Any) -> None:
        from .files import atomic_write_text

        atomic_write_text(self.config_path, config.to_toml())
        self._config = config

    def read_data_meta(self, required: bool = True) -> dict[str, Any]:
        path = self.data_meta_path
        if not path.is_file():
            if required:
                raise GenkitError(f"{self.root} has no {DATA}; was it written by genkit run?")
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise GenkitError(f"{path}: not valid JSON ({exc})") from None

    def write_data_meta(self, meta: dict[str, Any]) -> None:
        from .files import atomic_write_text

        atomic_write_text(self.data_meta_path, json.dumps(meta, indent=2) + "\n")

    def read_summary(self) -> dict[str, Any]:
        try:
            return json.loads(self.summary_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def write_summary(self, summary: dict[str, Any]) -> None:
        from .files import atomic_write_text

        atomic_write_text(self.summary_path, dumps(summary, indent=2) + "\n")

    def metrics(self) -> list[dict[str, Any]]:
        """The records of ``metrics.jsonl`` (unreadable lines skipped)."""
        if not self.metrics_path.is_file():
            return []
        out = []
        for line in self.metrics_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def log(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(dumps(record) + "\n")

    def truncate_metrics(self, step: int) -> list[dict[str, Any]]:
        """Forget records logged after ``step`` (a resumed run does not log them twice); return the rest."""
        kept = [r for r in self.metrics() if r.get("step", 0) <= step]
        if self.metrics_path.is_file():
            from .files import atomic_write_text

            atomic_write_text(self.metrics_path, "".join(dumps(r) + "\n" for r in kept))
        return kept

    # -- checkpoints --------------------------------------------------------------------------------
    def _pointer(self, name: str) -> Path | None:
        pointer = self.checkpoints_dir / name
        if not pointer.is_file():
            return None
        return self.checkpoints_dir / pointer.read_text(encoding="utf-8").strip()

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        from .checkpoint import STATE_FILE

        candidate = self._pointer(LATEST)
        if candidate is not None and (candidate / STATE_FILE).is_file():
            return candidate
        root = self.checkpoints_dir
        found = sorted(p for p in root.glob("step-*") if (p / STATE_FILE).is_file()) if root.is_dir() else []
        return found[-1] if found else None

    def best_checkpoint(self) -> Path | None:
        """The checkpoint ``checkpoints/best`` names, or None when there is none."""
        from .checkpoint import STATE_FILE

        ckpt = self._pointer(BEST)
        if ckpt is not None and not (ckpt / STATE_FILE).is_file():
            raise GenkitError(f"{self.checkpoints_dir / BEST} names {ckpt.name}, which is missing")
        return ckpt

    def checkpoint(self, best: bool = False) -> Path:
        """The checkpoint to load: the pinned one, the best (``best``) or the latest."""
        if self._pinned is not None:
            return self._pinned
        if best:
            ckpt = self.best_checkpoint()
            if ckpt is None:
                raise GenkitError(f"{self.root} has no best checkpoint (its domain defines no best_metric, "
                                  "or no evaluation ran)")
            return ckpt
        ckpt = self.latest_checkpoint()
        if ckpt is None:
            raise GenkitError(f"{self.root} holds no checkpoint (nothing under {self.checkpoints_dir})")
        return ckpt

    def save_checkpoint(self, step: int, models: dict[str, Any], state: dict[str, Any], keep: int = 0) -> Path:
        """Write the checkpoint of ``step``, point ``latest`` at it, and prune to the newest ``keep`` (0 = all)."""
        from .checkpoint import save_checkpoint
        from .files import atomic_write_text

        ckpt = save_checkpoint(self.checkpoints_dir, step, models, state)
        atomic_write_text(self.checkpoints_dir / LATEST, ckpt.name + "\n")
        self.prune(keep)
        return ckpt

    def mark_best(self, ckpt: Path) -> None:
        from .files import atomic_write_text

        atomic_write_text(self.checkpoints_dir / BEST, Path(ckpt).name + "\n")

    def forget_best(self) -> None:
        (self.checkpoints_dir / BEST).unlink(missing_ok=True)

    def prune(self, keep: int) -> list[Path]:
        """Delete all but the newest ``keep`` checkpoints, never the one ``best`` or ``latest`` names."""
        root = self.checkpoints_dir
        if keep <= 0 or not root.is_dir():
            return []
        protected = {p.name for p in (self._pointer(LATEST), self._pointer(BEST)) if p is not None}
        found = sorted(p for p in root.glob("step-*") if p.is_dir())
        removed = [p for p in found[:-keep] if p.name not in protected]
        for p in removed:
            shutil.rmtree(p)
        return removed

    # -- a trained generator ------------------------------------------------------------------------
    def load(self, best: bool = False, device: str = "auto", with_discriminator: bool = False,
             data: Any = None) -> Loaded:
        """The run's networks with a checkpoint's weights (the EMA generator when there is one), in eval mode,
        and its ``Data`` (described by ``data.json`` unless ``data`` is given) with the domain state restored."""
        import torch

        from .checkpoint import MODEL_FILES, load_state, load_weights
        from .engine import resolve_device

        domain, cfg = self.domain, self.config
        ckpt = self.checkpoint(best)
        dev = resolve_device(device)
        if data is None:
            data = domain.load_data_meta(self.read_data_meta(), self.root)
        state = load_state(ckpt)
        if "domain_state" in state:
            domain.load_state_dict(data, state["domain_state"])
        else:  # written by genkit 0.1
            domain.upgrade_state(data, ckpt, cfg.options)
        torch.manual_seed(cfg.train.seed)
        from .crossmodal import build_models

        G, D = build_models(domain, cfg, data)
        weights = self.generator_weights(ckpt)
        ignore = domain.legacy_weight_keys
        load_weights(G, weights, dev, ignore, state)
        G.to(dev).eval()
        if cfg.train.standing_stats:  # the statistics the run's own snapshots and evaluations used
            from .sampling import standing_statistics

            G = standing_statistics(domain, G, cfg.options, data, cfg.train.standing_stats, cfg.train.batch_size,
                                    device=dev)
        sampler_uses_d = domain.sampler_uses_discriminator(cfg.options)
        if with_discriminator or sampler_uses_d:
            load_weights(D, ckpt / MODEL_FILES["discriminator"], dev, ignore, state)
            D.to(dev).eval()
        G = domain.sampler(G, D if sampler_uses_d else None, cfg.options)
        step = int(state.get("step", 0))
        return Loaded(run=self, checkpoint=ckpt, weights=weights, generator=G, discriminator=D, data=data,
                      device=dev, step=step)

    def sample(self, n: int, seed: int = 0, best: bool = False, device: str = "auto") -> Any:
        """``n`` samples in the domain's tensor form (on the CPU); writes nothing."""
        if n <= 0:
            raise GenkitError(f"n must be positive, got {n}")
        loaded = self.load(best=best, device=device)
        samples, _ = loaded.generate(n, seed)
        return samples

    def write_samples(self, n: int, out_dir: Path | str | None = None, seed: int = 0, best: bool = False,
                      device: str = "auto", condition: str | None = None, *, seeds: list[int] | str | None = None,
                      interpolate: int | None = None) -> list[Path]:
        """Write ``n`` samples, one file each, into ``out_dir`` (default ``RUN/samples/sample-NNN``; a given folder
        must be new or empty). Returns the files. ``condition`` (a cross-modal run's): every sample is generated
        from that one value of the source domain (a WAV file, an image file or a string).

        ``seeds`` (a list, or a spec such as ``"0-15"`` or ``"1,5,9"``): one sample per seed instead, each drawn on
        its own so that a seed's file is the same whichever seeds come with it (``seed-0007.png``; ``n`` and
        ``seed`` are not used). ``interpolate`` K: a latent walk through ``seeds`` (default 0 and 1) with K frames
        between each pair, joined into ``interpolation.png`` / ``.wav`` / ``.txt``, the frames in ``frames/``.
        Every sample file carries its provenance (``genkit.provenance``)."""
        from . import provenance, sampling

        if isinstance(seeds, str):
            seeds = sampling.parse_seeds(seeds)
        if interpolate is not None:
            seeds = list(seeds) if seeds is not None else [0, 1]
            if interpolate < 0 or len(seeds) < 2:
                raise GenkitError("--interpolate K needs K >= 0 and at least two seeds to walk between "
                                  f"(got K = {interpolate}, seeds {seeds})", exit_code=2)
        elif seeds is not None and len(set(seeds)) != len(seeds):
            twice = next(s for s in seeds if seeds.count(s) > 1)
            raise GenkitError(f"--seeds: seed {twice} is listed twice", exit_code=2)
        elif seeds is None and n <= 0:
            raise GenkitError(f"n must be positive, got {n}")
        if seeds is not None and not seeds:
            raise GenkitError("--seeds: no seeds given", exit_code=2)
        if out_dir is None:
            i = 1
            while (self.samples_dir / f"sample-{i:03d}").exists():
                i += 1
            out = self.samples_dir / f"sample-{i:03d}"
        else:
            out = Path(out_dir)
            Run(out).check_new(what="samples")
        loaded = self.load(best=best, device=device)
        if condition is not None:
            from .crossmodal import use_condition

            use_condition(loaded.generator, loaded.data, condition)
        out.mkdir(parents=True, exist_ok=True)
        dom, opts, extra = self.domain, self.config.options, ({"condition": condition} if condition is not None else {})
        if interpolate is not None and seeds is not None:
            samples, cond = sampling.generate_walk(dom, loaded.generator, seeds, interpolate, opts, loaded.data,
                                                   device=loaded.device)
            joined, frames = sampling.write_walk_files(dom, samples, cond if condition is None else None,
                                                       len(samples), out, opts, loaded.data)
            files = joined + frames
            provenance.stamp(files, provenance.loaded_record(loaded, seeds, interpolate=interpolate, **extra))
        elif seeds is not None:
            samples, cond = sampling.generate_seeds(dom, loaded.generator, seeds, opts, loaded.data,
                                                    device=loaded.device)
            pairs = sampling.write_seed_files(dom, samples, cond if condition is None else None, seeds, out, opts,
                                              loaded.data)
            base = provenance.loaded_record(loaded, None, **extra)
            for f, s in pairs:
                provenance.stamp([f], {**base, "seed": s})
            files = [f for f, _ in pairs]
        else:
            samples, cond = loaded.generate(n, seed)
            files = dom.write_samples(samples, cond if condition is None else None, out, opts, loaded.data)
            provenance.stamp(files, provenance.loaded_record(loaded, seed, **extra))
        if condition is None:
            return files
        from .files import atomic_write_text

        note = out / "condition.json"  # what every sample was generated from (the class index does not apply)
        atomic_write_text(note, json.dumps({"condition": condition, "source": self.config.train.condition}) + "\n")
        return [*files, note]

    def evaluate(self, best: bool = False, device: str = "auto") -> dict[str, float]:
        """The domain's offline metrics of a checkpoint (the latest, or the best); loads the run's data."""
        return self.evaluate_checkpoint(best, device)[1]

    def evaluate_checkpoint(self, best: bool = False, device: str = "auto") -> tuple[Loaded, dict[str, float]]:
        """``evaluate``, also returning what was loaded (which checkpoint, which weights, its step)."""
        domain, cfg = self.domain, self.config
        if not domain.evaluates:
            raise GenkitError(f"domain {domain.name!r} defines no evaluation")
        data = domain.load_data(cfg.data, cfg.options, cache_dir=cache_dir())
        loaded = self.load(best=best, device=device, with_discriminator=True, data=data)
        return loaded, loaded.evaluate()

    @staticmethod
    def generator_weights(ckpt: Path) -> Path:
        """The weights a checkpoint samples with: the EMA generator's when there is one."""
        from .checkpoint import MODEL_FILES

        weights = Path(ckpt) / MODEL_FILES["generator_ema"]
        return weights if weights.is_file() else Path(ckpt) / MODEL_FILES["generator"]


class Loaded:
    """A checkpoint's networks, ready to sample and evaluate (``Run.load``)."""

    def __init__(self, *, run: Run, checkpoint: Path, weights: Path, generator: Any, discriminator: Any, data: Any,
                 device: Any, step: int):
        self.run, self.checkpoint, self.weights = run, checkpoint, weights
        self.generator, self.discriminator, self.data, self.device, self.step = \
            generator, discriminator, data, device, step

    def generate(self, n: int, seed: int = 0) -> tuple[Any, Any]:
        """``(samples, cond)`` on the CPU, reproducible from ``seed``."""
        from .sampling import generate

        return generate(self.run.domain, self.generator, n, self.run.config.options, self.data,
                        device=self.device, seed=seed)

    def evaluate(self) -> dict[str, float]:
        import torch

        from .domain import StepContext
        from .plugins import registry

        cfg = self.run.config
        ctx = StepContext.create(cfg, self.generator, self.discriminator, registry().loss(cfg.train.loss),
                                 self.device, torch.Generator(device=self.device).manual_seed(cfg.train.seed),
                                 self.data, step=self.step)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            return {k: float(v) for k, v in self.run.domain.evaluate(ctx).items()}
