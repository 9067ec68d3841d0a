"""--init-from: a run starts from another run's weights (the seed document's advice 10.3, transfer learning)."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch

import genkit
from genkit import GenkitError

from conftest import load_weights
from test_engine import make_trainer


@pytest.fixture
def source(ring, tmp_path):
    return genkit.train("ring", out=tmp_path / "source", steps=3, hidden=16, examples=256, ema=0.9,
                        checkpoint_every=0, sample_every=0)


def test_init_from_loads_exactly_the_weights_it_names(source, tmp_path):
    t = make_trainer(tmp_path, "target", steps=2, ema=0.9)
    used = t.init_from(source.root)
    assert used == source.latest_checkpoint()
    for name, module in (("generator", t.G), ("discriminator", t.D), ("generator_ema", t.ema.model)):
        saved = load_weights(used / f"{name}.safetensors")
        assert all(torch.equal(saved[k], v) for k, v in module.state_dict().items()), name


def test_init_from_the_generator_only_leaves_a_fresh_discriminator(source, tmp_path):
    fresh = make_trainer(tmp_path, "fresh", steps=2)
    t = make_trainer(tmp_path, "g-only", steps=2)
    t.init_from(source.latest_checkpoint(), parts="g")  # a checkpoint folder works too
    saved = load_weights(source.latest_checkpoint() / "generator.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in t.G.state_dict().items())
    assert all(torch.equal(a, b) for a, b in zip(t.D.state_dict().values(), fresh.D.state_dict().values()))


def test_mismatched_shapes_are_refused_naming_the_layer(source, tmp_path):
    t = make_trainer(tmp_path, "wider", steps=2, hidden=32)
    with pytest.raises(GenkitError) as info:
        t.init_from(source.root)
    message = info.value.format_message()
    assert message.startswith(f"--init-from {source.root}: generator layer ")
    assert "(16," in message and "(32," in message  # both shapes


def test_the_new_run_records_where_it_started(source, invoke, tmp_path):
    out = tmp_path / "tuned"
    result = invoke("run", "ring", "--init-from", source.root, "--init-from-parts", "g", "--steps", "2", "--hidden", "16",
                    "--examples", "256", "--out", out, "--quiet", "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["init_from"] == {"checkpoint": str(source.latest_checkpoint()), "parts": "g"}
    assert tomllib.loads((out / "config.toml").read_text())["train"]["init_from"] == str(source.latest_checkpoint())
    again = invoke("run", "ring", "--config", out / "config.toml", "--out", tmp_path / "again", "--quiet")
    assert again.exit_code == 0, again.stderr  # the recorded config reproduces the start
    bad = invoke("run", "ring", "--init-from", tmp_path / "nowhere", "--out", tmp_path / "bad")
    assert bad.exit_code == 1 and "no such run or checkpoint" in bad.stderr and not (tmp_path / "bad").exists()
    wider = invoke("run", "ring", "--init-from", source.root, "--hidden", "32", "--out", tmp_path / "w")
    assert wider.exit_code == 1 and "generator layer" in wider.stderr and not (tmp_path / "w").exists()
