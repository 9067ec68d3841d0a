"""Plugin loading: hooks register domains, losses and commands; conflicts and broken plugins are reported."""

from __future__ import annotations

import importlib.metadata
import sys
import types

import click
import pytest

from genkit import GenkitError, Loss, hookimpl
from genkit import plugins as plugins_mod
from genkit.plugins import register_plugin, registry, unregister_plugin


class ExtraPlugin:
    """A test plugin using every hook."""

    @staticmethod
    @hookimpl
    def genkit_register_losses(register):
        register(Loss("softhinge", lambda r, f: (1 - r).clamp(min=0).mean() + (1 + f).clamp(min=0).mean(),
                      lambda f, r=None: -f.mean(), "test loss"))

    @staticmethod
    @hookimpl
    def genkit_register_commands(cli):
        @cli.command()
        def hello():
            """Say hello."""
            click.echo("hello from a plugin")


@pytest.fixture
def extra():
    register_plugin(ExtraPlugin, name="extra")
    yield
    unregister_plugin("extra")


def test_hook_genkit_register_losses(extra, invoke, ring, tmp_path):
    assert registry().owners[("loss", "softhinge")] == "extra"
    # the plugin's loss trains through the engine like a built-in one
    result = invoke("run", "ring", "--loss", "softhinge", "--steps", "3", "--examples", "256", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.output
    assert 'loss = "softhinge"' in (tmp_path / "r" / "config.toml").read_text()


def test_hook_genkit_register_commands(extra, invoke):
    assert invoke("hello").stdout == "hello from a plugin\n"
    rows = {p["name"]: p for p in __import__("json").loads(invoke("plugins", "--json").stdout)}
    assert rows["extra"]["commands"] == ["hello"] and rows["extra"]["losses"] == ["softhinge"]


def test_hook_genkit_register_domains(ring, invoke):
    assert "ring" in invoke("run", "--help").stdout
    assert registry().owners[("domain", "ring")] == "ring"


def test_two_plugins_claiming_one_domain_name_both_plugins():
    import genkit_ring

    clash = types.ModuleType("clash")
    clash.genkit_register_domains = hookimpl(lambda register: register(genkit_ring.RingDomain()))
    register_plugin(genkit_ring, name="ring")
    try:
        with pytest.raises(GenkitError, match="plugin 'clash': domain 'ring' is already registered by plugin 'ring'; skipped it"):
            register_plugin(clash, name="clash")
        assert not plugins_mod.pm.has_plugin("clash")  # refused, and the registry still works without it
        assert registry().owners[("domain", "ring")] == "ring"
    finally:
        unregister_plugin("ring")


def test_misspelt_hook_fails_loudly():
    typo = types.ModuleType("typo")
    typo.genkit_register_domain = hookimpl(lambda register: None)  # missing 's'
    with pytest.raises(Exception, match="genkit_register_domain"):
        register_plugin(typo, name="typo")
    plugins_mod.pm.unregister(name="typo")


@pytest.fixture
def fake_entry_points(monkeypatch, tmp_path):
    """Pretend that two third-party plugins are installed: one that works, one that fails to import."""
    (tmp_path / "genkit_good.py").write_text(
        "import genkit\n"
        "@genkit.hookimpl\n"
        "def genkit_register_losses(register):\n"
        "    register(genkit.Loss('good', lambda r, f: f.mean(), lambda f, r=None: -f.mean()))\n")
    (tmp_path / "genkit_broken.py").write_text("raise ImportError('needs libfoo')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    real = importlib.metadata.entry_points
    extra = [importlib.metadata.EntryPoint("good", "genkit_good", "genkit"),
             importlib.metadata.EntryPoint("broken", "genkit_broken", "genkit")]

    def entry_points(group=None, **kw):
        found = list(real(group=group, **kw))
        return found + extra if group == "genkit" else found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    plugins_mod.reset()
    yield
    for name in ("genkit_good", "genkit_broken"):
        sys.modules.pop(name, None)
    plugins_mod.reset()


def test_entry_point_plugins_load_and_broken_ones_are_skipped(fake_entry_points, capsys):
    reg = registry()
    assert "good" in reg.losses and "image" in reg.domains
    err = capsys.readouterr().err
    assert "plugin 'broken' (genkit_broken) failed to load and was skipped: needs libfoo" in err


def test_genkit_load_plugins_allowlist(fake_entry_points, monkeypatch):
    monkeypatch.setenv("GENKIT_LOAD_PLUGINS", "")
    reg = registry()
    assert "good" not in reg.losses  # third-party plugins off
    assert "image" in reg.domains  # built-in domains still there
    plugins_mod.reset()
    monkeypatch.setenv("GENKIT_LOAD_PLUGINS", "good")
    assert "good" in registry().losses


def test_a_plugin_cannot_replace_a_command(invoke, capsys):
    class Hijack:
        @staticmethod
        @hookimpl
        def genkit_register_commands(cli):
            @cli.command(name="run")
            def run():
                click.echo("hijacked")

    register_plugin(Hijack, name="hijack")
    try:
        result = invoke("run", "image", "--help")
        assert result.exit_code == 0 and "Train the image domain" in result.stdout
        assert ("plugin 'hijack': the command 'run' is already registered by genkit; skipped it "
                "(GENKIT_LOAD_PLUGINS") in result.stderr + \
            capsys.readouterr().err
    finally:
        unregister_plugin("hijack")


def test_an_installed_plugin_with_a_misspelt_hook_is_skipped(fake_entry_points, tmp_path, capsys):
    (tmp_path / "genkit_typo.py").write_text(
        "import genkit\n@genkit.hookimpl\ndef genkit_register_domain(register):\n    pass\n")
    real = importlib.metadata.entry_points

    def entry_points(group=None, **kw):
        found = list(real(group=group, **kw))
        return found + [importlib.metadata.EntryPoint("typo", "genkit_typo", "genkit")] if group == "genkit" else found

    importlib.metadata.entry_points = entry_points
    try:
        plugins_mod.reset()
        reg = registry()
        assert "image" in reg.domains and "typo" not in reg.plugins
        err = capsys.readouterr().err
        assert "plugin 'typo' (genkit_typo) failed to load and was skipped" in err and "GENKIT_LOAD_PLUGINS" in err
    finally:
        importlib.metadata.entry_points = real
        sys.modules.pop("genkit_typo", None)
        plugins_mod.reset()
