"""Typed settings: one declaration gives the flag, the config key, the checks and the --help default;
a domain whose options collide with genkit's own names is rejected when its plugin registers."""

from __future__ import annotations

import dataclasses
import json
import types
from dataclasses import dataclass
from typing import Literal

import pytest

import genkit
from genkit import GenkitError, hookimpl, option
from genkit.config import TRAIN_SETTINGS, engine_defaults, resolve, resume
from genkit.options import settings
from genkit.plugins import register_plugin, registry, unregister_plugin


@dataclass(frozen=True)
class Demo:
    width: int = option(8, "Width.", gt=0)
    rate: float = option(0.5, "Rate.", ge=0, lt=1)
    mode: Literal["a", "b"] = option("a", "Mode.")
    side: Literal[28, 32] | None = option(None, "Side.", auto="the data's")
    flag: bool = option(False, "Flag.")
    name: str = option("", "Name.")


def test_settings_are_typed_from_the_declaration():
    by_name = {s.name: s for s in settings(Demo)}
    assert (by_name["width"].kind, by_name["rate"].kind, by_name["flag"].kind) == (int, float, bool)
    assert by_name["mode"].choices == ("a", "b") and by_name["side"].choices == (28, 32)
    assert by_name["side"].optional and not by_name["width"].optional
    assert by_name["rate"].describe() == {"name": "rate", "flag": "--rate", "type": "float", "default": 0.5,
                                          "help": "Rate.", "range": "in [0, 1)"}


@pytest.mark.parametrize("field, value, message", [
    ("width", 0, "must be positive, got 0"),
    ("width", 2.5, "must be int, got 2.5"),
    ("width", True, "must be int, got True"),
    ("rate", 1.0, "must be in [0, 1), got 1.0"),
    ("rate", float("nan"), "must be a finite number, got nan"),
    ("rate", float("inf"), "must be a finite number, got inf"),
    ("mode", "c", "must be one of a, b, got 'c'"),
    ("side", 48, "must be one of 28, 32, got 48"),
    ("flag", "yes", "must be bool, got 'yes'"),
])
def test_each_value_is_checked_with_a_one_line_usage_error(field, value, message):
    setting = {s.name: s for s in settings(Demo)}[field]
    with pytest.raises(GenkitError) as info:
        setting.check(value, "my.toml")
    assert info.value.exit_code == 2
    assert str(info.value.format_message()) == f"my.toml: {field} {message}"


def test_ints_are_accepted_for_floats_and_none_means_auto():
    by_name = {s.name: s for s in settings(Demo)}
    assert by_name["rate"].check(0) == 0.0 and isinstance(by_name["rate"].check(0), float)
    assert by_name["side"].check(None) is None
    with pytest.raises(GenkitError, match="width must be set"):
        by_name["width"].check(None, "x")


def test_an_untypable_field_is_refused():
    @dataclass(frozen=True)
    class Bad:
        sizes: list = dataclasses.field(default_factory=list)

    with pytest.raises(TypeError, match="field 'sizes'"):
        settings(Bad)


def test_layers_engine_recipe_preset_file_flags(tmp_path):
    image = registry().domain("image")
    losses = registry().losses
    assert resolve(image, losses).train.steps == 7500  # the recipe over the engine's 2000
    assert resolve(image, losses, preset="quick").train.steps == 400  # the preset over the recipe
    for name in ("image", "audio", "text"):  # every built-in domain has a smoke-run preset of the same name
        assert "quick" in registry().domain(name).all_presets()
    audio = registry().domain("audio")
    quick = resolve(audio, losses, preset="quick")  # over the built-in digits' 1,500 steps
    assert (quick.train.steps, quick.train.eval_every, quick.options.model) == (200, 0, "specgan")
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text('preset = "quick"\n[train]\nsteps = 7\n[image]\ng_width = 12\n')
    from_file = resolve(image, losses, file=cfg_file)
    assert (from_file.preset, from_file.train.steps, from_file.options.g_width) == ("quick", 7, 12)
    flagged = resolve(image, losses, file=cfg_file, flags={"steps": 9, "g_width": 16})
    assert (flagged.train.steps, flagged.options.g_width) == (9, 16)  # flags win
    assert flagged.train.gp == 0.0 and resolve(image, losses, flags={"loss": "wgan-gp"}).train.gp == 10.0


def test_resume_layer_accepts_resumable_settings_and_refuses_others_by_name():
    image = registry().domain("image")
    saved = resolve(image, registry().losses, flags={"steps": 10})
    assert resume(saved, image, registry().losses, {"steps": 20, "eval_samples": 50}).train.steps == 20
    assert resume(saved, image, registry().losses, {"lr_g": saved.train.lr_g}).train == saved.train  # unchanged: fine
    with pytest.raises(GenkitError) as info:
        resume(saved, image, registry().losses, {"lr_g": 1e-3, "g_width": 8, "steps": 20})
    assert info.value.exit_code == 2
    assert "--resume: --lr-g, --g-width cannot change in an existing run" in info.value.format_message()


