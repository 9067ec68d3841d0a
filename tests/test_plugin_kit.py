"""The plugin author's kit: genkit.testing (check_domain, registered, tiny_run, isolated_cache) and the loading
rules that keep one broken plugin from breaking the others (docs/plugins.md)."""

from __future__ import annotations

import importlib.metadata
import os
import sys

import pytest

import genkit
from genkit import plugins as plugins_mod
from genkit.plugins import registry
from genkit.testing import check_domain, isolated_cache, registered, tiny_run


@pytest.fixture
def ring_domain():
    import genkit_ring

    return genkit_ring.RingDomain


def test_check_domain_passes_a_correct_domain(ring_domain, cache):
    assert check_domain(ring_domain(), hidden=8, examples=64, evaluate=True) == []
    assert check_domain(ring_domain(), hidden=8, examples=64, conditional=True) == []


def test_check_domain_passes_the_built_in_domains(cache):
    reg = registry()
    assert check_domain(reg.domain("image"), g_width=4, d_width=4) == []
    assert check_domain(reg.domain("audio"), model="wavegan", model_size=1, data="espeak-digits") == []


def test_check_domain_reports_each_violation_in_words(ring_domain, cache):
    import torch

    class GlobalLatent(ring_domain):
        def sample_latent(self, n, options, *, rng, device):
            return torch.randn(n, options.latent_dim, device=device)  # ignores rng: runs would not resume exactly

    class TwoLogits(ring_domain):
        def build_models(self, options, data):
            from genkit_ring import MLP

            G, _ = super().build_models(options, data)
            return G, MLP(2, 2, 8)  # two numbers per sample instead of one logit

    class NoFiles(ring_domain):
        def write_snapshot(self, samples, cond, path, options, data):
            return None

    class WrongShape(ring_domain):
        def sample_shape(self, options, data):
            return (3,)

    class DetachedFake(ring_domain):
        def fake(self, generator, z, cond, ctx):
            return generator(z, cond).detach()

    class WriterReadsExtra(ring_domain):  # works while training; genkit sample's Data has no extra
        def write_samples(self, samples, cond, out_dir, options, data):
            scale = data.extra["scale"]
            return super().write_samples(samples * scale, cond, out_dir, options, data)

        def load_data(self, spec, options, *, cache_dir):
            data = super().load_data(spec, options, cache_dir=cache_dir)
            data.extra["scale"] = 2.0
            return data

    [latent] = check_domain(GlobalLatent(), hidden=8, examples=64)
    [extra] = check_domain(WriterReadsExtra(), hidden=8, examples=64)
    assert extra.startswith("ring.write_samples: raised KeyError: 'scale' with the Data that genkit sample passes "
                            "(from save_data_meta and state_dict only: no train, no extra;")
    assert latent.startswith("ring.sample_latent: the latent is not drawn from the given rng")
    [logits] = check_domain(TwoLogits(), hidden=8, examples=64)
    assert "ring.build_models: the discriminator must return one logit per sample, shape (4,)" in logits
    assert check_domain(NoFiles(), hidden=8, examples=64) == [  # ring's write_samples calls write_snapshot
        "ring.write_snapshot: must return the list of files it wrote, got NoneType",
        "ring.write_samples: must return the list of files it wrote, got NoneType"]
    [shape] = check_domain(WrongShape(), hidden=8, examples=64)
    assert shape == "ring.sample_shape: says (3,), generate made (2,)"
    [grad] = check_domain(DetachedFake(), hidden=8, examples=64)
    assert grad.startswith("ring.fake: the discriminator's verdict on generated samples does not depend on the generator")


def test_check_domain_reports_registration_problems(ring_domain):
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Clash:
        seed: int = genkit.option(0, "clashes with the engine's --seed")

    class Clashing(ring_domain):
        Options = Clash

    class Empty(genkit.Domain):
        name = "empty"

    assert check_domain(Clashing()) == ["plugin 'check_domain': domain 'ring' rejected: option 'seed' collides with "
                                        "the engine setting --seed; rename it"]
    [empty] = check_domain(Empty())
    assert empty == ("plugin 'check_domain': domain 'empty' rejected: it does not implement load_data, build_models, "
                     "sample_latent, write_snapshot, write_samples, default_data (or data_names) "
                     "(docs/plugins.md: The Domain protocol)")


