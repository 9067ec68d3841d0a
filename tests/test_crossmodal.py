"""genkit run TARGET --condition SOURCE: the target's generator conditioned on the source domain's embedding of a
paired example of each sample's class (docs/cross-modal.md)."""

from __future__ import annotations

import json

import pytest
import torch

from genkit import GenkitError
from genkit.crossmodal import Pairs, key_of


def test_pairs_draw_fresh_examples_of_the_asked_key_and_hold_some_out():
    x = torch.arange(100).view(100, 1)
    labels = torch.arange(100) % 4  # example i is of class i % 4
    pairs = Pairs(x, labels, ["zero", "one", "two", "three"], ["0", "1", "2", "3"])
    keys = torch.tensor([3, 1, 1, 0] * 50)
    train = pairs.draw(keys, held_out=False, generator=torch.Generator().manual_seed(0)).flatten()
    test = pairs.draw(keys, held_out=True, generator=torch.Generator().manual_seed(0)).flatten()
    assert torch.equal(train % 4, keys) and torch.equal(test % 4, keys)  # always a paired example of that class
    assert not set(train.tolist()) & set(test.tolist())  # held-out examples are never drawn in training
    assert len(set(train[keys == 1].tolist())) > 5  # fresh examples, not one exemplar per class
    assert sorted(len(t) for t in pairs.test_idx) == [5, 5, 5, 5]
    pairs.override = torch.tensor([[42]])
    assert pairs.draw(keys[:3], held_out=True).flatten().tolist() == [42, 42, 42]
    assert key_of("Seven") == key_of("7") == "7"
    with pytest.raises(GenkitError, match="the source data has no examples of class 'ten'"):
        Pairs(x, labels, ["zero", "one", "two", "three"], ["0", "ten"])


def test_text_to_image_trains_samples_from_a_phrase_and_scores_conditional_accuracy(invoke, cache, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "image", "--condition", "text", "--condition-data", "digits", "--condition-dim", "16",
                    "--condition-warmup", "3", "--steps", "6", "--g-width", "8", "--d-width", "8", "--batch-size", "16",
                    "--eval-samples", "50", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert 0.0 <= metrics["refnet_cond_accuracy"] <= 1.0
    from safetensors.torch import load_file

    weights = load_file(str(out / "checkpoints" / "step-00000006" / "generator.safetensors"))
    assert any(k.startswith("encoder.body.") for k in weights) and any(k.startswith("inner.") for k in weights)
    assert 'condition = "text"' in (out / "config.toml").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["penalty"] > 0.5 for r in rows if "loss_d" in r)  # the encoder's class term, about ln 10 at first
    sampled = invoke("sample", out, "-n", "3", "--condition", "a handwritten seven", "--json")
    assert sampled.exit_code == 0, sampled.stderr
    files = json.loads(sampled.stdout)["files"]
    assert [f.rsplit("/", 1)[1] for f in files] == ["sample-00000.png", "sample-00001.png", "sample-00002.png",
                                                     "grid.png", "condition.json"]
    assert json.loads(open(files[-1]).read()) == {"condition": "a handwritten seven", "source": "text"}
    # the same phrase gives the same embedding for every sample: the three differ only by their latent
    from genkit import Run

    loaded = Run.open(out).load()
    from genkit.crossmodal import use_condition

    use_condition(loaded.generator, loaded.data, "seven")
    with torch.no_grad():
        a = loaded.generator.embed(torch.tensor([0, 5]))
    assert torch.allclose(a[0], a[1]) and torch.allclose(a.norm(dim=1), torch.ones(2))


def test_condition_errors_are_one_line(invoke, cache, tmp_path):
    image = ("run", "image", "--steps", "2", "--g-width", "4", "--d-width", "4")
    for args, message in [
        (("run", "text", "--data", "digits", "--steps", "2", "--condition", "audio"),
         "domain 'text' cannot be conditioned on another domain"),
        ((*image, "--condition", "image"), "a domain cannot be its own source"),
        ((*image, "--condition", "nope"), "unknown domain 'nope'"),
        ((*image, "--condition", "text", "--condition-data", "pydoc"), "has no class labels to pair by"),
    ]:
        result = invoke(*args, "--out", tmp_path / "x")
        assert result.exit_code in (1, 2) and message in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()