@pytest.mark.parametrize("domain, steps, loss", [("image", 7500, "ns"), ("audio", 1000, "hinge"), ("text", 100, "rsgan")])
def test_help_shows_each_domains_effective_defaults(invoke, domain, steps, loss):
    from genkit.cli import make_run_command

    dom = registry().domain(domain)
    train_defaults, option_defaults = engine_defaults(dom)
    params = {p.name: p for p in make_run_command(dom).params}
    for s in TRAIN_SETTINGS.values():
        assert params[s.name].help.endswith("]") and "[default: " in params[s.name].help, s.name
    assert train_defaults["steps"] == steps and params["steps"].help.endswith(f"[default: {steps}]")
    assert params["loss"].help.endswith(f"[default: {loss}]")
    assert sorted(params["loss"].type.choices) == sorted(registry().losses)  # from the loss registry
    for s in settings(dom.Options):
        assert s.name in params, s.name
    text = " ".join(invoke("run", domain, "--help").stdout.split())
    assert f"[default: {steps}]" in text and "--data TEXT Training data" in text
    for name in dom.data_names:  # --data lists the domain's built-in data
        assert name in text.split("--data TEXT")[1].split("--out")[0].replace("- ", "-"), name


def test_config_toml_holds_resolved_values_only(invoke, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "image", "--g-width", "8", "--d-width", "8", "--batch-size", "16", "--steps", "1",
                    "--eval-samples", "0", "--out", out, "--quiet")
    assert result.exit_code == 0, result.stderr
    import tomllib

    saved = tomllib.loads((out / "config.toml").read_text())
    assert saved["image"]["size"] == 28 and saved["image"]["channels"] == 1  # not "auto", not 0
    assert saved["train"]["gp"] == 0.0
    info = json.loads(invoke("info", "image", "--json").stdout)
    assert info["config"]["image"]["size"] == 28
    assert {s["name"] for s in info["settings"]["image"]} >= {"size", "g_width", "augment"}
    text = {s["name"]: s for s in json.loads(invoke("info", "text", "--json").stdout)["settings"]["train"]}
    assert text["steps"]["default"] == 100 and text["pretrain_steps"]["default"] == 1800  # the recipe's
    assert set(text["loss"]["choices"]) == set(registry().losses)


