"""--precision and --compile on CPU: finite losses, penalties included, and checkpoints that resume
(speed-ups and slow-downs are measured in benchmarks/bench_speed.py, never here)."""

from __future__ import annotations

import math

import pytest
import torch

import genkit
from genkit.checkpoint import load_state

TINY = dict(batch_size=16, g_width=8, d_width=8, log_every=1, device="cpu", sample_every=0, checkpoint_every=2)


def _losses(run):
    return [r for r in run.metrics() if "loss_d" in r]


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_with_finite_losses_and_penalties_and_resumes(precision, tmp_path, use_shared_cache):
    run = genkit.train("image", out=tmp_path / "r", steps=2, precision=precision, r1=1.0, **TINY)
    state = load_state(run.checkpoint())
    assert ("scaler_g" in state) == (precision == "fp16")  # the fp16 gradient scaler is checkpointed
    run = genkit.train("image", resume=tmp_path / "r", steps=4)
    records = _losses(run)
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for r in records:
        assert all(math.isfinite(r[k]) for k in ("loss_d", "loss_g", "penalty")), r
        assert r["penalty"] > 0  # R1 was computed (in fp32) and is part of the discriminator's loss
    g = run.load().generator
    assert all(p.dtype == torch.float32 for p in g.parameters())  # autocast: the weights stay fp32


def test_compile_trains_with_the_penalty_and_keeps_the_checkpoint_keys(tmp_path, use_shared_cache, monkeypatch):
    monkeypatch.setenv("GENKIT_COMPILE_BACKEND", "aot_eager")  # inductor's C++ build takes a minute on this CPU
    run = genkit.train("image", out=tmp_path / "c", steps=2, compile=True, r1=1.0, **TINY)
    records = _losses(run)
    assert len(records) == 2 and all(math.isfinite(r["penalty"]) and r["penalty"] > 0 for r in records)
    from safetensors import safe_open

    with safe_open(str(run.checkpoint() / "generator.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert keys and not any("_orig_mod" in k for k in keys)  # a compiled run's checkpoint loads uncompiled
    assert run.sample(2).shape[0] == 2


def test_channels_last_trains_like_the_default_layout_and_resumes(tmp_path, use_shared_cache):
    """--channels-last changes the memory order only: the same seed gives the same losses (to rounding), the
    weights are stored in their logical (N, C, H, W) shape, and a resumed run keeps training in that layout."""
    plain = genkit.train("image", out=tmp_path / "p", steps=3, r1=1.0, **TINY)
    cl = genkit.train("image", out=tmp_path / "cl", steps=3, r1=1.0, channels_last=True, **TINY)
    for a, b in zip(_losses(plain), _losses(cl), strict=True):
        for k in ("loss_d", "loss_g", "penalty"):
            assert math.isfinite(b[k]) and b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-5), (k, a, b)
    g_plain, g_cl = plain.load().generator.state_dict(), cl.load().generator.state_dict()
    assert g_plain.keys() == g_cl.keys()
    for k, v in g_plain.items():
        assert g_cl[k].shape == v.shape and torch.allclose(g_cl[k], v, atol=1e-4), k
    run = genkit.train("image", resume=tmp_path / "cl", steps=5)
    assert [r["step"] for r in _losses(run)] == [1, 2, 3, 4, 5]
    assert run.config.train.channels_last


def test_channels_last_on_a_model_without_4d_weights_warns(ring, tmp_path, capsys):
    run = genkit.train("ring", out=tmp_path / "t", steps=2, hidden=8, examples=64, batch_size=16, channels_last=True,
                       device="cpu")
    assert "--channels-last has no effect on the ring domain's models" in capsys.readouterr().err
    assert len(_losses(run)) > 0 and run.read_summary()["status"] == "completed"  # and the run trains as usual
