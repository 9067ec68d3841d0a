"""What a plugin's own test-suite needs (docs/plugins.md, "Testing a plugin").

    from genkit.testing import check_domain, registered, tiny_run

    def test_protocol(genkit_cache):              # fixtures: pytest_plugins = ["genkit.testing"] in conftest.py
        assert check_domain(MyDomain(), n_examples=64) == []

    def test_trains(tmp_path, genkit_cache):
        with registered(my_plugin):
            run = tiny_run("mydomain", tmp_path)
        assert run.read_summary()["status"] == "completed"

- ``registered(plugin, name=None)``: the plugin registered for a ``with`` block (also when it is pip-installed
  already: the installed copy is put back afterwards);
- ``isolated_cache(path)``: ``GENKIT_CACHE`` pointed at ``path`` for a ``with`` block; the pytest fixture
  ``genkit_cache`` does it for one test;
- ``tiny_run(domain, folder, **settings)``: a few training steps in ``folder/run`` through ``genkit.train``,
  every snapshot, checkpoint and evaluation included;
- ``check_domain(domain, ...)``: every method the domain implements called with tiny inputs, each violation of
  the protocol reported as one sentence (an empty list: none found).

Importing this module does not import torch; the functions import it when called.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .errors import GenkitError, first_line

__all__ = ["check_domain", "isolated_cache", "registered", "tiny_run"]

# Engine settings of a tiny run: every periodic action happens within its steps.
TINY = {"steps": 4, "batch_size": 8, "checkpoint_every": 2, "sample_every": 2, "log_every": 1, "eval_every": 0,
        "keep_checkpoints": 0}


@contextlib.contextmanager
def registered(plugin: object, name: str | None = None) -> Iterator[str]:
    """Register ``plugin`` (a module or object with ``genkit_*`` hooks) for the ``with`` block; yields its name.

    A registration check that fails raises ``GenkitError`` with the same line ``genkit`` would print. When the
    plugin is installed and loaded already (from its entry point), it is kept as it was after the block.
    """
    from . import plugins

    plugins.load_plugins()
    before = plugins.pm.get_name(plugin)
    got = plugins.register_plugin(plugin, name=name)
    try:
        yield got
    finally:
        if before is None:
            plugins.unregister_plugin(got)
        elif got != before:  # it was moved from its installed name: move it back
            plugins.unregister_plugin(got)
            plugins.pm.register(plugin, name=before)
            plugins.invalidate()


@contextlib.contextmanager
def isolated_cache(path: Path | str | None = None) -> Iterator[Path]:
    """``GENKIT_CACHE`` set to ``path`` (default: a new temporary folder) for the ``with`` block."""
    with contextlib.ExitStack() as stack:
        folder = Path(path) if path is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        old = os.environ.get("GENKIT_CACHE")
        os.environ["GENKIT_CACHE"] = str(folder)
        try:
            yield folder
        finally:
            if old is None:
                os.environ.pop("GENKIT_CACHE", None)
            else:
                os.environ["GENKIT_CACHE"] = old


def tiny_run(domain: Any, folder: Path | str, **settings: Any):
    """Train ``domain`` (a registered name or a ``genkit.Domain``) for a few steps into ``folder/run``; returns the
    ``genkit.Run``. ``settings`` override the tiny defaults (``TINY``) and the domain's recipe, by Python name."""
    from .api import train

    return train(domain, out=Path(folder) / "run", **{**TINY, **settings})


def check_domain(domain: Any, *, data: str | None = None, n: int = 4, evaluate: bool = False,
                 folder: Path | str | None = None, **settings: Any) -> list[str]:
    """Call every method ``domain`` implements with tiny inputs and return each protocol violation in words.

    ``data`` is the ``--data`` to load (default: the domain's own); ``settings`` are options and engine settings
    by Python name, as for ``genkit.train`` (make the models small); ``n`` samples are generated and written
    under ``folder`` (default: a temporary folder). ``evaluate=True`` also calls ``evaluate`` (it may train a
    reference classifier: slow). An empty list means no violation was found.
    """
    with contextlib.ExitStack() as stack:
        out = Path(folder) if folder is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return _Checker(domain, out, n).run(data, evaluate, settings)


