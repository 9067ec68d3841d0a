"""The Python API (docs/python-api.md) end to end for each built-in domain: train a few steps, open the run,
sample (tensors, nothing written), write samples, evaluate; and what a notebook user relies on around it."""

from __future__ import annotations

import json

import pytest
import torch

import genkit
from genkit import GenkitError, Run

TINY = {
    "image": dict(g_width=8, d_width=8, batch_size=16, eval_samples=100),
    "audio": dict(model_size=2, latent_dim=4, batch_size=4, eval_samples=20),
    "text": dict(data="pydoc", tokenizer="word", vocab_size=300, max_len=12, n_embd=16, n_head=2, d_embed=8,
                 d_filters=4, batch_size=8, pretrain_steps=2, bleu_samples=20, sweep="1.0", device="cpu"),
}


@pytest.fixture
def api_cache(use_shared_cache):
    return use_shared_cache


@pytest.mark.parametrize("domain, shape", [("image", (3, 1, 28, 28)), ("audio", (3, 1, 16384)), ("text", (3, 12))])
def test_train_open_sample_write_evaluate(api_cache, tmp_path, domain, shape):
    run = genkit.train(domain, out=tmp_path / "run", steps=2, checkpoint_every=0, sample_every=0, **TINY[domain])
    assert isinstance(run, Run) and run.root == tmp_path / "run"
    assert run.read_summary()["status"] == "completed" and run.read_summary()["steps"] == 2
    assert run.config.train.steps == 2 and run.config.domain == domain  # the typed, resolved config

    opened = Run.open(tmp_path / "run")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    a, b = opened.sample(3, seed=5), opened.sample(3, seed=5)
    assert tuple(a.shape) == shape
    assert torch.equal(a, b) and not torch.equal(a, opened.sample(3, seed=6))  # reproducible by seed
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # sample() writes nothing

    files = opened.write_samples(3, tmp_path / "out", seed=5)
    assert files and all(f.is_file() and f.parent == tmp_path / "out" for f in files)
    with pytest.raises(GenkitError, match="not empty"):  # never over what is there
        opened.write_samples(3, tmp_path / "out")

    metrics = opened.evaluate()
    assert metrics and all(isinstance(v, float) for v in metrics.values())
    if domain != "text":
        assert {"refnet_is", "refnet_fd", "refnet_accuracy"} <= set(metrics)
    else:
        assert "bleu2_method1" in metrics and "mle_t1_nll_gen" in metrics  # the MLE sweep, from the run's state


def test_train_takes_presets_config_files_and_resume(api_cache, tmp_path):
    run = genkit.train("image", out=tmp_path / "a", preset="quick", steps=2, checkpoint_every=1, sample_every=0,
                       **TINY["image"])
    assert run.config.preset == "quick"
    again = genkit.train("image", out=tmp_path / "b", config=run.config_path, sample_every=0)
    assert again.config.train == run.config.train and again.config.options == run.config.options
    more = genkit.train("image", resume=run.root, steps=3)
    assert more.read_summary()["steps"] == 3
    with pytest.raises(GenkitError, match="--lr-g cannot change"):
        genkit.train("image", resume=run.root, steps=4, lr_g=0.1)
    with pytest.raises(GenkitError, match="unknown key 'colour'"):
        genkit.train("image", out=tmp_path / "c", colour="red")
    assert not (tmp_path / "c").exists()


def test_run_owns_the_layout_and_the_pointers(api_cache, tmp_path):
    run = genkit.train("image", out=tmp_path / "r", steps=4, checkpoint_every=2, eval_every=2, sample_every=0,
                       **TINY["image"])
    assert run.latest_checkpoint().name == "step-00000004"
    assert run.best_checkpoint() is not None and run.checkpoint(best=True) == run.best_checkpoint()
    assert [r["step"] for r in run.metrics() if "refnet_fd" in r] == [2, 4]  # evaluations at eval_every and the end
    pinned = Run.open(run.checkpoints_dir / "step-00000002")  # a checkpoint folder pins that checkpoint
    assert pinned.root == run.root and pinned.checkpoint() == run.checkpoints_dir / "step-00000002"
    json.loads(run.data_meta_path.read_text())  # valid JSON
    with pytest.raises(GenkitError, match="holds no genkit run"):
        Run.open(tmp_path)
    with pytest.raises(GenkitError, match="no such run"):
        Run.open(tmp_path / "nowhere")


def test_domain_state_must_be_checkpointable(ring, tmp_path):
    class Opaque:
        pass

    from genkit.plugins import registry

    dom = registry().domain("ring")
    original = dom.load_data

    def load_data(spec, options, *, cache_dir):
        data = original(spec, options, cache_dir=cache_dir)
        data.state["handle"] = Opaque()  # not a tensor, number, string, list or dict
        return data

    dom.load_data = load_data
    try:
        with pytest.raises(GenkitError, match="domain state 'handle' is a Opaque"):
            genkit.train("ring", out=tmp_path / "r", steps=2, hidden=8, examples=256)
        assert not (tmp_path / "r").exists()  # refused before anything is written, not at the first checkpoint
    finally:
        del dom.load_data


def test_train_accepts_a_domain_instance_checked_like_a_registered_one(ring, tmp_path):
    import dataclasses

    import genkit_ring

    run = genkit.train(genkit_ring.RingDomain(), out=tmp_path / "r", steps=2, hidden=8, examples=256)
    assert run.sample(4).shape == (4, 2)

    class Clashing(genkit_ring.RingDomain):
        Options = dataclasses.make_dataclass("O", [("seed", int, genkit.option(1, "x"))], frozen=True)

    with pytest.raises(GenkitError, match="option 'seed' collides with the engine setting --seed"):
        genkit.train(Clashing(), out=tmp_path / "c", steps=2)
