"""Standing batch-norm statistics for the generator used for samples (--standing-stats, BigGAN's)."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch
from test_image import TINY, two_class_npz
from torch import nn

from genkit.sampling import STANDING_SEED, standing_statistics


class Latents:
    """The two methods standing_statistics asks of a domain."""

    def sample_latent(self, n, options, *, rng, device):
        return torch.randn(n, 3, generator=rng, device=device)

    def snapshot_conditions(self, n, data):
        return None


class Net(nn.Module):
    def __init__(self, norm: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 4)
        self.norm = nn.BatchNorm1d(4) if norm else nn.Identity()
        self.drop = nn.Dropout(0.5)

    def forward(self, z, cond=None):
        return self.drop(self.norm(self.lin(z) * 3.0 + 1.0))


def test_standing_statistics_are_the_batch_statistics_of_the_weights_as_they_are():
    G = Net()
    with torch.no_grad():  # running averages that no longer fit the weights
        G.norm.running_mean.fill_(100.0)
        G.norm.running_var.fill_(1e-4)
    G.train()
    rng_before = torch.get_rng_state()
    S = standing_statistics(Latents(), G, None, None, 8, 16, device=torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), rng_before)  # the caller's random stream did not move
    assert S is not G and not S.training and G.training
    assert torch.all(G.norm.running_mean == 100.0)  # the generator itself is left as it was
    # the same latents: 8 batches of 16 from the seeded stream; mean of the batch means and unbiased variances
    rng = torch.Generator().manual_seed(STANDING_SEED)
    with torch.no_grad():
        h = [G.lin(torch.randn(16, 3, generator=rng)) * 3.0 + 1.0 for _ in range(8)]
    mean = torch.stack([b.mean(0) for b in h]).mean(0)
    var = torch.stack([b.var(0, unbiased=True) for b in h]).mean(0)
    assert torch.allclose(S.norm.running_mean, mean, atol=1e-6) and torch.allclose(S.norm.running_var, var, atol=1e-5)
    # in eval mode the copy now normalises as training did: zero mean, unit variance on fresh latents
    with torch.no_grad():
        out = S(torch.randn(4000, 3, generator=torch.Generator().manual_seed(1)))
    assert out.mean(0).abs().max() < 0.1 and (out.std(0) - 1).abs().max() < 0.1
    again = standing_statistics(Latents(), G, None, None, 8, 16, device=torch.device("cpu"))
    assert torch.equal(again.norm.running_var, S.norm.running_var)  # seeded: the weights alone decide


def test_no_batch_norm_or_no_batches_is_the_generator_itself():
    plain = Net(norm=False)
    assert standing_statistics(Latents(), plain, None, None, 8, 16, device=torch.device("cpu")) is plain
    normed = Net()
    assert standing_statistics(Latents(), normed, None, None, 0, 16, device=torch.device("cpu")) is normed


def test_a_run_samples_and_evaluates_with_standing_statistics(invoke, tmp_path):
    """--standing-stats N: config.toml records it; the run's evaluation and genkit eval score the checkpoint's
    weights with standing statistics, and Run.load (behind genkit sample and eval) makes the same copy; the weights
    files keep the running averages of training."""
    import genkit
    from genkit.checkpoint import MODEL_FILES
    from genkit.run import cache_dir

    data = two_class_npz(tmp_path / "d.npz")
    tiny = [a for a in TINY if a not in ("--eval-samples", "0")]
    runs = {}
    for n in (0, 8):
        out = tmp_path / f"run{n}"
        result = invoke("run", "image", "--data", data, *tiny, "--eval-samples", "100", "--steps", "3",
                        "--standing-stats", n, "--out", out, "--json")
        assert result.exit_code == 0, result.output
        runs[n] = (out, json.loads(result.stdout)["metrics"])
    out, during = runs[8]
    assert tomllib.loads((out / "config.toml").read_text())["train"]["standing_stats"] == 8
    after = json.loads(invoke("eval", out, "--json").stdout)
    assert after["metrics"] == pytest.approx(during, rel=1e-6)
    assert during["refnet_fd"] != pytest.approx(runs[0][1]["refnet_fd"], rel=1e-3)  # the same weights, other stats
    run = genkit.Run.open(out)
    loaded = run.load()
    from safetensors.torch import load_file

    saved = load_file(str(run.latest_checkpoint() / MODEL_FILES["generator"]))
    means = [k for k in saved if k.endswith("running_mean")]
    assert means
    loaded_state = loaded.generator.state_dict()
    assert all(not torch.equal(saved[k], loaded_state[k]) for k in means)
    data_obj = run.domain.load_data(run.config.data, run.config.options, cache_dir=cache_dir())
    expected = standing_statistics(run.domain, genkit.Run.open(runs[0][0]).load().generator, run.config.options,
                                   data_obj, 8, 16, device=torch.device("cpu"))
    # the two runs trained the same weights (same seed; the option changes no training step)
    assert all(torch.equal(v, expected.state_dict()[k]) for k, v in loaded_state.items())


def test_a_run_saved_before_standing_statistics_samples_with_its_running_averages(invoke, tmp_path):
    data = two_class_npz(tmp_path / "d.npz", n=40)
    out = tmp_path / "run"
    assert invoke("run", "image", "--data", data, *TINY, "--steps", "1", "--standing-stats", "8", "--out", out,
                  "--quiet").exit_code == 0
    config = out / "config.toml"
    config.write_text("\n".join(line for line in config.read_text().splitlines()
                                if not line.startswith("standing_stats")) + "\n")  # as an older genkit wrote it
    import genkit

    run = genkit.Run.open(out)
    assert run.config.train.standing_stats == 0


def test_the_audio_recipe_samples_with_standing_statistics_and_the_image_recipe_does_not():
    from genkit.config import resolve
    from genkit.plugins import registry

    reg = registry()
    assert resolve(reg.domains["audio"], reg.losses).train.standing_stats == 32
    assert resolve(reg.domains["audio"], reg.losses, flags={"standing_stats": 0}).train.standing_stats == 0
    assert resolve(reg.domains["image"], reg.losses).train.standing_stats == 0