def test_auto_given_explicitly_overrides_a_saved_value(invoke, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\nloss = "ns"\ngp = 0.0\n[image]\nsize = 28\n')
    losses = registry().losses
    image = registry().domain("image")
    # a resolved config says gp = 0.0 for ns; a later --loss wgan-gp gets its own default penalty back
    assert resolve(image, losses, file=cfg, flags={"loss": "wgan-gp"}).train.gp == 10.0
    assert resolve(image, losses, file=cfg, flags={"loss": "wgan-gp", "gp": 1.0}).train.gp == 1.0
    from genkit.options import AUTO

    assert resolve(image, losses, file=cfg, flags={"size": AUTO}).options.size is None  # --size auto
    info = json.loads(invoke("info", "image", "--config", cfg, "--loss", "wgan-gp", "--gp", "auto", "--json").stdout)
    assert info["config"]["train"]["gp"] == 10.0


def test_a_check_across_fields_names_the_config_file(invoke, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[train]\ndevice = "gpu"\n')
    result = invoke("run", "image", "--config", cfg, "--out", tmp_path / "o")
    assert result.exit_code == 2 and f"{cfg}: --device must be auto, cpu, cuda, cuda:N or mps" in result.stderr


# -- registration checks --------------------------------------------------------------------------------------


def domain_plugin(option_name: str | None = None, legacy: bool = False, recipe=None, data_recipes=None):
    """A plugin module with one domain whose options include ``option_name``."""
    import genkit_ring

    if legacy:
        class Legacy(genkit_ring.RingDomain):
            name = "clashy"
            Options = genkit.NoOptions
            options = (genkit.Option(option_name, 1, "clashes"),)
        dom = Legacy()
    else:
        fields = [(option_name, int, option(1, "clashes"))] if option_name else []
        opts = dataclasses.make_dataclass("ClashOptions", fields, frozen=True)

        class Clashy(genkit_ring.RingDomain):
            name = "clashy"
            Options = opts
        dom = Clashy()
        if recipe is not None:
            dom.recipe = recipe
        if data_recipes is not None:
            dom.data_recipes = data_recipes
    module = types.ModuleType("clashy_plugin")
    module.genkit_register_domains = hookimpl(lambda register: register(dom))
    return module


@pytest.mark.parametrize("name, kind", [
    ("seed", "collides with the engine setting --seed"),
    ("lr_g", "collides with the engine setting --lr-g"),
    ("data", "collides with the command option --data"),
    ("resume", "collides with the command option --resume"),
    ("train", "is a reserved name"),
    ("domain", "is a reserved name"),
])
@pytest.mark.parametrize("legacy", [False, True])
def test_option_clashes_are_rejected_at_registration_naming_plugin_and_option(name, kind, legacy):
    with pytest.raises(GenkitError) as info:
        register_plugin(domain_plugin(name, legacy=legacy), name="clash-plugin")
    assert info.value.format_message() == \
        f"plugin 'clash-plugin': domain 'clashy' rejected: option {name!r} {kind}; rename it"
    assert "clashy" not in registry().domains  # and nothing of it stays registered


def test_a_recipe_naming_an_unknown_setting_or_a_bad_value_is_rejected():
    with pytest.raises(GenkitError, match="its recipe sets 'learning_rate', which is neither"):
        register_plugin(domain_plugin(recipe={"learning_rate": 0.1}), name="bad-recipe")
    with pytest.raises(GenkitError, match="plugin 'bad-value': domain 'clashy' rejected: its recipe: --steps must be "
                                          "positive, got 0"):
        register_plugin(domain_plugin(recipe={"steps": 0}), name="bad-value")
    with pytest.raises(GenkitError, match="its recipe for --data tiny sets 'lr', which is neither"):
        register_plugin(domain_plugin(data_recipes={"tiny": {"lr": 0.1}}), name="bad-data-recipe")
    assert "clashy" not in registry().domains


def test_a_named_data_sets_recipe_layers_between_recipe_and_preset():
    register_plugin(domain_plugin(recipe={"steps": 50}, data_recipes={"tiny": {"steps": 7, "batch_size": 4}}),
                    name="data-recipe")
    try:
        dom, losses = registry().domain("clashy"), registry().losses
        assert resolve(dom, losses).train.steps == 50  # the default data: the plain recipe
        tiny = resolve(dom, losses, data="tiny")
        assert (tiny.train.steps, tiny.train.batch_size) == (7, 4)
        assert resolve(dom, losses, data="tiny", flags={"steps": 9}).train.steps == 9
        assert resolve(dom, losses, data="other").train.steps == 50
    finally:
        unregister_plugin("data-recipe")


def test_options_whose_types_cannot_be_resolved_are_rejected_not_fatal():
    import genkit_ring

    namespace: dict = {}
    exec("from __future__ import annotations\nfrom dataclasses import dataclass\nimport genkit\n"
         "@dataclass(frozen=True)\nclass O:\n    w: Width = genkit.option(1, 'x')\n", namespace)

    class Unresolvable(genkit_ring.RingDomain):
        name = "clashy"
        Options = namespace["O"]

    module = types.ModuleType("unresolvable")
    module.genkit_register_domains = hookimpl(lambda register: register(Unresolvable()))
    with pytest.raises(GenkitError, match="rejected: its Options: NameError"):
        register_plugin(module, name="unresolvable")
    assert "image" in registry().domains


def test_a_hook_that_raises_is_skipped_naming_the_plugin(invoke):
    def boom(register):
        raise RuntimeError("kaput")

    module = types.ModuleType("boom")
    module.genkit_register_domains = hookimpl(boom)
    with pytest.raises(GenkitError, match="plugin 'boom': its genkit_register_domains hook failed "
                                          r"\(RuntimeError: kaput\)"):
        register_plugin(module, name="boom")
    assert invoke("plugins").exit_code == 0


def test_a_rejected_entry_point_plugin_leaves_the_cli_working(tmp_path):
    """An installed plugin (a distribution found on the path, as pip would leave it) whose domain is rejected."""
    import subprocess
    import sys

    (tmp_path / "genkit_clash.py").write_text(
        "from dataclasses import dataclass\nimport genkit\n"
        "@dataclass(frozen=True)\nclass O:\n    seed: int = genkit.option(1, 'mine')\n"
        "class D(genkit.Domain):\n    name = 'clash'\n    Options = O\n"
        "@genkit.hookimpl\ndef genkit_register_domains(register):\n    register(D())\n")
    (tmp_path / "fake.dist-info").mkdir()
    (tmp_path / "fake.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: genkit-clash\nVersion: 1.0\n")
    (tmp_path / "fake.dist-info" / "entry_points.txt").write_text("[genkit]\nclash = genkit_clash\n")
    env = {**__import__("os").environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "genkit", "plugins"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "plugin 'clash': domain 'clash' rejected: option 'seed' collides with the engine setting --seed" in out.stderr
    assert "image" in out.stdout and "domains: clash" not in out.stdout