def test_registered_and_tiny_run(ring_domain, tmp_path):
    import genkit_ring

    with isolated_cache(tmp_path / "c") as c:
        assert os.environ["GENKIT_CACHE"] == str(c)
        with registered(genkit_ring, name="ring") as name:
            assert name == "ring" and "ring" in registry().domains
            run = tiny_run("ring", tmp_path, hidden=8, examples=64)
        assert "ring" not in registry().domains  # removed after the block
    assert os.environ.get("GENKIT_CACHE") != str(c)
    summary = run.read_summary()
    assert summary["status"] == "completed" and summary["steps"] == 4
    assert sorted(p.name for p in run.root.joinpath("checkpoints").iterdir() if p.name.startswith("step-")) == \
        ["step-00000002", "step-00000004"]


def test_registered_works_when_the_plugin_is_installed_already(ring_domain):
    """The documented test recipe must not fail once the author pip-installs the plugin (it was loaded from its
    entry point under another name): the test gets it under its name, the installed one comes back after."""
    import genkit_ring

    plugins_mod.load_plugins()
    plugins_mod.pm.register(genkit_ring, name="genkit-ring")  # as its entry point would
    plugins_mod.invalidate()
    try:
        with registered(genkit_ring, name="ring"):
            assert registry().owners[("domain", "ring")] == "ring"
        assert registry().owners[("domain", "ring")] == "genkit-ring"
        with registered(genkit_ring) as name:  # no name: the installed registration is used as it is
            assert name == "genkit-ring"
        assert plugins_mod.pm.has_plugin("genkit-ring")
    finally:
        plugins_mod.unregister_plugin("genkit-ring")


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """Install (as entry points) the third-party plugins written by the test into tmp_path."""
    real = importlib.metadata.entry_points
    extra: list = []

    def add(name: str, source: str) -> None:
        (tmp_path / f"genkit_{name}.py").write_text(source)
        extra.append(importlib.metadata.EntryPoint(name, f"genkit_{name}", "genkit"))

    def entry_points(group=None, **kw):
        found = list(real(group=group, **kw))
        return found + extra if group == "genkit" else found

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    plugins_mod.reset()
    yield add
    for ep in extra:
        sys.modules.pop(ep.value, None)
    plugins_mod.reset()


GOOD_LOSS = ("import genkit\n@genkit.hookimpl\ndef genkit_register_losses(register):\n"
             "    register(genkit.Loss('good', lambda r, f: f.mean(), lambda f, r=None: -f.mean()))\n")


def test_one_broken_plugin_never_breaks_the_others(installed, invoke, capsys):
    installed("good", GOOD_LOSS)
    installed("raiser", "import genkit\n@genkit.hookimpl\ndef genkit_register_domains(register):\n"
                        "    raise RuntimeError('no GPU found')\n")
    installed("thief", "import genkit, genkit_image\n@genkit.hookimpl\ndef genkit_register_domains(register):\n"
                       "    register(genkit_image.ImageDomain())\n"
                       "@genkit.hookimpl\ndef genkit_register_losses(register):\n"
                       "    register(genkit.Loss('hinge', lambda r, f: f.mean(), lambda f, r=None: f.mean()))\n")
    installed("typo", "import genkit\n@genkit.hookimpl\ndef genkit_register_domain(register):\n    pass\n")
    installed("hollow", "import genkit\nclass Hollow(genkit.Domain):\n    name = 'hollow'\n"
                        "@genkit.hookimpl\ndef genkit_register_domains(register):\n    register(Hollow())\n")
    assert invoke("--help").exit_code == 0
    result = invoke("plugins", "--json")
    assert result.exit_code == 0
    import json

    rows = {p["name"]: p for p in json.loads(result.stdout)}
    assert rows["good"]["losses"] == ["good"] and "typo" not in rows
    assert rows["image"]["domains"] == ["image"] and rows["thief"]["domains"] == []  # the built-in keeps its name
    assert registry().owners[("loss", "hinge")] == "genkit.losses"
    err = capsys.readouterr().err
    for line in ("plugin 'raiser': its genkit_register_domains hook failed (RuntimeError: no GPU found); what it "
                 "registers was skipped (GENKIT_LOAD_PLUGINS lists the plugins to load)",
                 "plugin 'thief': domain 'image' is already registered by plugin 'image'; skipped it "
                 "(GENKIT_LOAD_PLUGINS lists the plugins to load)",
                 "plugin 'thief': loss 'hinge' is already registered by plugin 'genkit.losses'; skipped it",
                 "plugin 'typo' (genkit_typo) failed to load and was skipped: unknown hook 'genkit_register_domain'",
                 "plugin 'hollow': domain 'hollow' rejected: it does not implement load_data"):
        assert line in err, err
    assert all(line.startswith("genkit: warning: ") for line in err.splitlines())
    # every built-in still trains
    assert "image" in invoke("run", "--help").stdout and "hollow" not in invoke("run", "--help").stdout


