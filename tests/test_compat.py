"""Compatibility: run directories written by genkit before typed options (tests/fixtures/runs-f4f44c4) keep
working with `genkit sample`, `genkit eval` and `--resume`, and a plugin written against the first plugin API
(Option tuples, options as a mapping, a pretrain method) loads with one deprecation line per change and trains."""

from __future__ import annotations

import json
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

from genkit import errors
from genkit.plugins import register_plugin, registry, unregister_plugin

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def old_run(tmp_path, use_shared_cache):
    """A copy of a fixture run (the fixtures themselves are never written to)."""

    def copy(domain: str) -> Path:
        dst = tmp_path / domain
        shutil.copytree(FIXTURES / "runs-f4f44c4" / domain, dst)
        return dst

    return copy


@pytest.mark.parametrize("domain, files", [("image", 3), ("audio", 3), ("text", 1)])
def test_sample_and_eval_of_a_run_saved_by_an_earlier_genkit(invoke, old_run, tmp_path, domain, files):
    run = old_run(domain)
    result = invoke("sample", run, "-n", "2", "--seed", "3", "--out", tmp_path / "s", "--json")
    assert result.exit_code == 0, result.stderr
    written = json.loads(result.stdout)["files"]
    assert len(written) == files and all(Path(f).is_file() for f in written)
    again = invoke("sample", run, "-n", "2", "--seed", "3", "--out", tmp_path / "s2", "--json")
    assert [Path(f).read_bytes() for f in json.loads(again.stdout)["files"] if f.endswith((".txt", ".wav"))] == \
        [Path(f).read_bytes() for f in written if f.endswith((".txt", ".wav"))]  # reproducible by seed
    evaluated = invoke("eval", run, "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    metrics = json.loads(evaluated.stdout)["metrics"]
    key = "bleu2_method1" if domain == "text" else "refnet_fd"
    assert key in metrics
    if domain == "text":  # the MLE baseline that genkit 0.1 kept in a generator buffer is still reported
        old = json.loads((run / "summary.json").read_text())["metrics"]
        assert metrics["mle_t1_nll_gen"] == pytest.approx(old["mle_t1_nll_gen"])


@pytest.mark.parametrize("domain, step", [("image", 4), ("audio", 2), ("text", 2)])
def test_resume_of_a_run_saved_by_an_earlier_genkit(invoke, old_run, domain, step):
    run = old_run(domain)
    result = invoke("run", domain, "--resume", run, "--steps", str(step + 1), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert json.loads((run / "summary.json").read_text())["steps"] == step + 1
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["train"]["steps"] == step + 1
    if domain == "image":  # the old "0 = the data's" placeholders became the values in use
        assert (saved["image"]["size"], saved["image"]["channels"]) == (28, 1)
    sample = invoke("sample", run, "-n", "2", "--out", run.parent / f"{domain}-after")
    assert sample.exit_code == 0, sample.stderr
    refused = invoke("run", domain, "--resume", run, "--steps", str(step + 2), "--seed", "9")
    assert refused.exit_code == 2 and "--seed cannot change" in refused.stderr


@pytest.fixture
def legacy_ring(capsys):
    """The example plugin exactly as written for the first plugin API."""
    sys.path.insert(0, str(FIXTURES / "legacy_plugin"))
    import genkit_ring_v1

    errors._said.clear()  # deprecation lines are said once per process
    register_plugin(genkit_ring_v1, name="ring-v1")
    yield genkit_ring_v1, capsys.readouterr().err
    unregister_plugin("ring-v1")
    sys.path.remove(str(FIXTURES / "legacy_plugin"))


def test_a_plugin_on_the_first_api_trains_samples_and_evaluates(invoke, legacy_ring, tmp_path):
    module, said = legacy_ring
    deprecations = [line for line in said.splitlines() if "deprecated" in line]
    assert deprecations == [
        "genkit: deprecated: plugin 'ring-v1': domain 'ring' declares genkit.Option tuples; declare an Options "
        "dataclass of genkit.option fields instead (docs/plugins.md)",
        "genkit: deprecated: plugin 'ring-v1': domain 'ring' overrides evaluate() without declaring evaluates = True",
    ]
    dom = registry().domain("ring")
    assert dom.Options().hidden == 128 and dom.Options()["hidden"] == 128  # typed, and still a mapping
    result = invoke("run", "ring", "--steps", "30", "--hidden", "16", "--examples", "256", "--out", tmp_path / "r",
                    "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "completed" and 0 <= summary["metrics"]["modes"] <= 8
    assert invoke("sample", tmp_path / "r", "-n", "4").exit_code == 0
    assert "high_quality" in json.loads(invoke("eval", tmp_path / "r", "--json").stdout)["metrics"]
    bad = invoke("run", "ring", "--hidden", "lots", "--out", tmp_path / "bad")
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()


def test_a_first_api_pretrain_method_runs_as_a_phase(legacy_ring, tmp_path, capsys):
    module, _ = legacy_ring
    calls = []

    class WithPretrain(module.RingDomain):
        name = "ring-pre"

        def pretrain(self, ctx, batches, steps, progress):  # the first API's signature and progress callback
            for _ in range(steps):
                batches()
                progress(1, {"nll": 1.0})
                calls.append(1)
            return {"warm": 1.0}

    import types

    from genkit import hookimpl, train

    plugin = types.ModuleType("pre")
    plugin.genkit_register_domains = hookimpl(lambda register: register(WithPretrain()))
    register_plugin(plugin, name="pre")
    try:
        assert "overrides pretrain(); declare phases" in capsys.readouterr().err
        run = train("ring-pre", out=tmp_path / "p", steps=2, pretrain_steps=3, hidden=8, examples=256)
        assert len(calls) == 3
        assert run.metrics()[0] == {**run.metrics()[0], "step": 0, "phase": "pretrain", "warm": 1.0}
    finally:
        unregister_plugin("pre")
