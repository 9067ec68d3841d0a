"""The public API a plugin may use (docs/plugins.md, "Public API"): the metrics give the numbers they promise,
and every public name of genkit, genkit.metrics and genkit.testing, and every hook, is tested and documented
with its signature."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch

import genkit
import genkit.metrics as M
import genkit.testing
from genkit import hookspecs

ROOT = Path(__file__).resolve().parents[1]
PLUGINS_DOC = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")


def test_frechet_distance_is_zero_for_equal_sets_and_the_squared_mean_shift_otherwise():
    a = torch.randn(2000, 4, generator=torch.Generator().manual_seed(0))
    assert M.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert M.frechet_distance(a, a + torch.tensor([3.0, 0, 0, 4.0])) == pytest.approx(25.0, rel=1e-6)
    assert M.frechet_distance(a[:1], a) != M.frechet_distance(a[:1], a)  # NaN: one sample has no covariance


def test_inception_score_counts_confident_equally_used_classes():
    onehot = torch.eye(5).repeat(20, 1)
    assert M.inception_score(onehot, splits=1)[0] == pytest.approx(5.0, rel=1e-6)
    assert M.inception_score(torch.full((100, 5), 0.2), splits=1)[0] == pytest.approx(1.0)


def test_kid_nearest_neighbours_and_memorisation():
    g = torch.Generator().manual_seed(0)
    train, real = torch.randn(500, 8, generator=g), torch.randn(200, 8, generator=g)
    same, _ = M.kernel_inception_distance(torch.randn(300, 8, generator=g), real, subsets=5, subset_size=200)
    far, _ = M.kernel_inception_distance(torch.randn(300, 8, generator=g) + 2, real, subsets=5, subset_size=200)
    assert abs(same) < 0.05 < far
    ref = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert M.nearest_neighbour_distances(torch.tensor([[0.0, 1.0], [3.0, 4.0]]), ref).tolist() == [1.0, 0.0]
    assert M.nearest_neighbour_distances(ref, ref, exclude_self=True).tolist() == [5.0, 5.0]
    copies = M.memorisation_metrics(train[:100] + 1e-4, real, train)
    assert copies["refnet_nn_ratio"] < 0.01
    noise = M.memorisation_metrics(torch.randn(100, 8, generator=g) * 10, real, train)
    assert noise["refnet_nn_ratio"] > 3


def test_classifier_metrics_keys_and_class_coverage():
    g = torch.Generator().manual_seed(0)
    p_fake = torch.eye(10)[torch.tensor([0, 1, 2] * 40)]  # three classes, all confident
    f = torch.randn(120, 6, generator=g)
    out = M.classifier_metrics(p_fake, f, torch.eye(10).repeat(10, 1), f[:100], 0.97, prefix="mynet")
    assert set(out) == {f"mynet_{k}" for k in ("is", "fd", "kid", "confident", "classes", "is_real", "accuracy")}
    assert out["mynet_classes"] == 3 and out["mynet_confident"] == 1.0 and out["mynet_accuracy"] == 0.97
    assert out["mynet_is"] == pytest.approx(3.0) and out["mynet_is_real"] == pytest.approx(10.0)


def test_progress_bar_and_phase_control(monkeypatch):
    monkeypatch.setenv("GENKIT_PROGRESS", "0")
    assert genkit.progress_bar(total=3, desc="x").disable  # GENKIT_PROGRESS=0, and stderr is no terminal here
    seen, stop = [], [False]
    control = genkit.PhaseControl(lambda n, stats: seen.append((n, dict(stats))), lambda: stop[0])
    control.step(2, {"nll": 1.5})
    control(1)  # the first plugin API's progress(n, stats)
    assert seen == [(2, {"nll": 1.5}), (1, {})] and control.steps_done == 3 and not control.stop_requested
    stop[0] = True
    assert control.stop_requested


def _plain(func) -> str:
    """``name(a, b=1, *, c=None)``: the signature as docs/plugins.md writes it (no annotations)."""
    sig = inspect.signature(func)
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    return func.__name__ + str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))


def _functions(module) -> list[str]:
    names = getattr(module, "__all__", None) or [n for n, v in vars(module).items() if not n.startswith("_")
                                                 and inspect.isfunction(v) and v.__module__ == module.__name__]
    return sorted(names)


TESTS_TEXT = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").glob("test_*.py"))


@pytest.mark.parametrize("module", [M, genkit.testing], ids=lambda m: m.__name__)
def test_every_public_function_is_documented_with_its_signature_and_tested(module):
    for name in _functions(module):
        func = getattr(module, name)
        assert f"`{_plain(func)}`" in PLUGINS_DOC, f"docs/plugins.md lacks `{_plain(func)}`"
        assert re.search(rf"\b{name}\(", TESTS_TEXT.replace(f"def {name}(", "")), f"no test calls {name}"


def test_every_hook_and_every_name_of_genkit_is_documented_and_tested():
    for name, spec in vars(hookspecs).items():
        if name.startswith("genkit_") and callable(spec):
            assert f"### {_plain(spec)}" in PLUGINS_DOC, name
            assert name in TESTS_TEXT, name
    for name in genkit.__all__:
        if name != "__version__":
            assert f"`{name}`" in PLUGINS_DOC or f"`genkit.{name}" in PLUGINS_DOC, name
            assert re.search(rf"\b{name}\b", TESTS_TEXT), name


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_step_context_in_evaluate_holds_the_sampling_generator(ema, ring, cache, tmp_path):
    """docs/plugins.md: ``ctx.generator`` is the trained generator in the step, the EMA copy in ``evaluate``."""
    import genkit_ring

    seen = {}

    class Watch(genkit_ring.RingDomain):
        def fake(self, generator, z, cond, ctx):
            seen["step"] = generator
            return super().fake(generator, z, cond, ctx)

        def evaluate(self, ctx):
            assert isinstance(ctx, genkit.StepContext) and ctx.device.type == "cpu" and ctx.step == 2
            seen["eval"], seen["training"] = ctx.generator, ctx.generator.training
            return super().evaluate(ctx)

    genkit.train(Watch(), out=tmp_path / "r", steps=2, ema=ema, hidden=8, examples=64, batch_size=16)
    assert (seen["eval"] is seen["step"]) == (ema == 0.0) and seen["training"] is False


def test_labels_are_classes_unless_most_names_hold_one_example(capsys):
    assert genkit.labels_are_classes([0, 0, 1, 1, 2], ["a", "b", "c"], "digits")  # one class of one example: fine
    assert "warning" not in capsys.readouterr().err
    assert not genkit.labels_are_classes([0, 0, 0], ["a"], "one")  # a single class: nothing to condition on
    assert not genkit.labels_are_classes([0, 1, 2, 3, 3], ["a", "b", "c", "d"], "ids")  # three of four single
    err = capsys.readouterr().err
    assert err.startswith("genkit: warning: ids: 3 of its 4 names") and err.count("\n") == 1


def test_warn_is_one_line_on_stderr(capsys):
    genkit.warn("file x.wav is empty; skipped")
    out = capsys.readouterr()
    assert out.out == "" and out.err == "genkit: warning: file x.wav is empty; skipped\n"


def test_documented_submodules_load_on_first_use_after_a_plain_import():
    import subprocess
    import sys

    code = ("import sys, genkit; assert 'torch' not in sys.modules; "
            "print(genkit.metrics.frechet_distance.__name__, genkit.sampling.generate.__name__, "
            "genkit.testing.check_domain.__name__)\n"
            "try:\n    genkit.nothing\nexcept AttributeError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["frechet_distance generate check_domain", "module 'genkit' has no attribute 'nothing'"]