def test_two_third_party_plugins_claiming_one_command_name(installed, invoke, capsys):
    command = ("import click, genkit\n@genkit.hookimpl\ndef genkit_register_commands(cli):\n"
               "    @cli.command(name='export-onnx')\n    def cmd():\n        click.echo('{who}')\n")
    installed("first", command.format(who="first"))
    installed("second", command.format(who="second"))
    assert invoke("export-onnx").stdout == "first\n"
    rows = {p["name"]: p for p in __import__("json").loads(invoke("plugins", "--json").stdout)}
    assert rows["first"]["commands"] == ["export-onnx"] and rows["second"]["commands"] == []
    assert ("plugin 'second': the command 'export-onnx' is already registered by plugin 'first'; skipped it "
            "(GENKIT_LOAD_PLUGINS lists the plugins to load)") in capsys.readouterr().err


def test_a_plugin_hook_that_raises_in_commands_is_skipped(installed, invoke, capsys):
    installed("cmdfail", "import genkit\n@genkit.hookimpl\ndef genkit_register_commands(cli):\n"
                         "    raise ValueError('bad click version')\n")
    assert invoke("plugins").exit_code == 0
    assert ("plugin 'cmdfail': its genkit_register_commands hook failed (ValueError: bad click version); its commands "
            "were skipped (GENKIT_LOAD_PLUGINS lists the plugins to load)") in capsys.readouterr().err


def test_a_loss_carries_its_own_penalty(ring, cache, tmp_path, invoke):
    """ "non-saturating + R1" and "WGAN-LP" are one registration each; --r1 still overrides the carried weight."""
    import json
    import types

    import torch

    from genkit.losses import ns_d, ns_g, wgan_d, wgan_g

    calls = []

    def lipschitz(D, real, fake, cond):  # WGAN-LP (Petzka et al. 2018): one-sided, on interpolates
        calls.append(fake.requires_grad)
        x = (0.5 * (real + fake)).requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x, cond).sum(), x, create_graph=True)
        return 10.0 * torch.relu(grad.norm(dim=1) - 1.0).pow(2).mean()

    extra = types.ModuleType("penalised")
    extra.genkit_register_losses = genkit.hookimpl(lambda register: [
        register(genkit.Loss("ns-r1", ns_d, ns_g, "non-saturating + R1", default_r1=5.0)),
        register(genkit.Loss("wgan-lp", wgan_d, wgan_g, "WGAN-LP", penalty=lipschitz))])
    with registered(extra, name="penalised"):
        common = ("--steps", "2", "--log-every", "1", "--hidden", "8", "--examples", "64", "--batch-size", "16")
        assert invoke("run", "ring", "--loss", "ns-r1", "--out", tmp_path / "a", *common).exit_code == 0
        assert invoke("run", "ring", "--loss", "ns-r1", "--r1", "0", "--out", tmp_path / "b", *common).exit_code == 0
        assert invoke("run", "ring", "--loss", "wgan-lp", "--out", tmp_path / "c", *common).exit_code == 0
    assert "r1 = 5.0" in (tmp_path / "a" / "config.toml").read_text()
    assert "r1 = 0.0" in (tmp_path / "b" / "config.toml").read_text()
    logs = {k: [json.loads(x) for x in (tmp_path / k / "metrics.jsonl").read_text().splitlines()] for k in "abc"}
    assert logs["a"][0]["penalty"] > 0 and "penalty" not in logs["b"][0]
    assert logs["c"][0]["penalty"] >= 0 and calls == [False, False]  # once per D update, on a detached fake