class _Checker:
    def __init__(self, domain: Any, folder: Path, n: int):
        self.domain, self.folder, self.n = domain, folder, n
        self.problems: list[str] = []

    def fail(self, method: str, text: str) -> None:
        self.problems.append(f"{self.domain.name or type(self.domain).__name__}.{method}: {text}")

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """``domain.method(...)``; an exception is a violation (``None`` returned)."""
        try:
            return getattr(self.domain, method)(*args, **kwargs)
        except Exception as exc:
            self.fail(method, f"raised {exc.__class__.__name__}: {first_line(exc)}")
            return None

    def run(self, data: str | None, evaluate: bool, settings: dict[str, Any]) -> list[str]:
        import torch

        from .config import resolve
        from .plugins import prepare_domain, registry

        dom = self.domain
        problem = prepare_domain(dom, "check_domain")
        if problem:
            return [problem]
        try:
            cfg = resolve(dom, registry().losses, data=data, flags={k: v for k, v in settings.items() if v is not None})
        except GenkitError as exc:
            return [f"{dom.name}: the settings do not resolve: {exc.format_message()}"]
        from .run import cache_dir

        loaded = self.call("load_data", cfg.data, cfg.options, cache_dir=cache_dir())
        if loaded is None:
            return self.problems
        if not self._check_data(loaded):
            return self.problems
        options = self.call("resolve_options", cfg.options, loaded)
        if options is None:
            return self.problems
        if type(options) is not type(cfg.options):
            self.fail("resolve_options", f"returned a {type(options).__name__}, not the domain's "
                                         f"{type(cfg.options).__name__} (use dataclasses.replace)")
            return self.problems
        if any(v is None for v in dataclasses.asdict(options).values()):
            unresolved = [k for k, v in dataclasses.asdict(options).items() if v is None]
            self.fail("resolve_options", f"left {', '.join(unresolved)} as None (auto): config.toml records "
                                         "resolved values")
        models = self.call("build_models", options, loaded)
        if models is None:
            return self.problems
        if (not isinstance(models, tuple) or len(models) != 2
                or not all(isinstance(m, torch.nn.Module) for m in models)):
            self.fail("build_models", "must return (generator, discriminator), two torch.nn.Module")
            return self.problems
        G, D = models
        z = self._check_latent(options)
        if z is None:
            return self.problems
        cond = self.call("snapshot_conditions", self.n, loaded)
        if loaded.conditional and cond is None:
            self.fail("snapshot_conditions", "returned None for conditional data")
        elif cond is not None and (not torch.is_tensor(cond) or len(cond) != self.n):
            self.fail("snapshot_conditions", f"must return one condition per sample ({self.n}), got {_describe(cond)}")
            return self.problems
        self._check_step(G, D, z, cond, loaded, options, cfg)
        samples = self._check_output(G, z, cond, loaded, options)
        if samples is not None:
            self._check_sampling_data(samples, cond, loaded, options)
        state = self.call("state_dict", loaded)
        if state is not None:
            from .checkpoint import check_state_value

            try:
                for key, value in state.items():
                    check_state_value(value, key)
            except GenkitError as exc:
                self.fail("state_dict", exc.format_message())
        if evaluate and dom.evaluates:
            from .domain import StepContext
            from .losses import Loss

            ctx = StepContext.create(cfg.replace(options=options), G, D, Loss("none", _zero, _zero),
                                     torch.device("cpu"), torch.Generator().manual_seed(0), loaded)
            metrics = self.call("evaluate", ctx)
            if metrics is not None and not (isinstance(metrics, dict)
                                            and all(isinstance(k, str) for k in metrics)
                                            and all(_is_number(v) for v in metrics.values())):
                self.fail("evaluate", f"must return {{name: number}}, got {_describe(metrics)}")
        return self.problems

    def _check_data(self, data: Any) -> bool:
        from .domain import Data

        if not isinstance(data, Data):
            self.fail("load_data", f"must return a genkit.Data, got {_describe(data)}")
            return False
        try:
            size = len(data.train)
            item = data.train[0]
        except Exception as exc:
            self.fail("load_data", f"Data.train must be a map-style dataset (len and [i]): {first_line(exc)}")
            return False
        if size < 1:
            self.fail("load_data", "Data.train is empty")
            return False
        if data.conditional and not (isinstance(item, (tuple, list)) and len(item) >= 2 and item[1] is not None):
            self.fail("load_data", "conditional data, but Data.train's items are not (x, cond) pairs")
            return False
        if data.conditional and data.num_classes < 1:
            self.fail("load_data", "conditional data needs num_classes >= 1 (or a snapshot_conditions override)")
        if data.class_names and data.num_classes and len(data.class_names) < data.num_classes:
            self.fail("load_data", f"{len(data.class_names)} class_names for num_classes {data.num_classes}")
        return True

    def _check_latent(self, options: Any):
        import torch

        device = torch.device("cpu")
        before = torch.random.get_rng_state()
        z1 = self.call("sample_latent", self.n, options, rng=torch.Generator().manual_seed(0), device=device)
        moved = not torch.equal(before, torch.random.get_rng_state())
        if z1 is None:
            return None
        if not torch.is_tensor(z1) or z1.shape[:1] != (self.n,):
            self.fail("sample_latent", f"must return a tensor of {self.n} latents (first dimension), got {_describe(z1)}")
            return None
        z2 = self.call("sample_latent", self.n, options, rng=torch.Generator().manual_seed(0), device=device)
        if moved or z2 is None or not torch.equal(z1, z2):
            self.fail("sample_latent", "the latent is not drawn from the given rng only (torch's global generator "
                                       "moved, or one seed gave two latents): resumed runs would differ")
        if z1.device != device:
            self.fail("sample_latent", f"returned a tensor on {z1.device}, not the given device {device}")
        return z1

    def _check_step(self, G, D, z, cond, data, options, cfg) -> None:
        """One adversarial step's calls, as the engine makes them: fake, D(real), D(fake), gradients into G."""
        import torch

        from .domain import StepContext
        from .engine import Batches
        from .losses import Loss

        if len(data.train) < self.n:
            self.fail("load_data", f"fewer than {self.n} examples")
            return
        try:
            real, real_cond = Batches(data.train, self.n, 0, torch.device("cpu"), data.transform).next()
        except Exception as exc:
            self.fail("load_data", f"a batch of Data.train (after Data.transform) failed: {first_line(exc)}")
            return
        real_cond = real_cond if data.conditional else None
        ctx = StepContext.create(cfg.replace(options=options), G, D, Loss("none", _zero, _zero), torch.device("cpu"),
                                 torch.Generator().manual_seed(0), data)
        ctx.real, ctx.cond = real, real_cond
        G.train()
        D.train()
        fake = self.call("fake", G, z, cond, ctx)
        if fake is None:
            return
        for what, x, c in (("a real batch", real, real_cond), ("a generated batch", fake, cond)):
            try:
                logits = D(x, c)
            except Exception as exc:
                self.fail("build_models", f"the discriminator fails on {what}: {exc.__class__.__name__}: "
                                          f"{first_line(exc)}")
                return
            if not torch.is_tensor(logits) or logits.shape not in ((len(x),), (len(x), 1)):
                self.fail("build_models", f"the discriminator must return one logit per sample, shape ({len(x)},); "
                                          f"got {_describe(logits)} for {what}")
                return
            if not torch.isfinite(logits).all():
                self.fail("build_models", f"the discriminator's logits on {what} are not finite")
        custom = self.call("generator_loss", z, cond, ctx)
        loss = custom if custom is not None else -D(fake, cond).mean()
        try:
            loss.backward()
        except Exception as exc:
            self.fail("fake", f"no gradient reaches the generator: {exc.__class__.__name__}: {first_line(exc)}")
            return
        if not any(p.grad is not None and p.grad.abs().sum() > 0 for p in G.parameters()):
            self.fail("fake", "the discriminator's verdict on generated samples does not depend on the generator's "
                              "weights (no gradient reaches them)")

    def _check_output(self, G, z, cond, data, options) -> Any:
        """``generate`` and the writers; returns the samples (None when ``generate`` failed)."""
        import torch

        G.eval()
        with torch.no_grad():
            samples = self.call("generate", G, z, cond, options)
        if samples is None:
            return None
        if len(samples) != self.n:
            self.fail("generate", f"returned {len(samples)} samples for {self.n} latents")
        shape = self.call("sample_shape", options, data)
        if shape and torch.is_tensor(samples) and tuple(samples.shape[1:]) != tuple(shape):
            self.fail("sample_shape", f"says {tuple(shape)}, generate made {tuple(samples.shape[1:])}")
        snapshot = self.folder / "snapshot"
        for method, args in (("write_snapshot", (samples, cond, snapshot, options, data)),
                             ("write_samples", (samples, cond, self._mkdir("samples"), options, data))):
            try:
                files = getattr(self.domain, method)(*args)
            except Exception as exc:
                self.fail(method, f"raised {exc.__class__.__name__}: {first_line(exc)}")
                continue
            paths = [Path(f) for f in files] if isinstance(files, (list, tuple)) else []
            if not paths:
                self.fail(method, f"must return the list of files it wrote, got {_describe(files)}")
                continue
            missing = [str(p) for p in paths if not p.is_file()]
            if missing:
                self.fail(method, f"returned files that do not exist: {', '.join(missing[:3])}")
            ext = getattr(self.domain, "sample_ext", "")
            if method == "write_samples" and ext and not any(p.suffix == ext for p in paths):
                self.fail(method, f"wrote no {ext} file, the domain's sample_ext")
        return samples

    def _check_sampling_data(self, samples, cond, data, options) -> None:
        """``genkit sample`` and ``Run.sample`` hand the writers a ``Data`` rebuilt from ``data.json``
        (``load_data_meta``) and the checkpoint's ``state_dict``: no ``train``, no ``extra``. A writer that reads
        anything else works in training and fails only when a user samples a finished run."""
        import json

        from .run import dumps

        try:
            meta = json.loads(dumps(self.domain.save_data_meta(data, self.folder)))
            rebuilt = self.domain.load_data_meta(meta, self.folder)
            self.domain.load_state_dict(rebuilt, self.domain.state_dict(data))
        except Exception as exc:
            self.fail("load_data_meta", f"cannot rebuild the sampling-time Data from save_data_meta and state_dict: "
                                        f"raised {exc.__class__.__name__}: {first_line(exc)}")
            return
        try:
            self.domain.write_samples(samples, cond, self._mkdir("sampling"), options, rebuilt)
        except Exception as exc:
            self.fail("write_samples", f"raised {exc.__class__.__name__}: {first_line(exc)} with the Data that genkit "
                                       "sample passes (from save_data_meta and state_dict only: no train, no extra; "
                                       "keep what the writers need in data.state)")

    def _mkdir(self, name: str) -> Path:
        path = self.folder / name
        path.mkdir(parents=True, exist_ok=True)
        return path


def _zero(*args: Any) -> Any:
    import torch

    return torch.zeros(())


def _is_number(value: Any) -> bool:
    try:
        float(value)
        return True
    except (TypeError, ValueError):
        return False


def _describe(value: Any) -> str:
    shape = getattr(value, "shape", None)
    return f"{type(value).__name__} of shape {tuple(shape)}" if shape is not None else f"{type(value).__name__}"


try:  # pytest fixtures, for `pytest_plugins = ["genkit.testing"]` in a plugin's conftest.py
    import pytest
except ImportError:  # pragma: no cover - pytest is only needed by test-suites
    pass
else:

    @pytest.fixture
    def genkit_cache(tmp_path):
        """``GENKIT_CACHE`` pointed at a fresh folder for one test (corpora, reference classifiers)."""
        with isolated_cache(tmp_path / "genkit-cache") as path:
            yield path