def test_the_encoder_class_term_is_collected_in_discriminator_updates_only():
    from genkit.crossmodal import ConditionedDiscriminator

    pairs = Pairs(torch.randn(40, 3), torch.arange(40) % 2, ["a", "b"], ["a", "b"])
    inner = lambda x, c: (x * c[:, :1]).sum(dim=1)  # noqa: E731  a stand-in discriminator taking a condition vector
    D = ConditionedDiscriminator(inner, torch.nn.Linear(3, 4), pairs, dim=4, num_keys=2, key_weight=0.5)
    keys = torch.tensor([0, 1, 1, 0])
    D(torch.randn(4, 1), keys)
    D(torch.randn(4, 1), keys)
    term = D.auxiliary_loss()
    assert term is not None and term.requires_grad and D.auxiliary_loss() is None  # consumed once
    D.requires_grad_(False)  # the generator's update
    D(torch.randn(4, 1), keys)
    assert D.auxiliary_loss() is None


def test_condition_from_takes_an_earlier_runs_encoder_and_keeps_it_frozen(invoke, cache, tmp_path):
    from safetensors.torch import load_file

    common = ("--condition", "text", "--condition-data", "digits", "--condition-dim", "16", "--condition-warmup", "3",
              "--g-width", "8", "--d-width", "8", "--batch-size", "16", "--eval-samples", "50")
    first = tmp_path / "first"
    assert invoke("run", "image", *common, "--steps", "3", "--out", first).exit_code == 0

    def encoder(run, part="discriminator"):
        weights = load_file(str(run / "checkpoints" / "step-00000003" / f"{part}.safetensors"))
        return {k: v for k, v in weights.items() if k.startswith("encoder.")}

    second = tmp_path / "second"
    result = invoke("run", "image", *common, "--steps", "3", "--condition-from", first, "--out", second)
    assert result.exit_code == 0, result.stderr
    theirs, ours, ours_g = encoder(first), encoder(second), encoder(second, "generator")
    assert theirs.keys() == ours.keys() and theirs
    for key in theirs:  # loaded, and not moved by 3 discriminator updates; the generator holds the same encoder
        assert torch.equal(theirs[key], ours[key]) and torch.equal(ours[key], ours_g[key]), key
    assert 'condition_from = "' + str(first / "checkpoints" / "step-00000003") in (second / "config.toml").read_text()
    mismatch = invoke("run", "image", *common[:4], "--condition-dim", "8", *common[6:], "--steps", "2",
                      "--condition-from", first, "--out", tmp_path / "x")
    assert mismatch.exit_code == 2 and len(mismatch.stderr.strip().splitlines()) == 1
    assert "that run's condition is 'text' with dimension 16, this one's 'text' with 8" in mismatch.stderr
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("source,condition_data,value", [("text", "digits", "the number 7"), ("image", "", None)])
def test_audio_as_a_target_trains_on_another_domains_embedding_and_scores_conditional_accuracy(
        invoke, use_shared_cache, tmp_path, source, condition_data, value):
    """text -> audio and image -> audio: the SpecGAN generator takes the embedding beside z, its discriminator a
    projection of it; the evaluation reports conditional accuracy; a sample is drawn from a condition of the
    source's own kind."""
    out = tmp_path / "run"
    extra = ("--condition-data", condition_data) if condition_data else ()
    result = invoke("run", "audio", "--condition", source, *extra, "--condition-dim", "16", "--condition-warmup", "3",
                    "--steps", "4",
                    "--model-size", "2", "--batch-size", "8", "--eval-samples", "40", "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)["metrics"]
    assert 0.0 <= metrics["refnet_cond_accuracy"] <= 1.0 and "refnet_is" in metrics
    from safetensors.torch import load_file

    g = load_file(str(out / "checkpoints" / "step-00000004" / "generator.safetensors"))
    d = load_file(str(out / "checkpoints" / "step-00000004" / "discriminator.safetensors"))
    assert any(k.startswith("encoder.") for k in g) and "inner.dense.weight" in g
    assert g["inner.dense.weight"].shape[1] == 100 + 16  # z and the 16-d embedding, no one-hot label
    assert any(k.startswith("inner.project.") for k in d) and not any(k.startswith("inner.embed.") for k in d)
    if value is None:  # image: a digit written as a PNG file
        from PIL import Image

        value = tmp_path / "seven.png"
        Image.new("L", (28, 28), 0).save(value)
    sampled = invoke("sample", out, "-n", "2", "--condition", value, "--json")
    assert sampled.exit_code == 0, sampled.stderr
    files = json.loads(sampled.stdout)["files"]
    assert sum(f.endswith(".wav") for f in files) == 2
    assert json.loads(open(files[-1]).read())["source"] == source


def test_a_cross_modal_audio_run_gets_the_longer_recipe_unless_told_otherwise():
    from genkit.config import resolve
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domain("audio")
    assert resolve(audio, reg.losses).train.steps == 1500  # the label-conditioned default (built-in digits)
    crossmodal = resolve(audio, reg.losses, flags={"condition": "text"}).train
    assert (crossmodal.steps, crossmodal.eval_every, crossmodal.checkpoint_every) == (3000, 1000, 1000)
    assert crossmodal.condition_gain == 1.0  # audio's own; an image target takes the engine's 3
    assert resolve(reg.domain("image"), reg.losses, flags={"condition": "audio"}).train.condition_gain == 3.0
    assert resolve(audio, reg.losses, flags={"condition": "text", "condition_gain": 2.0}).train.condition_gain == 2.0
    assert resolve(audio, reg.losses, flags={"condition": "text", "steps": 40}).train.steps == 40  # a flag wins
    assert resolve(audio, reg.losses, preset="paper", flags={"condition": "image"}).train.steps == 100000


def test_the_warm_up_trains_only_the_encoder_and_its_key_classifier_to_name_held_out_examples():
    """--condition-warmup: before adversarial training the encoder learns to name the key of training examples; the
    target's own networks are not touched, and the classifier's accuracy on held-out examples is what it reports."""
    from genkit.crossmodal import ConditionedDiscriminator, warm_up

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(300) % 3
    x = torch.randn(300, 8, generator=g) * 0.5 + torch.eye(3, 8)[labels] * 2.0  # three separable blobs
    pairs = Pairs(x, labels, ["a", "b", "c"], ["a", "b", "c"])
    inner = torch.nn.Linear(8, 1)
    D = ConditionedDiscriminator(inner, torch.nn.Linear(8, 16), pairs, dim=16, num_keys=3, key_weight=1.0)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    stats = warm_up(D, 200, 32, torch.device("cpu"), seed=0)
    assert set(stats) == {"condition_warmup_loss", "condition_accuracy"}
    assert stats["condition_accuracy"] >= 0.95
    assert stats["condition_warmup_loss"] < 0.2
    after = D.state_dict()
    assert torch.equal(after["inner.weight"], before["inner.weight"])  # the target's D is not trained here
    assert not torch.equal(after["encoder.weight"], before["encoder.weight"])
    assert not torch.equal(after["classify.weight"], before["classify.weight"])
    assert warm_up(D, 0, 32, torch.device("cpu"), seed=0) == {}
    frozen = ConditionedDiscriminator(inner, torch.nn.Linear(8, 16), pairs, dim=16, num_keys=3, key_weight=1.0,
                                      frozen=True)  # --condition-from: nothing to warm up
    assert warm_up(frozen, 10, 32, torch.device("cpu"), seed=0) == {}


def test_a_cross_modal_run_logs_its_warm_up_at_step_0_once_and_not_under_condition_from(invoke, cache, tmp_path):
    common = ("--condition", "text", "--condition-data", "digits", "--condition-dim", "16", "--g-width", "8",
              "--d-width", "8", "--batch-size", "16", "--eval-samples", "0", "--checkpoint-every", "2")
    out = tmp_path / "run"
    assert invoke("run", "image", *common, "--condition-warmup", "40", "--steps", "2", "--out", out).exit_code == 0
    assert invoke("run", "image", "--resume", out, "--steps", "4").exit_code == 0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    warm = [r for r in rows if r.get("phase") == "condition-warmup"]
    assert len(warm) == 1 and rows[0] is warm[0] and warm[0]["step"] == 0  # first, and not again on --resume
    assert 0.0 <= warm[0]["condition_accuracy"] <= 1.0 and warm[0]["condition_warmup_loss"] > 0
    assert "condition_warmup = 40" in (out / "config.toml").read_text()
    frozen = tmp_path / "frozen"
    result = invoke("run", "image", *common, "--condition-from", out, "--steps", "1", "--out", frozen)
    assert result.exit_code == 0, result.stderr
    assert not any("phase" in json.loads(line) for line in (frozen / "metrics.jsonl").read_text().splitlines())


def test_a_run_saved_before_the_warm_up_existed_reads_as_having_none():
    """config.toml of an earlier genkit has no condition_warmup: the run had no warm-up, so it reads as 0 (what it
    did), not today's default; a run that records one keeps it."""
    from genkit.config import from_saved
    from genkit.plugins import registry

    image = registry().domain("image")
    old = {"domain": "image", "data": "mnist5k", "train": {"steps": 10, "condition": "text"}, "image": {}}
    legacy = from_saved(old, image, "test").train
    assert (legacy.condition_warmup, legacy.condition_gain) == (0, 1.0)  # what such a run trained (and samples) with
    new = {**old, "train": {"steps": 10, "condition": "text", "condition_warmup": 1000, "condition_gain": 3.0}}
    recorded = from_saved(new, image, "test").train
    assert (recorded.condition_warmup, recorded.condition_gain) == (1000, 3.0)


def test_the_generator_takes_the_embedding_times_the_gain_and_the_discriminator_takes_it_unit_norm():
    from genkit.crossmodal import ConditionedDiscriminator, ConditionedGenerator

    pairs = Pairs(torch.randn(40, 3), torch.arange(40) % 2, ["a", "b"], ["a", "b"])
    encoder = torch.nn.Linear(3, 4)
    seen = {}

    def inner(x, c):  # a stand-in network that records its condition
        seen["c"] = c
        return x

    keys = torch.tensor([0, 1, 1])
    G = ConditionedGenerator(inner, encoder, pairs, gain=3.0)
    G(torch.randn(3, 2), keys)
    assert torch.allclose(seen["c"].norm(dim=1), torch.full((3,), 3.0))
    ConditionedDiscriminator(inner, encoder, pairs, dim=4, num_keys=2)(torch.randn(3, 2), keys)
    assert torch.allclose(seen["c"].norm(dim=1), torch.ones(3))
    assert torch.allclose(G.embed(keys).norm(dim=1), torch.ones(3))  # what genkit sample and the docs call the embedding


def test_a_text_source_keeps_the_data_pipeline_saved_cross_modal_runs_were_trained_with(tmp_path):
    """A --condition source's data is rebuilt at every load of the run, so the text domain's later defaults
    (--dedup, --max-len auto) do not reach it: its tokenizer and phrase length stay those of the saved encoder."""
    from genkit.crossmodal import load_source
    from genkit_text import data as tdata

    phrases = tmp_path / "phrases.txt"
    long_line = " ".join(["a handwritten seven drawn slowly with a thick pen"] * 6) + "."
    lines = ["a seven", "a seven", "a seven", "an eight", "a nine", long_line] * 5
    phrases.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = load_source("text", str(phrases), tmp_path, labelled=False)
    assert source.options.dedup is False and source.options.max_len == 32 and source.data.state["seq_len"] == 32
    train, test = source.data.extra["train_texts"], source.data.extra["test_texts"]
    assert len(train) + len(test) == 30  # every copy kept, as before --dedup
    assert tdata.whole_len(tdata.tokenize(source.data.extra["tokenizer"], train)) > 40  # auto would have said 40