def test_eval_at_start_logs_a_baseline_at_step_0(ring, cache, tmp_path):
    import json

    genkit.train("ring", out=tmp_path / "r", steps=2, eval_at_start=True, hidden=8, examples=64,
                 batch_size=16)
    rows = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in rows if "modes" in r]
    assert evals == [0, 2]
    genkit.train("ring", out=tmp_path / "s", steps=2, hidden=8, examples=64, batch_size=16)
    rows = [json.loads(x) for x in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "modes" in r] == [2]


def test_new_plugin_writes_a_package_that_installs_passes_its_tests_and_trains(tmp_path, invoke):
    """`genkit new-plugin NAME`: pip installs it (into a --target folder, so the test environment is untouched), its
    own tests pass, and `genkit run NAME` finds it through its entry point and trains."""
    import json
    import subprocess

    result = invoke("new-plugin", "tseries", "--dir", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    made = json.loads(result.stdout)
    root = tmp_path / "genkit-tseries"
    assert made["folder"] == str(root)
    assert made["files"] == ["README.md", "genkit_tseries/__init__.py", "pyproject.toml", "tests/conftest.py",
                             "tests/test_tseries.py"]
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(site), str(root)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    env = {**os.environ, "PYTHONPATH": str(site), "GENKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           capture_output=True, text=True, env=env, cwd=tmp_path)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr
    genkit_cli = [sys.executable, "-m", "genkit"]
    listed = subprocess.run([*genkit_cli, "plugins", "--json"], capture_output=True, text=True, env=env)
    rows = {p["name"]: p for p in json.loads(listed.stdout)}
    assert rows["tseries"]["domains"] == ["tseries"] and rows["tseries"]["version"] == "0.1.0"
    run = subprocess.run([*genkit_cli, "run", "tseries", "--steps", "200", "--out", str(tmp_path / "run"), "--json"],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["status"] == "completed" and summary["metrics"]["spectrum_error"] >= 0
    assert len(list((tmp_path / "run" / "samples").glob("*.csv"))) >= 1


def test_new_plugin_refuses_bad_names_and_never_overwrites(tmp_path, invoke):
    (tmp_path / "genkit-mine").mkdir()
    (tmp_path / "genkit-mine" / "notes.txt").write_text("my work")
    result = invoke("new-plugin", "mine", "--dir", tmp_path)
    assert result.exit_code == 2 and "exists already; nothing was written" in result.stderr
    assert (tmp_path / "genkit-mine" / "notes.txt").read_text() == "my work"
    assert invoke("new-plugin", "My-Plugin", "--dir", tmp_path).exit_code == 2
    result = invoke("new-plugin", "image", "--dir", tmp_path)
    assert result.exit_code == 2 and "a domain named 'image' is already registered" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "genkit-mine"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["genkit-mine"]


def test_a_domain_says_what_its_data_option_takes(ring_domain):
    from genkit.cli import _common_decorators

    def data_help(domain):
        import click

        @click.command()
        def cmd(**kwargs):
            pass

        for decorate in _common_decorators(domain):
            cmd = decorate(cmd)
        return next(p.help for p in cmd.params if p.name == "data")

    class NpyRing(ring_domain):
        data_help = "a .npy file of points"

    assert data_help(ring_domain()).startswith("Training data: a folder or a file, or a built-in name: ")
    assert data_help(NpyRing()).startswith("Training data: a .npy file of points, or a built-in name: ")
