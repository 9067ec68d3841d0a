"""The audio domain: WaveGAN's layer plan against the authors' code, phase shuffle, the gradient penalty,
WAV I/O, folder loading, the embedded spoken-digit corpus, and tiny end-to-end runs through the CLI."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from genkit import GenkitError
from genkit.checkpoint import load_state
from genkit_audio import AudioDomain, AudioOptions, shift
from genkit_audio import data as audata
from genkit_audio.io import read_wav, spectrogram_grid, write_wav
from genkit_audio.wavegan import PhaseShuffle, WaveGANConfig, WaveGANDiscriminator, WaveGANGenerator

# --eval-samples 0: the refnet evaluation (trained on the 2,000-clip corpus) has its own test on a small folder.
TINY = ["--model-size", "4", "--batch-size", "8", "--steps", "2", "--n-critic", "1", "--quiet", "--eval-samples", "0"]


@pytest.fixture
def cli(use_shared_cache):
    from genkit.cli import create_cli

    def run(*args, ok=True):
        result = CliRunner().invoke(create_cli(), [str(a) for a in args], catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output + result.stderr
        return result

    return run


# -- the model against the authors' layer list (anchors.md) -------------------------------------------
def conv_params(cin, cout, k):
    return cin * cout * k + cout


def test_paper_wavegan_layer_shapes_and_parameter_counts():
    d, c = 64, 1
    # Generator: dense 100 -> 16 x 16d, then transposed convs 16d -> 8d -> 4d -> 2d -> d -> 1, kernel 25.
    g_expected = (100 * 16 * 16 * d + 16 * 16 * d) + conv_params(16 * d, 8 * d, 25) + conv_params(8 * d, 4 * d, 25) \
        + conv_params(4 * d, 2 * d, 25) + conv_params(2 * d, d, 25) + conv_params(d, c, 25)
    # Discriminator: convs 1 -> d -> 2d -> 4d -> 8d -> 16d, kernel 25, then dense 16 * 16d -> 1.
    d_expected = conv_params(1, d, 25) + conv_params(d, 2 * d, 25) + conv_params(2 * d, 4 * d, 25) \
        + conv_params(4 * d, 8 * d, 25) + conv_params(8 * d, 16 * d, 25) + (16 * 16 * d + 1)
    assert g_expected == 19_065_345 and d_expected == 17_427_969
    cfg = WaveGANConfig()
    G, D = WaveGANGenerator(cfg), WaveGANDiscriminator(cfg)
    assert sum(p.numel() for p in G.parameters()) == g_expected
    assert sum(p.numel() for p in D.parameters()) == d_expected
    trace: list = []
    with torch.no_grad():
        x = G(torch.rand(2, 100) * 2 - 1, trace=trace)
    assert trace == [("dense", (2, 1024, 16)), ("upconv_0", (2, 512, 64)), ("upconv_1", (2, 256, 256)),
                     ("upconv_2", (2, 128, 1024)), ("upconv_3", (2, 64, 4096)), ("upconv_4", (2, 1, 16384))]
    assert x.abs().max() <= 1.0  # tanh output
    trace = []
    with torch.no_grad():
        logit = D(x, trace=trace)
    assert trace == [("downconv_0", (2, 64, 4096)), ("downconv_1", (2, 128, 1024)), ("downconv_2", (2, 256, 256)),
                     ("downconv_3", (2, 512, 64)), ("downconv_4", (2, 1024, 16)), ("output", (2,))]
    assert logit.shape == (2,)


@pytest.mark.parametrize("length,last_stride", [(32768, 2), (65536, 4)])
def test_longer_outputs_add_one_layer_each_side(length, last_stride):
    d = 2
    cfg = WaveGANConfig(length=length, d=d)
    G, D = WaveGANGenerator(cfg), WaveGANDiscriminator(cfg)
    trace: list = []
    with torch.no_grad():
        x = G(torch.zeros(1, 100), trace=trace)
        D(x, trace=(dtrace := []))
    assert [s[1][1] for s in trace] == [32 * d, 16 * d, 8 * d, 4 * d, 2 * d, d, 1]
    assert trace[-1][1][1:] == (1, length) and trace[-2][1][2] == 16384
    assert G.ups[-1].stride == last_stride and D.convs[-1].stride == (last_stride,)
    assert [s[1][1] for s in dtrace[:-1]] == [d, 2 * d, 4 * d, 8 * d, 16 * d, 32 * d]
    assert dtrace[-2][1][2] == 16  # flattened 16 x 32d into the dense layer


def test_transposed_conv_matches_tensorflow_same_alignment():
    """An impulse through a stride-4 'zeros' upsampler lands where TF's conv2d_transpose(padding='same') puts it:
    the full output (L-1)*4 + 25 is cropped by (25-4)//2 = 10 samples on the left."""
    from genkit_audio.wavegan import UpConv1d

    up = UpConv1d(1, 1, 25, 4, "zeros")
    with torch.no_grad():
        up.conv.weight.zero_()
        up.conv.weight[0, 0, 12] = 1.0  # a kernel that copies its input to tap 12
        up.conv.bias.zero_()
        x = torch.zeros(1, 1, 8)
        x[0, 0, 3] = 1.0
        y = up(x)
    assert y.shape == (1, 1, 32)
    assert int(y[0, 0].argmax()) == 3 * 4 + 12 - 10
    nn_up = UpConv1d(3, 2, 25, 4, "nn")
    assert nn_up(torch.zeros(1, 3, 16)).shape == (1, 2, 64)


def test_nn_upsampling_and_post_filter_are_real():
    torch.manual_seed(0)
    base = WaveGANGenerator(WaveGANConfig(d=2, upsample="nn"))
    assert all(up.mode == "nn" and isinstance(up.conv, torch.nn.Conv1d) for up in base.ups)
    torch.manual_seed(0)
    filtered = WaveGANGenerator(WaveGANConfig(d=2, upsample="nn", post_filter=True))
    assert filtered.post.weight.shape == (1, 1, 512) and filtered.post.bias is None
    z = torch.rand(1, 100) * 2 - 1
    y = filtered(z)
    assert y.shape == (1, 1, 16384)
    # The filter is applied: the output is exactly the base generator's output filtered by it.
    with torch.no_grad():
        expected = filtered.post(base(z))
    torch.testing.assert_close(y.detach(), expected)
    y.pow(2).mean().backward()
    assert filtered.post.weight.grad is not None and filtered.post.weight.grad.abs().sum() > 0



def test_specgan_one_channel_nn_layer_is_the_doubled_3x3_convolution_in_polyphase_form():
    """The generator's last layer (one channel, ``nn``) is computed without doubling its input; it must be the
    same function of the same 3 x 3 parameters, with the same gradients, as nearest doubling and a 3 x 3 conv."""
    from genkit_audio.specgan import SpecGANConfig, SpecGANGenerator, UpConv2d

    torch.manual_seed(0)
    layer = UpConv2d(6, 1, 5, "nn")
    assert layer.polyphase and layer.conv.weight.shape == (1, 6, 3, 3)
    assert not UpConv2d(6, 2, 5, "nn").polyphase and not UpConv2d(6, 1, 5, "zeros").polyphase
    with torch.no_grad():
        layer.conv.bias.fill_(0.3)
    x = torch.randn(2, 6, 5, 7, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out = layer(x)
    ref = torch.nn.functional.conv2d(torch.nn.functional.interpolate(x_ref, scale_factor=2, mode="nearest"),
                                     layer.conv.weight, layer.conv.bias, padding=1)
    assert out.shape == (2, 1, 10, 14)
    torch.testing.assert_close(out, ref)
    grad_out = torch.randn_like(out)
    g_poly = torch.autograd.grad(out, [x, layer.conv.weight, layer.conv.bias], grad_out)
    g_ref = torch.autograd.grad(ref, [x_ref, layer.conv.weight, layer.conv.bias], grad_out)
    for a, b in zip(g_poly, g_ref):
        torch.testing.assert_close(a, b)
    # In the generator: its last layer only, and the output is what the doubled form gives.
    G = SpecGANGenerator(SpecGANConfig(d=2, upsample="nn")).eval()
    assert [up.polyphase for up in G.ups] == [False] * 4 + [True]
    z = torch.rand(3, 100) * 2 - 1
    with torch.no_grad():
        fast = G(z)
        G.ups[-1].polyphase = False
        torch.testing.assert_close(G(z), fast)

# -- phase shuffle --------------------------------------------------------------------------------------
def test_phase_shuffle_reflect_padding_values():
    x = torch.arange(10.0).view(1, 1, 10)
    assert PhaseShuffle.shift(x, 2).flatten().tolist() == [2, 1, 0, 1, 2, 3, 4, 5, 6, 7]
    assert PhaseShuffle.shift(x, -2).flatten().tolist() == [2, 3, 4, 5, 6, 7, 8, 9, 8, 7]
    assert PhaseShuffle.shift(x, 1).flatten().tolist() == [1, 0, 1, 2, 3, 4, 5, 6, 7, 8]
    assert PhaseShuffle.shift(x, 0).flatten().tolist() == list(range(10))


def test_phase_shuffle_shift_range_one_shift_per_batch():
    torch.manual_seed(0)
    shuffle = PhaseShuffle(2)
    x = torch.arange(64.0).view(1, 1, 64).repeat(3, 4, 1)  # 3 examples, 4 channels
    seen = set()
    for _ in range(200):
        y = shuffle(x)
        assert y.shape == x.shape
        assert torch.equal(y, y[:1].expand_as(y))  # the same shift for every example and channel
        shift = int(x[0, 0, 32] - y[0, 0, 32])  # the middle sample moves right by the shift
        assert torch.equal(y, PhaseShuffle.shift(x, shift))
        seen.add(shift)
    assert seen == {-2, -1, 0, 1, 2}


def test_phase_shuffle_radius_zero_is_identity_and_discriminator_deterministic():
    x = torch.randn(2, 3, 20)
    assert PhaseShuffle(0)(x) is x
    torch.manual_seed(1)
    D0 = WaveGANDiscriminator(WaveGANConfig(d=2, phase_shuffle=0))
    audio = torch.rand(4, 1, 16384) * 2 - 1
    with torch.no_grad():
        assert torch.equal(D0(audio), D0(audio))
        D2 = WaveGANDiscriminator(WaveGANConfig(d=2, phase_shuffle=2))
        D2.load_state_dict(D0.state_dict())
        outs = {tuple(D2(audio).tolist()) for _ in range(10)}
    assert len(outs) > 1  # phase shuffle on: the critic's view changes from call to call


# -- the gradient penalty and the latent prior ---------------------------------------------------------
class LinearCritic(torch.nn.Module):
    def __init__(self, w):
        super().__init__()
        self.w = torch.nn.Parameter(w)

    def forward(self, x, cond=None):
        return x.flatten(1) @ self.w


def test_gradient_penalty_known_value():
    from genkit.losses import gradient_penalty

    real, fake = torch.rand(8, 1, 16) * 2 - 1, torch.rand(8, 1, 16) * 2 - 1
    w = torch.zeros(16)
    w[:9] = 1.0  # ||w|| = 3, so ||grad D|| = 3 at every interpolate: penalty (3 - 1)^2 = 4
    assert gradient_penalty(LinearCritic(w), real, fake, None).item() == pytest.approx(4.0)
    unit = torch.zeros(16)
    unit[5] = 1.0
    assert gradient_penalty(LinearCritic(unit), real, fake, None).item() == pytest.approx(0.0, abs=1e-12)
    # And the penalty is differentiable w.r.t. the critic: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
    critic = LinearCritic(w.clone())
    gradient_penalty(critic, real, fake, None).backward()
    torch.testing.assert_close(critic.w.grad, 2 * (3 - 1) * w / 3)


def test_latent_is_uniform_minus_one_one():
    dom = AudioDomain()
    z = dom.sample_latent(4000, dom.Options(latent_dim=100), rng=torch.Generator().manual_seed(0), device=torch.device("cpu"))
    assert z.shape == (4000, 100)
    assert z.min() >= -1.0 and z.max() <= 1.0
    assert abs(z.mean().item()) < 0.01 and abs(z.var().item() - 1 / 3) < 0.01  # U[-1, 1]: variance 1/3


# -- audio files ---------------------------------------------------------------------------------------
def test_wav_round_trip(tmp_path):
    t = torch.arange(16384) / 16000
    wave = (0.5 * torch.sin(2 * math.pi * 440 * t)).view(1, -1)
    wave[0, 0] = 1.7  # out of range: clipped, not wrapped
    path = write_wav(tmp_path / "a.wav", wave)
    data, rate, subtype = read_wav(path)
    assert rate == 16000 and subtype == "PCM_16" and data.shape == (16384,)
    assert sf.info(str(path)).channels == 1
    assert data[0] == pytest.approx(32767 / 32768, abs=1e-6)
    np.testing.assert_allclose(data[1:], wave[0, 1:].numpy(), atol=1 / 32768 + 1e-7)


def test_spectrogram_grid_png(tmp_path):
    from PIL import Image

    t = torch.arange(16384) / 16000
    tone = torch.sin(2 * math.pi * 2000 * t).view(1, 1, -1) * 0.5
    waves = torch.cat([tone, torch.zeros(1, 1, 16384)] * 3)
    path = spectrogram_grid(waves, tmp_path / "g.png", ncols=3)
    img = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert img.shape[0] > 2 * 129 and img.shape[1] > 3 * 129  # 2 rows x 3 columns of 129 x 129 tiles
    tile = img[4:4 + 129, 4:4 + 129]  # first tile: the 2 kHz tone
    row = 128 - round(2000 / 8000 * 128)  # 2 kHz, low frequencies at the bottom
    assert tile[row].mean() > 3 * tile[20].mean()
    silent = img[4:4 + 129, 4 + 133:4 + 133 + 129]  # second tile: silence is dark
    assert silent.mean() < 10


def _write(path: Path, data: np.ndarray, rate: int, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate, **kw)
    return path


def test_load_folder_mixed_rates_channels_and_broken_files(tmp_path, capsys):
    root = tmp_path / "clips"
    t8 = np.arange(4000) / 8000  # 0.5 s at 8 kHz
    _write(root / "yes" / "a.wav", (0.5 * np.sin(2 * np.pi * 300 * t8)).astype(np.float32), 8000)
    stereo = np.stack([np.full(22050, 0.5), np.full(22050, 0.1)], axis=1).astype(np.float32)  # 1 s at 44.1 kHz
    _write(root / "yes" / "b.flac", stereo, 44100)
    _write(root / "no" / "c.ogg", (0.3 * np.sin(2 * np.pi * 200 * np.arange(40000) / 16000)).astype(np.float32),
           16000, format="OGG", subtype="VORBIS")
    (root / "no" / "broken.wav").write_bytes(b"RIFF this is not a wave file")
    _write(root / "no" / "empty.wav", np.zeros(0, np.float32), 16000)
    x, y, names, source, rate = audata.load_folder(root, 16384, 16000)
    err = capsys.readouterr().err
    assert "broken.wav: skipped" in err and "empty.wav: skipped" in err
    assert "skipped 2 bad file(s) of 5" in err
    assert x.dtype == torch.int16 and x.shape == (3, 1, 16384)
    assert names == ["no", "yes"] and y.tolist() == [0, 1, 1]  # c.ogg, a.wav, b.flac in path order
    a = x[1, 0].float() / 32768
    assert a[:7900].abs().max() > 0.4 and a[8100:].abs().max() == 0  # 0.5 s at 8 kHz -> 8000 samples, zero-padded
    b = x[2, 0].float() / 32768
    assert b[1000:7000].mean().item() == pytest.approx(0.3, abs=0.01)  # mono mix of 0.5 and 0.1 (0.5 s)
    assert x[0, 0].float().abs().max() > 0  # 2.5 s OGG trimmed to the first 16384 samples
    assert "3 clips at 16000 Hz" in source and rate == 16000
    # No rate asked for: one file at each rate, so the highest; the length follows the rate chosen.
    x, _, _, _, rate = audata.load_folder(root, None, None, choose_length=lambda r: {44100: 32768}[r])
    assert rate == 44100 and x.shape == (3, 1, 32768)
    assert "3 sample rates (8000 Hz, 16000 Hz, 44100 Hz); resampling all to 44100 Hz" in capsys.readouterr().err


def test_specgan_auto_rate_keeps_a_whole_word_of_44_1_khz_speech_and_a_cut_is_warned_about(tmp_path, cache, capsys):
    """SpecGAN's 16,384-sample clips hold 0.37 s at 44.1 kHz: auto resamples such data to 16 kHz (1.02 s), so a
    0.6 s word is kept whole; asking for 44.1 kHz keeps the rate and warns, naming the folder, that the clips are cut.
    WaveGAN, which makes longer clips, keeps the data's own rate."""
    root = tmp_path / "speech44"
    t = np.arange(int(0.6 * 44100)) / 44100
    word = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)  # a 0.6 s "word" at 44.1 kHz
    for name in ("1_ann_0.wav", "1_ann_1.wav", "2_ann_0.wav", "2_ann_1.wav"):
        _write(root / name, word, 44100)
    dom = AudioDomain()
    data = dom.load_data(str(root), dom.Options(model="specgan"), cache_dir=tmp_path / "c")
    assert (data.extra["sample_rate"], data.extra["length"]) == (16000, 16384)
    assert "4 clips at 16000 Hz from 44100 Hz files" in data.source
    clip = data.train.tensors[0][0, 0].float() / 32768
    assert clip[int(0.55 * 16000):int(0.59 * 16000)].abs().max() > 0.4  # the word's end is there
    assert clip[int(0.61 * 16000):].abs().max() < 0.01  # then the padding
    assert "cut" not in capsys.readouterr().err
    data = dom.load_data(str(root), dom.Options(model="specgan", sample_rate=44100), cache_dir=tmp_path / "c")
    assert (data.extra["sample_rate"], data.extra["length"]) == (44100, 16384)
    assert (f"{root}: 4 of 4 clips (100%) are longer than 16384 samples (0.37 s at 44100 Hz) and were cut to their "
            "start") in capsys.readouterr().err
    data = dom.load_data(str(root), dom.Options(model="wavegan"), cache_dir=tmp_path / "c")
    assert (data.extra["sample_rate"], data.extra["length"]) == (44100, 32768)  # 0.74 s: the word fits
    assert "cut" not in capsys.readouterr().err


def test_load_folder_label_prefix_and_errors(tmp_path, monkeypatch):
    root = tmp_path / "fsdd"
    tone = (0.2 * np.sin(np.arange(3000) / 5)).astype(np.float32)
    for name in ("7_jackson_0.wav", "7_theo_1.wav", "3_jackson_2.wav"):
        _write(root / name, tone, 8000)
    x, y, names, _, rate = audata.load_folder(root, 16384, None)
    assert names == ["3", "7"] and y.tolist() == [0, 1, 1] and rate == 8000  # the files' own rate
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_text("not audio")
    with pytest.raises(GenkitError, match="none of the 1 audio files could be read"):
        audata.load_folder(bad, 16384, None)
    dom = AudioDomain()
    opts = dom.Options()
    with pytest.raises(GenkitError, match="no such folder"):
        dom.load_data(str(tmp_path / "missing"), opts, cache_dir=tmp_path)
    plain = tmp_path / "plain"
    _write(plain / "a.wav", tone, 16000)
    _write(plain / "b.wav", tone, 16000)
    with pytest.raises(GenkitError, match="--conditional needs class labels"):
        dom.load_data(str(plain), dom.Options(conditional=True), cache_dir=tmp_path)


def test_a_folder_whose_file_name_prefixes_are_identifiers_is_unlabelled_unless_asked(tmp_path, capsys):
    """Freesound's ``12345__user__title.wav``, a recorder's take numbers: one name a file are not classes."""
    root = tmp_path / "takes"
    tone = (0.2 * np.sin(np.arange(3000) / 5)).astype(np.float32)
    for i in range(6):
        _write(root / f"{1000 + i}__someone__door.wav", tone, 8000)
    dom = AudioDomain()
    data = dom.load_data(str(root), dom.Options(), cache_dir=tmp_path)
    assert not data.conditional and data.num_classes == 0 and data.class_names == []
    assert not data.extra["labelled"]  # so no refnet is trained on six one-clip "classes"
    assert data.source == f"{root} (6 clips at 8000 Hz, unlabelled: identifiers in file-name prefixes)"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{root}: 6 of its 6 names" in err and "treated as unlabelled" in err
    asked = dom.load_data(str(root), dom.Options(conditional=True), cache_dir=tmp_path)  # the user's call
    assert asked.conditional and asked.num_classes == 6
    for i in range(9):  # words in sub-folders: classes, though one of the three has a single take
        _write(root / ("yes" if i < 5 else "no") / f"{i}.wav", tone, 8000)
    for p in root.glob("*.wav"):
        p.unlink()
    _write(root / "maybe" / "0.wav", tone, 8000)
    labelled = dom.load_data(str(root), dom.Options(), cache_dir=tmp_path)
    assert labelled.conditional and labelled.class_names == ["maybe", "no", "yes"]
    assert "treated as unlabelled" not in capsys.readouterr().err


def test_labels_from_the_file_name_where_each_folder_holds_one_speaker_and_from_the_folder_where_it_is_the_word(
        tmp_path, capsys, shared_cache):
    """AudioMNIST's ``01/7_01_32.wav`` (a folder of each speaker's digits) is labelled by the digit at the start of
    the name, Speech Commands' ``seven/0a7c2a8d_nohash_0.wav`` by the folder; --labels decides over both, a file the
    asked scheme cannot label is one error line naming it, the run records the scheme, and a run saved before the
    option keeps the sub-folder labels it trained with."""
    tone = (0.2 * np.sin(np.arange(3000) / 5)).astype(np.float32)
    speakers = tmp_path / "by-speaker"
    for spk in ("01", "02", "03"):
        for digit in range(4):
            for take in range(2):
                _write(speakers / spk / f"{digit}_{spk}_{take}.wav", tone, 8000)
    dom = AudioDomain()
    data = dom.load_data(str(speakers), dom.Options(), cache_dir=tmp_path)
    assert data.class_names == ["0", "1", "2", "3"] and data.conditional
    assert torch.bincount(data.train.tensors[1]).tolist() == [6, 6, 6, 6]
    assert "labels from file-name prefixes" in data.source
    assert dom.resolve_options(dom.Options(), data).labels == "prefix"
    by_folder = dom.load_data(str(speakers), dom.Options(labels="folder"), cache_dir=tmp_path)
    assert by_folder.class_names == ["01", "02", "03"]
    assert dom.resolve_options(dom.Options(labels="folder"), by_folder).labels == "folder"
    assert dom.load_data(str(speakers), dom.Options(labels="none"), cache_dir=tmp_path).class_names == []
    saved = dom.upgrade_options({"model": "specgan"}, {"source": f"{speakers} (24 clips at 8000 Hz, labels from sub-folders)"})
    assert saved["labels"] == "folder"
    assert dom.upgrade_options({"model": "specgan"}, {"source": "spoken digits"}).get("labels") is None
    words = tmp_path / "by-word"
    for word in ("seven", "yes"):
        for who in ("0a7c2a8d", "1b2c3d4e"):
            _write(words / word / f"{who}_nohash_0.wav", tone, 8000)
    assert dom.load_data(str(words), dom.Options(), cache_dir=tmp_path).class_names == ["seven", "yes"]
    _write(words / "yes" / "plain.wav", tone, 8000)
    with pytest.raises(GenkitError) as err:
        dom.load_data(str(words), dom.Options(labels="prefix"), cache_dir=tmp_path)
    assert str(err.value) == f"{words / 'yes' / 'plain.wav'}: --labels prefix, but the file has no label_ prefix in its name"
    with pytest.raises(GenkitError, match="built-in digits are labelled"):
        dom.load_data("espeak-digits", dom.Options(labels="folder"), cache_dir=tmp_path)
    digits = dom.load_data("espeak-digits", dom.Options(), cache_dir=shared_cache)  # labelled by the corpus
    assert digits.conditional and dom.resolve_options(dom.Options(), digits).labels == "none"
    assert dom.load_data("espeak-digits", dom.Options(labels="none"), cache_dir=shared_cache).conditional  # as recorded
    assert "Traceback" not in capsys.readouterr().err


def test_spoken_digit_corpus_is_cached_and_varied(shared_cache):
    x, y, names, source = audata.espeak_digits(shared_cache, 16384)
    assert names == audata.DIGITS and len(x) == 10 * audata.CLIPS_PER_DIGIT
    assert torch.bincount(y).tolist() == [audata.CLIPS_PER_DIGIT] * 10
    peak = x.float().abs().amax(dim=(1, 2)) / 32768
    assert peak.min() > 0.45  # every clip holds speech, none is silent
    voiced = (x.float().abs() > 300).sum(dim=(1, 2))  # samples above -40 dB
    assert voiced.float().std() > 500  # speaking rates and words differ
    cache = shared_cache / "audio" / f"espeak-digits-v{audata.CORPUS_VERSION}.npz"
    mtime = cache.stat().st_mtime_ns
    x2, *_ = audata.espeak_digits(shared_cache, 32768)
    assert cache.stat().st_mtime_ns == mtime  # read from the cache, not synthesised again
    assert x2.shape == (len(x), 1, 32768) and torch.equal(x2[:, :, :16384], x)


def test_spoken_digit_corpus_is_the_same_clip_for_clip_in_every_synthesis():
    # eSpeak's noise starts from another state in every process, and eSpeak carries state from word to word:
    # unseeded, or rendered after other words, the same recipe gave another corpus (and refnet) on every machine
    clips, labels = audata.synthesise_digits(clips_per_digit=3)
    again, labels_again = audata.synthesise_digits(clips_per_digit=3)
    assert labels == labels_again == list(range(10)) * 3
    assert all(np.array_equal(a, b) for a, b in zip(clips, again, strict=True))
    assert len({len(c) for c in clips}) > 20  # still thirty different utterances, not one clip repeated


def test_spoken_digit_synthesis_that_fails_is_one_error_line(monkeypatch):
    monkeypatch.setattr(sys, "executable", shutil.which("false"))
    with pytest.raises(GenkitError, match=r"eSpeak NG could not synthesise the spoken digits \(exit status 1\)"):
        audata.synthesise_digits(clips_per_digit=1)


# -- the command line ----------------------------------------------------------------------------------
def test_info_shows_paper_parameter_counts(cli):
    info = json.loads(cli("info", "audio", "--preset", "paper", "--json").output)
    assert info["parameters"] == {"generator": 19_065_345, "discriminator": 17_427_969}
    assert info["sample_shape"] == [1, 16384]
    train = info["config"]["train"]
    assert (train["loss"], train["gp"], train["n_critic"], train["lr_g"], train["lr_d"], train["beta1"],
            train["beta2"], train["batch_size"]) == ("wgan-gp", 10.0, 5, 1e-4, 1e-4, 0.5, 0.9, 64)
    assert info["config"]["audio"]["model_size"] == 64 and info["config"]["audio"]["phase_shuffle"] == 2
    assert info["data"]["num_classes"] == 0 and info["data"]["examples"] == 2000


def test_tiny_run_writes_wavs_and_spectrograms_then_samples(cli, tmp_path):
    out = tmp_path / "run"
    cli("run", "audio", *TINY, "--model", "wavegan", "--no-conditional", "--sample-every", "1", "--out", out)
    final = sorted((out / "samples" / "final").glob("*.wav"))
    assert len(final) == 16
    for wav in final[:3]:
        data, rate, subtype = read_wav(wav)
        assert (rate, subtype, data.shape) == (16000, "PCM_16", (16384,))
        assert np.abs(data).max() > 0  # the untrained generator still makes sound, not an all-zero file
    assert (out / "samples" / "final.png").stat().st_size > 1000
    assert (out / "samples" / "step-00000001.png").is_file()
    result = cli("sample", out, "-n", "3", "--out", tmp_path / "s")
    wavs = sorted((tmp_path / "s").glob("*.wav"))
    assert len(wavs) == 3 and (tmp_path / "s" / "spectrograms.png").is_file()
    assert all(read_wav(w)[1:] == (16000, "PCM_16") and sf.info(str(w)).frames == 16384 for w in wavs)
    assert result.output.count(".wav") == 3


def test_tiny_conditional_longer_run(cli, tmp_path):
    out = tmp_path / "run"
    cli("run", "audio", "--model-size", "2", "--batch-size", "4", "--steps", "1", "--n-critic", "1", "--quiet",
        "--eval-samples", "0", "--model", "wavegan", "--length", "32768", "--conditional", "--post-filter",
        "--phase-shuffle", "0", "--out", out)
    final = sorted((out / "samples" / "final").glob("*.wav"))
    assert len(final) == 20 and final[0].name == "00-zero.wav" and final[19].name == "19-nine.wav"
    assert sf.info(str(final[0])).frames == 32768 and sf.info(str(final[0])).samplerate == 16000
    cli("sample", out, "-n", "2", "--out", tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").glob("*.wav")) == ["sample-00000-zero.wav", "sample-00001-one.wav"]


def test_tiny_specgan_run_and_sample(cli, tmp_path):
    out = tmp_path / "run"
    cli("run", "audio", *TINY, "--model", "specgan", "--griffin-lim-iters", "2", "--out", out)
    state = load_state(out / "checkpoints" / "step-00000002")["domain_state"]  # the run's own statistics
    assert state["spec_mean"].shape == (128,) and state["spec_std"].shape == (128,)
    gen = load_file(str(out / "checkpoints" / "step-00000002" / "generator.safetensors"))
    assert "spec_mean" not in gen  # state, not weights
    wav = sorted((out / "samples" / "final").glob("*.wav"))[0]
    assert sf.info(str(wav)).frames == 16384 and sf.info(str(wav)).subtype == "PCM_16"
    cli("sample", out, "-n", "2", "--out", tmp_path / "s")
    assert len(list((tmp_path / "s").glob("*.wav"))) == 2


def test_specgan_spectrogram_normalisation_and_inversion():
    from genkit_audio import specgan

    t = torch.arange(16384) / 16000
    wave = (0.5 * torch.sin(2 * math.pi * 1000 * t)).view(1, 1, -1)
    logmag = specgan.spectrogram(wave)
    assert logmag.shape == (1, 1, 128, 128)
    mean, std = logmag[0, 0].mean(1), logmag[0, 0].std(1).clamp_min(1e-3)
    x = specgan.normalise(logmag, mean, std)
    assert x.abs().max() <= 1.0
    torch.manual_seed(0)
    back = specgan.invert(x, mean, std, n_iter=16)
    assert back.shape == (1, 1, 16384)
    spectrum = torch.fft.rfft(back[0, 0, 2048:-2048]).abs()
    peak_hz = int(spectrum.argmax()) * 16000 / (16384 - 4096)
    assert abs(peak_hz - 1000) < 20  # Griffin-Lim brings the 1 kHz tone back


def test_an_over_range_inversion_is_scaled_to_full_scale_not_clipped():
    from genkit_audio import specgan

    t = torch.arange(16384) / 16000
    wave = (0.3 * torch.sin(2 * math.pi * 440 * t) * torch.hann_window(16384)).view(1, 1, -1)
    logmag = specgan.spectrogram(wave)
    mean, std = logmag[0, 0].mean(1), logmag[0, 0].std(1).clamp_min(1e-3)
    x = specgan.normalise(logmag, mean, std)
    torch.manual_seed(0)
    quiet = specgan.invert(x, mean, std)  # within range: as Griffin-Lim returns it
    torch.manual_seed(0)
    loud = specgan.invert(x, mean + math.log(8.0), std)  # the same spectrogram 8 x louder: past full scale
    assert 0.2 < quiet.abs().max() < 0.5
    assert loud.abs().max() == pytest.approx(specgan.PEAK, abs=1e-6)
    # the same waveform at another level (Griffin-Lim is scale-equivariant), not a flat-topped one
    assert torch.allclose(loud, quiet * (specgan.PEAK / quiet.abs().max()), atol=1e-4)
    assert int((loud.abs() > 0.98 * specgan.PEAK).sum()) < 200  # a hard clip at 1 would flatten thousands
    both = specgan.fit_range(torch.cat([quiet, 4 * quiet]))
    assert torch.equal(both[0], quiet[0]) and both[1].abs().max() == pytest.approx(specgan.PEAK, abs=1e-6)


def test_user_errors_are_one_line(cli, tmp_path):
    result = cli("run", "audio", "--model", "specgan", "--length", "32768", "--out", tmp_path / "r", ok=False)
    assert result.exit_code == 2 and "specgan makes clips of 8192, 16384 samples, not --length 32768" in result.stderr
    assert not (tmp_path / "r").exists()  # nothing written
    result = cli("run", "audio", "--data", tmp_path / "nope", "--out", tmp_path / "r", ok=False)
    assert result.exit_code == 1 and "no such folder" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_resume_is_exact_with_phase_shuffle(cli, tmp_path):
    """Phase shuffle draws from torch's global RNG, which genkit checkpoints: 2 steps == 1 + resume + 1."""
    from safetensors.torch import load_file

    tiny = ["--model-size", "2", "--batch-size", "4", "--n-critic", "2", "--quiet", "--sample-every", "0",
            "--eval-samples", "0"]
    tiny += ["--model", "wavegan"]
    cli("run", "audio", *tiny, "--steps", "2", "--out", tmp_path / "full")
    cli("run", "audio", *tiny, "--steps", "1", "--out", tmp_path / "half")
    cli("run", "audio", "--resume", tmp_path / "half", "--steps", "2", "--quiet")
    for name in ("generator", "discriminator"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000002" / f"{name}.safetensors"))
        b = load_file(str(tmp_path / "half" / "checkpoints" / "step-00000002" / f"{name}.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


def _tone_folder(root: Path, per_class: int = 12) -> Path:
    """Three labelled classes of 0.5 s tones (300, 1,000, 3,000 Hz) with random phase, level and onset."""
    rs = np.random.RandomState(0)
    for label, freq in (("low", 300), ("mid", 1000), ("high", 3000)):
        for i in range(per_class):
            clip = np.zeros(16384, np.float32)
            start = rs.randint(0, 8000)
            t = np.arange(8000) / 16000
            clip[start:start + 8000] = rs.uniform(0.2, 0.8) * np.sin(2 * np.pi * freq * t + rs.uniform(0, 6.28))
            _write(root / label / f"{i}.wav", clip, 16000)
    return root


def test_sample_rate_follows_the_data_end_to_end(cli, tmp_path):
    """8 kHz files in: an 8 kHz run of 8192-sample clips (about a second), 8 kHz WAVs out, at every stage."""
    data = tmp_path / "fsdd"
    rs = np.random.RandomState(0)
    for digit, freq in (("1", 400), ("2", 1200)):
        for take in range(4):
            t = np.arange(rs.randint(3000, 6000)) / 8000
            _write(data / f"{digit}_spk_{take}.wav", (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)
    out = tmp_path / "run"
    cli("run", "audio", "--data", data, "--model", "specgan", "--model-size", "2", "--batch-size", "4", "--steps", "1",
        "--griffin-lim-iters", "2", "--eval-samples", "0", "--quiet", "--out", out)
    config = (out / "config.toml").read_text()
    assert "sample_rate = 8000" in config and "length = 8192" in config and "conditional = true" in config
    wavs = sorted((out / "samples" / "final").glob("*.wav"))
    assert wavs[0].name == "00-1.wav" and wavs[1].name == "01-2.wav"  # labels from the file names
    assert all((sf.info(str(w)).samplerate, sf.info(str(w)).frames) == (8000, 8192) for w in wavs)
    cli("sample", out, "-n", "2", "--out", tmp_path / "s")
    assert {(sf.info(str(w)).samplerate, sf.info(str(w)).frames) for w in (tmp_path / "s").glob("*.wav")} == {(8000, 8192)}
    # Asked for 16 kHz: the same files are resampled, and a second is 16384 samples.
    cli("run", "audio", "--data", data, "--sample-rate", "16000", "--model", "specgan", "--model-size", "2",
        "--batch-size", "4", "--steps", "1", "--griffin-lim-iters", "2", "--eval-samples", "0", "--quiet",
        "--out", tmp_path / "r16")
    wav = sorted((tmp_path / "r16" / "samples" / "final").glob("*.wav"))[0]
    assert (sf.info(str(wav)).samplerate, sf.info(str(wav)).frames) == (16000, 16384)
    result = cli("run", "audio", "--data", data, "--sample-rate", "12000", "--out", tmp_path / "bad", ok=False)
    assert result.exit_code == 2 and "12000" in result.stderr and not (tmp_path / "bad").exists()


def test_refnet_scores_real_clips_far_better_than_noise(tmp_path):
    from genkit_audio import metrics

    x, y, names, source, _ = audata.load_folder(_tone_folder(tmp_path / "tones"), 16384, 16000)
    net, acc, test_idx = metrics.reference_classifier(x, y, len(names), source, tmp_path / "cache")
    assert acc >= 0.9  # tones of three pitches are easy: a broken feature pipeline would not get here
    real = x[test_idx]
    shuffled = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]  # IS splits need mixed classes
    same = metrics.score(net, acc, real, shuffled.float() / 32768, 3)
    noise = metrics.score(net, acc, real, torch.rand(len(x), 1, 16384) * 2 - 1, 3)
    assert same["refnet_fd"] * 10 < noise["refnet_fd"]
    # 36 clips in 10 splits bias IS low; a perfect 3-class score would be 3, one class only 1
    assert same["refnet_is"] > 2.0 and same["refnet_classes"] == 3.0
    from genkit.refnet import train_examples

    train = x[train_examples(len(x), test_idx)]
    copies = metrics.score(net, acc, real, train[:12].float() / 32768, 3, train=train)
    far = metrics.score(net, acc, real, torch.rand(12, 1, 16384) * 2 - 1, 3, train=train)
    assert copies["refnet_nn_ratio"] < 1e-3 < 2 < far["refnet_nn_ratio"]  # copies vs clips unlike any data
    assert noise["refnet_is"] < same["refnet_is"] - 0.5
    assert metrics.rms_ratio(real, real) == pytest.approx(1.0)  # loudness: int16 and float agree
    assert metrics.rms_ratio(real.float() / 32768 * 0.1, real) == pytest.approx(0.1, rel=1e-3)
    cached = sorted((tmp_path / "cache" / "audio-refnet").glob("*.safetensors"))
    assert len(cached) == 1
    again, acc2, _ = metrics.reference_classifier(x, y, len(names), source, tmp_path / "cache")
    assert acc2 == acc and all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))
    broken = torch.full((8, 1, 16384), float("nan"))  # a diverged generator: scored, never a crash
    scores = metrics.score(net, acc, real, broken, 3)
    assert set(scores) == set(same) and scores["refnet_accuracy"] == acc
    from genkit.metrics import frechet_distance

    assert math.isnan(frechet_distance(torch.full((4, 3), float("nan")), torch.randn(4, 3)))
    assert math.isnan(frechet_distance(torch.randn(1, 3), torch.randn(4, 3)))  # one sample has no covariance
    cached[0].write_bytes(b"corrupt")
    _, acc3, _ = metrics.reference_classifier(x, y, len(names), source, tmp_path / "cache")  # warned, rebuilt
    assert acc3 == acc


def test_refnet_trains_the_same_classifier_whatever_the_callers_threads(tmp_path):
    """refnet trains on two CPU threads whatever the caller's setting, so a run at --threads 1 and one at 2 are
    scored by the same classifier (thread counts change the order of floating-point sums); the setting is restored."""
    from genkit_audio import metrics

    x, y, names, source, _ = audata.load_folder(_tone_folder(tmp_path / "tones"), 16384, 16000)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two, acc_two, _ = metrics.reference_classifier(x, y, len(names), source, tmp_path / "two")
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)
        one, acc_one, _ = metrics.reference_classifier(x, y, len(names), source, tmp_path / "one")
    finally:
        torch.set_num_threads(before)
    assert acc_one == acc_two
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x), x


def test_refnet_loads_a_shipped_classifier_of_exactly_this_data_instead_of_training(tmp_path, monkeypatch):
    from genkit import refnet

    steps = []
    adam_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: (steps.append(1), adam_step(self, *a, **k))[1])
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    train = dict(folder="t", tag="v9", epochs=2, batch=8, lr=1e-2)
    trained, _, _ = refnet.reference_classifier(x, y, _Tiny, lambda t: t, "s", tmp_path / "a", **train)
    assert steps
    with torch.no_grad():
        trained.lin.weight.mul_(-1)  # weights that training would not give: loaded ones are recognisable
    shipped = refnet.ship(trained, tmp_path / "shipped" / "tiny.safetensors", "v9", x, y).parent
    steps.clear()
    net, acc, _ = refnet.reference_classifier(x, y, _Tiny, lambda t: t, "elsewhere", tmp_path / "b", shipped=shipped, **train)
    assert not steps and torch.equal(net.lin.weight, trained.lin.weight) and torch.equal(net.lin.bias, trained.lin.bias)
    copied = list((tmp_path / "b" / "t").glob("*.safetensors"))  # into the cache, where later runs load it
    assert len(copied) == 1 and load_file(copied[0])["lin.weight"].equal(trained.lin.weight)
    other_y = y.clone()
    other_y[0] = 1 - other_y[0]  # one label differs: another data set, trained as before
    other, _, _ = refnet.reference_classifier(x, other_y, _Tiny, lambda t: t, "s", tmp_path / "c", shipped=shipped, **train)
    assert steps and not torch.equal(other.lin.weight, trained.lin.weight)
    steps.clear()
    refnet.reference_classifier(x, y, _Tiny, lambda t: t, "s", tmp_path / "d", shipped=shipped, **{**train, "tag": "v10"})
    assert steps  # another version of the recipe: the shipped file is not its classifier


def test_the_builtin_digits_refnet_is_shipped_and_loaded_on_a_fresh_machine(shared_cache, tmp_path, monkeypatch):
    """A fresh machine's first evaluation of the built-in digits loads refnet from the package (a minute of training
    saved). If this fails after a change of the corpus or of refnet's recipe, regenerate the file with
    genkit_audio.metrics.ship_builtin (its docstring has the command)."""
    from genkit_audio import metrics

    x, y, names, source = audata.espeak_digits(shared_cache, 16384)
    monkeypatch.setattr(torch.optim.Adam, "step", lambda *a, **k: pytest.fail("refnet was trained, not loaded"))
    net, acc, test_idx = metrics.reference_classifier(x, y, len(names), source, tmp_path / "fresh")
    assert acc >= 0.99 and len(test_idx) == 200  # version 3's accuracy on the held-out tenth of corpus version 2


def test_refnet_scores_the_real_examples_once_per_classifier(tmp_path, monkeypatch):
    from genkit import refnet

    x, y = torch.randn(60, 4), torch.randint(0, 2, (60,))
    net, acc, test_idx = refnet.reference_classifier(x, y, _Tiny, lambda t: t, "s", tmp_path, folder="t", epochs=1)
    assert refnet.reference_classifier(x, y, _Tiny, lambda t: t, "s", tmp_path, folder="t", epochs=1)[0] is net
    seen = []
    features = refnet.features
    monkeypatch.setattr(refnet, "features", lambda n, t, *a: (seen.append(len(t)), features(n, t, *a))[1])
    real, train, fake = x[test_idx], x[:40], torch.randn(8, 4)
    first = refnet.score(net, acc, real, fake, lambda t: t, train=train)
    assert seen == [8, len(real), 40]
    seen.clear()
    again = refnet.score(net, acc, real.clone(), fake, lambda t: t, train=train)
    assert json.dumps(again, sort_keys=True) == json.dumps(first, sort_keys=True)  # equal, NaN (no spread) included
    assert seen == [8]  # the same real examples (by content): only the new samples are scored
    refnet.score(net, acc, real + 1, fake, lambda t: t, train=train)
    assert seen == [8, 8, len(real)]  # other real examples are scored


def test_refnet_cosine_schedule_decays_the_rate_over_every_update(tmp_path, monkeypatch):
    from torch import nn

    from genkit import refnet

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 2)

        def forward(self, x):
            return self.lin(x), x

    rates: list[float] = []
    step = torch.optim.Adam.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", recording_step)
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    # 36 training samples in batches of 8: 8, 8, 8, 8 and 4 (kept: min_batch 2), 3 epochs = 15 updates
    refnet.reference_classifier(x, y, Tiny, lambda t: t, "s", tmp_path, folder="t", epochs=3, batch=8, lr=1e-2,
                                min_batch=2, cosine=True)
    assert len(rates) == 15 and rates[0] == 1e-2 and all(a > b for a, b in zip(rates, rates[1:]))
    assert rates[-1] < 2e-4
    rates.clear()
    refnet.reference_classifier(x, y, Tiny, lambda t: t, "s", tmp_path, folder="c", epochs=3, batch=8, lr=1e-2,
                                min_batch=2)  # constant: the image domain's refnet
    assert rates == [1e-2] * 15


def test_run_and_eval_report_refnet_metrics(cli, tmp_path):
    data = _tone_folder(tmp_path / "tones")
    out = tmp_path / "run"
    cli("run", "audio", "--data", data, "--model-size", "2", "--batch-size", "8", "--steps", "2", "--n-critic", "1",
        "--eval-samples", "40", "--eval-every", "1", "--quiet", "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    keys = ("refnet_is", "refnet_fd", "refnet_kid", "refnet_confident", "refnet_classes", "refnet_is_real",
            "refnet_accuracy", "rms_ratio")
    assert all(k in summary["metrics"] and math.isfinite(summary["metrics"][k]) for k in keys)
    assert summary["metrics"]["refnet_accuracy"] >= 0.9
    assert (out / "checkpoints" / "best").is_file()  # the lowest refnet_fd so far
    result = cli("eval", out, "--json")
    evaluated = json.loads(result.output)["metrics"]
    assert evaluated["refnet_fd"] == pytest.approx(summary["metrics"]["refnet_fd"], rel=1e-5)
    assert evaluated["refnet_accuracy"] == summary["metrics"]["refnet_accuracy"]


def test_plugin_import_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, genkit_audio; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_audio_diffaugment_policies():
    """--augment: time shifts fill with silence, masks blank one span or band, gradients pass, bad names are refused."""
    from genkit import GenkitError
    from genkit_audio import parse_policy
    from genkit_audio.augment import augment

    torch.manual_seed(0)
    spec = torch.rand(8, 1, 128, 128) * 2 - 1
    shifted = augment(spec, ("translation",))
    for row, orig in zip(shifted[:, 0], spec[:, 0]):  # each clip is the original moved in time, -1 coming in
        matches = [s for s in range(-16, 17) if torch.equal(row[:, max(s, 0):128 + min(s, 0)],
                                                            orig[:, max(-s, 0):128 - max(s, 0)])]
        assert matches
        s = matches[0]
        assert (row[:, :max(s, 0)] == -1).all() and (row[:, 128 + min(s, 0):] == -1).all()
    masked = augment(spec, ("timemask",))
    zero_steps = (masked[:, 0] == 0).all(dim=1)  # (8, 128): time steps blanked in every bin
    assert (zero_steps.sum(1) <= 16).all() and ((masked == spec) | (masked == 0)).all()
    banded = augment(spec, ("freqmask",))
    assert ((banded[:, 0] == 0).all(dim=2).sum(1) <= 16).all()
    wave = torch.randn(4, 1, 8192)
    assert torch.equal(augment(wave, ("freqmask",)), wave)  # a waveform has no frequency axis
    assert (augment(wave, ("translation",)).abs().sum(-1) > 0).all()
    x = spec.clone().requires_grad_(True)
    augment(x, parse_policy("translation,timemask,freqmask")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(GenkitError, match="'cutout' is not an audio policy"):
        parse_policy("translation,cutout")


def _two_class_step(cfg):
    """A seeded SpecGAN pair of ``cfg``, 16 toy spectrograms of two classes (class 0 has its energy in the low bins,
    class 1 in the high bins), the hinge loss, the audio domain and the step context it reads."""
    from types import SimpleNamespace

    from genkit.losses import BUILTIN_LOSSES
    from genkit_audio.specgan import SpecGANDiscriminator, SpecGANGenerator

    torch.manual_seed(0)
    G, D = SpecGANGenerator(cfg), SpecGANDiscriminator(cfg)
    y = torch.arange(16) % 2
    real = torch.full((16, 1, 128, 128), -0.8)
    real[y == 0, :, 8:40] = 0.6
    real[y == 1, :, 88:120] = 0.6
    real = real + 0.05 * torch.randn_like(real)
    hinge = next(loss for loss in BUILTIN_LOSSES if loss.name == "hinge")
    ctx = SimpleNamespace(generator=G, discriminator=D, loss=hinge, real=real, cond=y)
    return G, D, y, real, hinge, AudioDomain(), ctx


def test_aux_class_teaches_d_the_real_classes_and_makes_g_follow_its_label():
    """--aux-class (AC-GAN, Odena et al. 2017): D's auxiliary classifier learns the classes of the real batch of each
    update (only of that batch: the fakes add no term to D's loss), and the generator's loss, with D fixed, moves each
    fake to the class it was generated for, as D's classifier judges it, much further than the adversarial loss alone
    (``--aux-class 0``) does in the same updates."""
    import dataclasses
    from types import SimpleNamespace

    import torch.nn.functional as F

    from genkit_audio.specgan import SpecGANConfig, SpecGANDiscriminator

    cfg = SpecGANConfig(d=2, num_classes=2, upsample="nn", g_norm="batch", d_norm="spectral", aux_class=1.0)
    G, D, y, real, hinge, domain, ctx = _two_class_step(cfg)

    def classified(x):  # D's classifier on x: accuracy and cross-entropy for the classes y
        with torch.no_grad():
            D(x, y)
        return float((D.class_logits.argmax(1) == y).float().mean()), float(F.cross_entropy(D.class_logits, y))

    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(15):  # D's updates, as the engine makes them
        fake = domain.fake(G, torch.rand(16, 100) * 2 - 1, y, ctx).detach()  # names ctx.real to D
        d_real = D(real, y)
        real_logits = D.class_logits
        loss = hinge.discriminator(d_real, D(fake, y))
        term = D.auxiliary_loss()  # the real batch's cross-entropy only
        assert float(term.detach()) == pytest.approx(float(F.cross_entropy(real_logits, y).detach()))
        opt_d.zero_grad()
        (loss + term).backward()
        opt_d.step()
    D(fake, y)
    assert D.auxiliary_loss() is None  # a batch that is not the marked real one adds nothing
    assert classified(real)[0] == 1.0

    D.requires_grad_(False)
    z = torch.rand(16, 100) * 2 - 1
    start = {k: v.clone() for k, v in G.state_dict().items()}
    G.eval()
    before = classified(G(z, y))
    after = {}
    for aux in (True, False):  # the domain's loss (--aux-class 1), then the engine's own from the same start
        G.load_state_dict(start)
        G.train()
        opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
        for _ in range(15):
            loss_g = domain.generator_loss(z, y, ctx) if aux else hinge.generator(D(G(z, y), y), None)
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
        G.eval()
        after[aux] = classified(G(z, y))
    assert before[0] <= 0.5 and after[True][0] == 1.0, (before, after)
    assert after[True][1] < 0.5 * after[False][1], after  # seeded: 0.15 against 0.36 (0.72 before)

    off = SpecGANDiscriminator(dataclasses.replace(cfg, aux_class=0.0))
    assert off.aux_classifier is None and off.auxiliary_loss is None  # no term, no "penalty" column in the log
    assert domain.generator_loss(z, y, SimpleNamespace(**{**vars(ctx), "discriminator": off})) is None


def test_aux_fake_class_teaches_d_to_tell_fakes_from_every_class_and_g_to_leave_that_class():
    """--aux-fake-class W: D's auxiliary classifier has K + 1 outputs; in D's update as the engine makes it (the fakes
    drawn without gradients) it learns the real batch's classes plus W x the fakes' cross-entropy for the last class,
    so that clips made to fool a K-way classifier are named as generated; the generator's term moves its fakes out of
    that class to the one they were generated for. Off (0), the classifier keeps K outputs and D's term is the real
    batch's alone."""
    import dataclasses

    import torch.nn.functional as F

    from genkit_audio.specgan import SpecGANConfig, SpecGANDiscriminator

    cfg = SpecGANConfig(d=2, num_classes=2, upsample="nn", g_norm="batch", d_norm="spectral", aux_class=1.0,
                        aux_fake_class=0.5)
    G, D, y, real, hinge, domain, ctx = _two_class_step(cfg)
    assert D.aux_classifier.out_features == 3
    fake_class = torch.full((16,), 2)

    opt_d = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(15):
        with torch.no_grad():
            fake = domain.fake(G, torch.rand(16, 100) * 2 - 1, y, ctx)  # names the real and the fake batch to D
        d_real = D(real, y)
        real_logits = D.class_logits
        d_fake = D(fake, y)
        fake_logits = D.class_logits
        term = D.auxiliary_loss()
        expected = F.cross_entropy(real_logits, y) + 0.5 * F.cross_entropy(fake_logits, fake_class)
        assert float(term.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
        opt_d.zero_grad()
        (hinge.discriminator(d_real, d_fake) + term).backward()
        opt_d.step()
    with torch.no_grad():
        D(real, y)
        assert bool((D.class_logits.argmax(1) == y).all())  # the real clips: their own class
        D(fake, y)
        assert bool((D.class_logits.argmax(1) == 2).all())  # G's clips: the generated class
    D(fake.clone(), y)
    assert D.auxiliary_loss() is None  # only the marked batches add a term
    with torch.enable_grad():  # a generator update's fakes are never learnt as generated
        domain.fake(G, torch.rand(16, 100) * 2 - 1, y, ctx)
    assert D._aux_fake is fake

    D.requires_grad_(False)
    z = torch.rand(16, 100) * 2 - 1

    def p_fake_class():
        with torch.no_grad():
            D(G(z, y), y)
            return float(D.class_logits.softmax(1)[:, 2].mean())

    G.eval()
    before = p_fake_class()
    G.train()
    opt_g = torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(15):
        loss_g = domain.generator_loss(z, y, ctx)
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    G.eval()
    assert before > 0.5 and p_fake_class() < 0.5 * before, (before, p_fake_class())

    off = SpecGANDiscriminator(dataclasses.replace(cfg, aux_fake_class=0.0))
    assert off.aux_classifier.out_features == 2
    off.mark_fake(fake)
    assert off._aux_fake is None


def test_the_cpu_recipe_regularises_for_small_data_and_the_papers_presets_do_not():
    """The default trains with DiffAugment, AC-GAN, LeCam and the matching-aware D and samples from EMA weights
    (docs/audio.md); the authors' presets and a cross-modal run (measured without them) do not, and a flag still
    overrides the recipe."""
    from genkit.config import resolve
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domains["audio"]
    cfg = resolve(audio, reg.losses, data="../fsdd")
    assert (cfg.options.augment, cfg.options.aux_class, cfg.train.lecam) == ("translation,timemask,freqmask", 1.0, 0.3)
    for data in ("espeak-digits", None):  # the built-in digits without the time mask (docs/audio.md)
        assert resolve(audio, reg.losses, data=data).options.augment == "translation,freqmask"
    assert resolve(audio, reg.losses, data="espeak-digits", flags={"augment": "timemask"}).options.augment == "timemask"
    for data in ("../fsdd", "espeak-digits", None):  # the matching-aware D and EMA samples on both spoken-digit sets
        cfg = resolve(audio, reg.losses, data=data)
        assert (cfg.train.mismatch, cfg.train.ema) == (0.5, 0.995)
    for preset in ("paper", "specgan-paper"):
        cfg = resolve(audio, reg.losses, preset=preset)
        assert (cfg.options.augment, cfg.options.aux_class, cfg.train.lecam, cfg.train.standing_stats,
                cfg.train.mismatch, cfg.train.ema) == ("", 0.0, 0.0, 0, 0.0, 0.0)
    cfg = resolve(audio, reg.losses, flags={"condition": "image"})
    assert (cfg.options.augment, cfg.train.lecam, cfg.train.mismatch, cfg.train.steps, cfg.train.ema) == \
        ("", 0.0, 0.0, 3000, 0.0)
    assert resolve(audio, reg.losses, flags={"ema": 0.0}).train.ema == 0.0
    assert resolve(audio, reg.losses, data="../fsdd", preset="quick").train.ema == 0.0  # 200 steps: too few to average
    assert resolve(audio, reg.losses, flags={"mismatch": 0.0}).train.mismatch == 0.0
    # the generated class of D's classifier (measured, within the seed noise): off unless asked for
    for data in ("../fsdd", "espeak-digits", None):
        assert resolve(audio, reg.losses, data=data).options.aux_fake_class == 0.0
    assert resolve(audio, reg.losses, flags={"aux_fake_class": 0.25}).options.aux_fake_class == 0.25
    assert resolve(audio, reg.losses, flags={"lecam": 0.0}).train.lecam == 0.0


def test_the_built_in_digits_train_longer_than_a_folder_of_recordings():
    """1,500 steps on the built-in digits (given or by default), 1,000 on the user's folder, 3,000 cross-modal, and
    a flag or a preset still decides."""
    from genkit.config import resolve
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domains["audio"]
    assert resolve(audio, reg.losses).train.steps == 1500
    assert resolve(audio, reg.losses, data="espeak-digits").train.steps == 1500
    assert resolve(audio, reg.losses, data="../fsdd").train.steps == 1000
    # evaluated midway and at the end either way
    assert resolve(audio, reg.losses).train.eval_every == 750
    assert resolve(audio, reg.losses, data="../fsdd").train.eval_every == 500
    assert resolve(audio, reg.losses, flags={"condition": "image"}).train.steps == 3000
    assert resolve(audio, reg.losses, flags={"steps": 700}).train.steps == 700
    assert resolve(audio, reg.losses, preset="paper").train.steps == 100000


def test_specgan_trains_in_channels_last_order_by_default_and_wavegan_does_not_ask_for_it():
    """The recipe keeps SpecGAN's 4-D weights channels-last (a faster CPU step, the same arithmetic); WaveGAN, which
    has no 4-D weights, is not given the setting (so no "no effect" warning), whether asked for by flag or preset."""
    from genkit.config import resolve
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domains["audio"]
    assert resolve(audio, reg.losses).train.channels_last
    assert resolve(audio, reg.losses, data="../fsdd").train.channels_last
    assert resolve(audio, reg.losses, preset="specgan-paper").train.channels_last
    assert not resolve(audio, reg.losses, flags={"model": "wavegan"}).train.channels_last
    assert not resolve(audio, reg.losses, preset="paper").train.channels_last
    assert not resolve(audio, reg.losses, flags={"channels_last": False}).train.channels_last


def test_channels_last_specgan_trains_like_the_default_layout(tmp_path, use_shared_cache):
    """The same seed in either memory order: the same losses to rounding, weights saved in their logical shape."""
    import genkit

    data = _tone_folder(tmp_path / "tones", per_class=6)
    kw = dict(data=str(data), model_size=2, batch_size=6, steps=3, log_every=1, eval_every=0, sample_every=0,
              checkpoint_every=3, standing_stats=0, candidates=1, device="cpu")
    runs = [genkit.train("audio", out=tmp_path / str(cl), channels_last=cl, **kw) for cl in (False, True)]
    losses = [[r for r in run.metrics() if "loss_d" in r] for run in runs]
    assert len(losses[0]) == 3
    for a, b in zip(*losses, strict=True):
        for k in ("loss_d", "loss_g"):
            assert math.isfinite(b[k]) and b[k] == pytest.approx(a[k], rel=1e-3, abs=1e-5), (k, a, b)
    # three Adam steps of 2e-4 move a weight by at most about 1.2e-3 whatever the rounding (a bias before batch norm
    # has a gradient of rounding noise, which Adam scales up); a weight stored in the wrong order would be off by its size
    plain, cl = (run.load().generator.state_dict() for run in runs)
    for k, v in plain.items():
        assert cl[k].shape == v.shape and torch.allclose(cl[k], v, atol=2e-3), k


def test_candidates_keep_the_clip_d_most_believes_is_its_class_and_leave_d_as_it_was():
    """--candidates K: per row, the kept output is the candidate whose intended class D's auxiliary classifier gives
    the highest probability (checked against every candidate by hand); the candidates are U[-1, 1] latents fixed by
    z alone; D's mode and spectral-norm state are untouched; K 1, no condition and a D without the classifier pass
    straight to G."""
    from genkit_audio.candidates import CandidatePicker, candidate_latents
    from genkit_audio.specgan import SpecGANConfig, SpecGANDiscriminator, SpecGANGenerator

    torch.manual_seed(0)
    cfg = SpecGANConfig(d=2, num_classes=3, upsample="nn", g_norm="batch", d_norm="spectral", aux_class=1.0)
    G, D = SpecGANGenerator(cfg).eval(), SpecGANDiscriminator(cfg)  # D in training mode, as the engine's
    z, y = torch.rand(12, 100) * 2 - 1, torch.arange(12) % 3
    cands = candidate_latents(z, 5)
    assert torch.equal(cands[0], z) and all(c.min() >= -1 and c.max() < 1 for c in cands)
    assert torch.equal(candidate_latents(z[3:4], 5)[2], cands[2][3:4])  # a row's candidates do not depend on the batch
    assert len({round(float(c[0, 0]), 6) for c in cands}) == 5

    before = {k: v.clone() for k, v in D.state_dict().items()}
    picked = CandidatePicker(G, D, 5)(z, y)
    assert D.training and all(torch.equal(before[k], v) for k, v in D.state_dict().items())
    D.eval()
    with torch.no_grad():
        outs = [G(c, y) for c in cands]
        probs = []
        for out in outs:
            D(out, y)
            probs.append(D.class_logits.softmax(1)[torch.arange(12), y])
    best = torch.stack(probs).argmax(0)
    assert best.unique().numel() > 1  # the choice differs between rows, so the check below means something
    assert torch.equal(picked, torch.stack([outs[int(k)][i] for i, k in enumerate(best)]))
    assert float(torch.stack(probs).max(0).values.mean()) > float(probs[0].mean())

    with torch.no_grad():
        assert torch.equal(CandidatePicker(G, D, 1)(z, y), G(z, y))
        plain = SpecGANDiscriminator(SpecGANConfig(d=2, num_classes=3, upsample="nn", d_norm="spectral"))
        assert torch.equal(CandidatePicker(G, plain, 5)(z, y), G(z, y))
    assert CandidatePicker(G, D, 5).spec_mean is G.spec_mean  # the domain reads SpecGAN's statistics through it


def test_candidates_change_what_is_drawn_never_what_is_trained(cli, tmp_path):
    """A run with --candidates 4 trains exactly the weights of one with --candidates 1 (the picker only draws
    samples); its samples and genkit sample's are the chosen candidates, the same for a seed wherever it is drawn;
    and the recipe turns it on where AC-GAN's classifier is, the papers' presets and old runs off."""
    import genkit
    from genkit.config import resolve
    from genkit.plugins import registry
    from genkit_audio.candidates import CandidatePicker

    data = _tone_folder(tmp_path / "tones", per_class=6)
    args = ["run", "audio", "--data", data, "--model", "specgan", "--model-size", "2", "--batch-size", "6",
            "--steps", "3", "--aux-class", "1", "--griffin-lim-iters", "2", "--eval-samples", "0", "--quiet"]
    cli(*args, "--candidates", "1", "--out", tmp_path / "k1")
    cli(*args, "--candidates", "4", "--out", tmp_path / "k4")
    for name in ("generator.safetensors", "discriminator.safetensors"):
        w1, w4 = (load_file(str(tmp_path / r / "checkpoints" / "step-00000003" / name)) for r in ("k1", "k4"))
        assert all(torch.equal(w1[k], w4[k]) for k in w1)
    run1, run4 = genkit.Run.open(tmp_path / "k1"), genkit.Run.open(tmp_path / "k4")
    assert isinstance(run4.load().generator, CandidatePicker) and not isinstance(run1.load().generator,
                                                                                  CandidatePicker)
    a, b = run1.sample(6, seed=3), run4.sample(6, seed=3)
    assert a.shape == b.shape and not torch.equal(a, b)
    assert torch.equal(b, run4.sample(6, seed=3))
    cli("sample", tmp_path / "k4", "--seeds", "4", "--out", tmp_path / "s4")
    cli("sample", tmp_path / "k4", "--seeds", "2-5", "--out", tmp_path / "s2-5")
    one, four = (sf.read(str(next((tmp_path / d).glob(pattern))))[0] for d, pattern in
                 (("s4", "*0004*.wav"), ("s2-5", "*0004*.wav")))
    assert np.array_equal(one, four)

    reg = registry()
    audio = reg.domains["audio"]
    assert resolve(audio, reg.losses, data="../fsdd").options.candidates == 16
    assert resolve(audio, reg.losses, preset="paper").options.candidates == 1
    assert audio.upgrade_options({"aux_class": 1.0}, {})["candidates"] == 1  # a run saved before keeps its samples


def test_48_khz_files_say_their_own_rate_and_specgan_gives_no_warning_about_a_rate_it_does_not_use(tmp_path, capsys):
    """48 kHz is not a supported rate: WaveGAN resamples such files to 44.1 kHz and a warning says so; SpecGAN's
    auto rate is 16 kHz whatever the files' rate, so there is nothing to warn about. Both name the files' 48 kHz."""
    root = tmp_path / "speech48"
    word = (0.5 * np.sin(2 * np.pi * 440 * np.arange(int(0.3 * 48000)) / 48000)).astype(np.float32)
    for name in ("1_ann_0.wav", "2_ann_0.wav"):
        _write(root / name, word, 48000)
    dom = AudioDomain()
    data = dom.load_data(str(root), dom.Options(model="specgan"), cache_dir=tmp_path / "c")
    assert data.extra["sample_rate"] == 16000 and "2 clips at 16000 Hz from 48000 Hz files" in data.source
    assert "not a supported rate" not in capsys.readouterr().err
    data = dom.load_data(str(root), dom.Options(model="wavegan"), cache_dir=tmp_path / "c")
    assert data.extra["sample_rate"] == 44100 and "2 clips at 44100 Hz from 48000 Hz files" in data.source
    assert f"{root}: 48000 Hz is not a supported rate; resampling to 44100 Hz" in capsys.readouterr().err


def test_lead_moves_the_models_view_of_each_clip_and_is_cut_off_every_generated_clip(tmp_path, use_shared_cache):
    """--lead 0.125 of a 16,384-sample clip: the model trains on each clip 2,048 samples later (silence before it),
    the data stays as recorded (evaluations compare with it), and every generated clip comes back with those 2,048
    samples taken off."""
    import torch

    from genkit.run import cache_dir
    from genkit_audio import specgan

    rs = np.random.RandomState(0)
    for take in range(3):
        _write(tmp_path / "d" / f"1_spk_{take}.wav", rs.uniform(0.1, 0.5, 4000).astype(np.float32), 8000)
        _write(tmp_path / "d" / f"2_spk_{take}.wav", -rs.uniform(0.1, 0.5, 4000).astype(np.float32), 8000)
    audio = AudioDomain()
    plain = audio.load_data(str(tmp_path / "d"), AudioOptions(model="wavegan", lead=0.0), cache_dir=cache_dir())
    led = audio.load_data(str(tmp_path / "d"), AudioOptions(model="wavegan", lead=0.125), cache_dir=cache_dir())
    x = led.train.tensors[0]
    assert x.shape[-1] == 16384 and torch.equal(x, plain.train.tensors[0]) and (x[..., :10] != 0).all()
    seen = led.transform(x)
    assert (seen[..., :2048] == 0).all() and torch.equal(seen[..., 2048:], plain.transform(x)[..., :-2048])
    options = dataclasses.replace(AudioOptions(model="wavegan", lead=0.125), sample_rate=8000, length=16384)
    out = audio.generate(lambda z, cond: torch.ones(len(z), 1, 16384), torch.zeros(2, 100), None, options)
    assert out.shape == (2, 1, 16384) and (out[..., :-2048] == 1).all() and (out[..., -2048:] == 0).all()
    # SpecGAN (8,192 samples at 8 kHz): the normalisation statistics are those of what the model sees
    spec = audio.load_data(str(tmp_path / "d"), AudioOptions(model="specgan", lead=0.125), cache_dir=cache_dir())
    view = specgan.spectrogram(shift(spec.train.tensors[0], 1024).float() / 32768.0)[:, 0]
    assert torch.allclose(spec.state["spec_mean"], view.mean(dim=(0, 2)))
    assert torch.allclose(spec.transform(spec.train.tensors[0]),
                          specgan.normalise(view.unsqueeze(1), spec.state["spec_mean"], spec.state["spec_std"]))


def test_a_folder_of_recordings_gets_an_automatic_lead_and_the_built_in_digits_papers_and_older_runs_none():
    import tomllib

    from genkit.config import from_saved, resolve
    from genkit.options import AUTO
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domains["audio"]
    assert resolve(audio, reg.losses, data="../fsdd").options.lead is None  # auto: decided from the clips
    assert resolve(audio, reg.losses, data="../fsdd", preset="quick").options.lead is None
    assert resolve(audio, reg.losses, data="../fsdd", flags={"lead": AUTO}).options.lead is None
    for data in ("espeak-digits", None):  # its clips already start at random offsets
        assert resolve(audio, reg.losses, data=data).options.lead == 0.0
    for preset in ("paper", "specgan-paper"):
        assert resolve(audio, reg.losses, data="../fsdd", preset=preset).options.lead == 0.0
    assert resolve(audio, reg.losses, data="../fsdd", flags={"condition": "image"}).options.lead == 0.0
    assert resolve(audio, reg.losses, data="../fsdd", flags={"lead": 0.05}).options.lead == 0.05
    old = tomllib.loads((Path(__file__).parent / "fixtures" / "runs-f4f44c4" / "audio" / "config.toml").read_text())
    assert "lead" not in old["audio"] and from_saved(old, audio, "config.toml").options.lead == 0.0


def _words(tmp_path: Path, name: str, starts: list[float], seconds: float = 0.3, rate: int = 8000) -> Path:
    """A folder of two labelled 1.02 s (8,192-sample) clips per start: a tone burst of ``seconds`` at each start
    (seconds into the clip), silence elsewhere."""
    root = tmp_path / name
    t = np.arange(round(seconds * rate)) / rate
    for i, start in enumerate(starts):
        for label in ("1", "2"):
            wave = np.zeros(8192, np.float32)
            at = round(start * rate)
            burst = (0.5 * np.sin(2 * np.pi * 300 * int(label) * t)).astype(np.float32)[: 8192 - at]
            wave[at:at + len(burst)] = burst
            _write(root / f"{label}_spk_{i}.wav", wave, rate)
    return root


def test_the_automatic_lead_is_for_clips_trimmed_to_the_word_and_never_cuts_their_ends(tmp_path, use_shared_cache):
    """--lead auto (a folder's default): 0.2 for recordings that start with their word and end in silence (FSDD's);
    0 where the words already start later (SC09's one-second clips); at most the quiet end the clips have; resolved
    to the number in the run's settings."""
    from genkit.run import cache_dir

    audio = AudioDomain()

    def lead_of(root: Path) -> float:
        data = audio.load_data(str(root), AudioOptions(model="specgan"), cache_dir=cache_dir())
        return audio.resolve_options(AudioOptions(model="specgan"), data).lead

    trimmed = _words(tmp_path, "trimmed", [0.0, 0.0, 0.01])
    assert lead_of(trimmed) == 0.2
    assert lead_of(_words(tmp_path, "later", [0.2, 0.3, 0.4])) == 0.0  # the words do not start their clips
    # 0.92 s words at the start of 1.02 s clips, 0.1 s of quiet after them: a lead of 0.1 at most (rounded down)
    tight = _words(tmp_path, "tight", [0.0, 0.0], seconds=0.92)
    x = audio.load_data(str(tight), AudioOptions(model="specgan"), cache_dir=cache_dir()).train.tensors[0]
    onset, tail = audata.word_edges(x, 8000)
    assert (onset == 0).all() and torch.allclose(tail, torch.full_like(tail, 0.098), atol=0.011)
    assert 0.08 <= lead_of(tight) <= 0.1
    # a number given is used as it is, and a silent clip leaves no room for a lead
    assert audio.resolve_options(AudioOptions(model="specgan", lead=0.05),
                                 audio.load_data(str(trimmed), AudioOptions(model="specgan", lead=0.05),
                                                 cache_dir=cache_dir())).lead == 0.05
    assert audata.auto_lead(torch.zeros(4, 1, 8192, dtype=torch.int16), 8000) == 0.0


# -- the discriminator's mel view (--d-view) ----------------------------------------------------------
def test_the_mel_warp_gives_low_frequencies_more_rows_and_puts_each_tone_at_its_mel():
    """``mel_warp`` resamples the spectrogram's 128 linear bins at 128 points evenly spaced in mel: each row a
    weighted average of neighbouring bins (rows sum to 1), below 1 kHz about three rows a bin at 16 kHz (16 bins
    there become 45 rows), and a tone lands on the row of its own mel at either rate."""
    from genkit_audio import specgan

    def mel(f):
        return 2595 * math.log10(1 + f / 700)

    for rate, length in ((16000, 16384), (8000, 8192)):
        W = specgan.mel_warp(rate)
        assert W.shape == (128, 128) and torch.allclose(W.sum(1), torch.ones(128)) and bool((W >= 0).all())
        centre = (W * torch.arange(128.0)).sum(1) * rate / 256  # each row's frequency, Hz
        assert bool((centre[1:] > centre[:-1]).all()) and centre[0] == 0
        top = 127 * rate / 256
        assert (centre <= 1000).sum() == pytest.approx(128 * mel(1000) / mel(top), abs=1.5)
        t = torch.arange(length) / rate
        for hz in (500, 3000):
            x = specgan.spectrogram((0.5 * torch.sin(2 * math.pi * hz * t)).view(1, 1, -1))
            row = int(torch.einsum("fk,bckt->bcft", W, x)[0, 0, :, 64].argmax())
            assert abs(row - 127 * mel(hz) / mel(top)) <= 1.5, (rate, hz, row)
    assert (specgan.mel_warp(16000)[:, :16] > 0).any(dim=1).sum() >= 45  # the first kHz's 16 bins feed 45+ rows


def test_the_discriminator_reads_the_view_it_is_given():
    """--d-view: ``linear`` (the paper) convolves the spectrogram as it is, ``mel`` its mel-warped copy, ``both`` each
    in its own branch with one head over both. A change in the fine high-frequency detail that the warp averages
    away (a vector in its null space) moves a linear or two-view D's logit and leaves a mel-only D's unchanged."""
    from genkit_audio.specgan import SpecGANConfig, SpecGANDiscriminator, mel_warp

    torch.manual_seed(0)
    x = torch.rand(4, 1, 128, 128) * 2 - 1
    y = torch.arange(4)
    _, s, vh = torch.linalg.svd(mel_warp(16000).double())
    null = vh[-1].float()  # in the warp's null space: fine detail across neighbouring bins above 2 kHz
    assert s[-1] < 1e-6 and float(null[:32].abs().max()) < 1e-4 < float(null[32:].abs().max())
    nudged = x + 0.5 * null.view(1, 1, 128, 1) / null.abs().max()
    moved = {}
    for view in ("linear", "mel", "both"):
        cfg = SpecGANConfig(d=2, num_classes=4, d_norm="spectral", aux_class=1.0, d_view=view)
        D = SpecGANDiscriminator(cfg).eval()
        names = {k.split(".")[0] for k in D.state_dict()}
        assert ("convs" in names) == (view != "mel") and ("mel_convs" in names) == (view != "linear")
        assert D.aux_classifier.in_features == (2 if view == "both" else 1) * 16 * 32
        with torch.no_grad():
            moved[view] = float((D(nudged, y) - D(x, y)).abs().max())
    assert moved["mel"] < 1e-5 and moved["linear"] > 1e-3 and moved["both"] > 1e-3, moved


def test_d_kernel_gives_the_discriminator_its_kernel_with_the_same_alignment_and_leaves_the_generator_as_it_was():
    """--d-kernel 3: every convolution of D's stacks (both views) is 3 x 3, aligned as TensorFlow's 'same' (output i
    reads inputs 2i .. 2i + 2), the 4 x 4 grid under the head as with 5 x 5; G is the same model."""
    from genkit_audio.specgan import Conv2dSame, SpecGANConfig, SpecGANDiscriminator, SpecGANGenerator

    base = SpecGANConfig(d=2, num_classes=4, upsample="nn", d_norm="spectral", aux_class=1.0, d_view="both")
    small = dataclasses.replace(base, d_kernel=3)
    D5, D3 = SpecGANDiscriminator(base), SpecGANDiscriminator(small)
    assert {c.kernel_size for c in [*D5.convs, *D5.mel_convs]} == {(5, 5)}
    assert {c.kernel_size for c in [*D3.convs, *D3.mel_convs]} == {(3, 3)}
    assert D3.aux_classifier.in_features == D5.aux_classifier.in_features == 2 * 16 * 32
    x, y = torch.rand(2, 1, 128, 128) * 2 - 1, torch.tensor([0, 3])
    assert D3(x, y).shape == D5(x, y).shape
    g5, g3 = SpecGANGenerator(base).state_dict(), SpecGANGenerator(small).state_dict()
    assert {k: v.shape for k, v in g5.items()} == {k: v.shape for k, v in g3.items()}
    conv = Conv2dSame(1, 1, 3)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.zero_()
        for p in range(8):
            impulse = torch.zeros(1, 1, 8, 8)
            impulse[0, 0, p, p] = 1.0
            rows = conv(impulse)[0, 0].sum(dim=1).nonzero().flatten().tolist()
            assert rows == [i for i in range(4) if 2 * i <= p <= 2 * i + 2], (p, rows)


def test_g_cond_film_starts_as_the_input_only_generator_and_gives_each_class_its_own_gains_and_biases():
    """--g-cond film: the same initial weights and output as the label at the input only (the per-layer terms start
    at zero and draw no random numbers); a class's gains and biases move that class's clips and no other's, and
    learn only from that class's clips; no terms without a label; runs saved before the option are input-only."""
    import tomllib

    from genkit.config import from_saved
    from genkit.plugins import registry
    from genkit_audio.specgan import SpecGANConfig, SpecGANGenerator

    base = SpecGANConfig(d=2, num_classes=4, upsample="nn", g_norm="batch")
    film = dataclasses.replace(base, g_cond="film")
    torch.manual_seed(0)
    G0 = SpecGANGenerator(base).eval()
    torch.manual_seed(0)
    G1 = SpecGANGenerator(film).eval()
    shared = G0.state_dict()
    assert all(torch.equal(v, G1.state_dict()[k]) for k, v in shared.items())
    assert [tuple(p.shape) for p in G1.film] == [(4, 2 * c) for c in (32, 16, 8, 4, 2)]
    z, y = torch.rand(8, 100) * 2 - 1, torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    with torch.no_grad():
        assert torch.equal(G0(z, y), G1(z, y))
        before = G1(z, y)
        G1.film[2][2].fill_(0.5)  # class 2's gains and biases in the third layer
        after = G1(z, y)
    moved = (after - before).abs().flatten(1).amax(dim=1)
    assert (moved[y == 2] > 1e-3).all() and (moved[y != 2] == 0).all(), moved
    G1.train()
    G1(z[y == 1], y[y == 1]).square().mean().backward()
    for p in G1.film:
        rows = p.grad.abs().sum(dim=1)
        assert rows[1] > 0 and (rows[[0, 2, 3]] == 0).all()
    assert SpecGANGenerator(dataclasses.replace(film, num_classes=0)).film is None
    old = tomllib.loads((Path(__file__).parent / "fixtures" / "runs-f4f44c4" / "audio" / "config.toml").read_text())
    assert "g_cond" not in old["audio"]
    assert from_saved(old, registry().domains["audio"], "config.toml").options.g_cond == "input"


def test_a_folder_gives_the_generator_film_and_the_built_in_digits_papers_cross_modal_and_wavegan_the_input_label():
    """--g-cond: film in the CPU recipe for a folder (--preset quick too); the built-in digits (even there), the papers'
    presets, cross-modal runs (measured without it) and WaveGAN (no SpecGAN layers) keep the label at G's input only,
    as runs saved before the option do (the film test above); a flag decides over all of them."""
    from genkit.config import resolve
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domains["audio"]

    def g_cond(**kw):
        return resolve(audio, reg.losses, **kw).options.g_cond

    assert g_cond(data="../fsdd") == g_cond(data="../fsdd", preset="quick") == "film"
    assert g_cond() == g_cond(data="espeak-digits") == "input"
    assert g_cond(flags={"g_cond": "film"}) == "film"
    for preset in ("paper", "specgan-paper"):
        assert g_cond(preset=preset) == "input"
    assert g_cond(flags={"condition": "image"}) == g_cond(flags={"model": "wavegan"}) == "input"
    assert g_cond(flags={"g_cond": "input"}) == "input"
    assert g_cond(flags={"condition": "image", "g_cond": "film"}) == "film"


def test_a_folder_gets_the_automatic_view_the_built_in_digits_both_views_at_3x3_and_papers_and_older_runs_linear():
    """--d-view auto for a folder of recordings (--preset quick too), with the paper's 5 x 5 kernels; the built-in
    digits both views with 3 x 3 kernels (the two views at 5 x 5 took 11 minutes; docs/audio.md); the papers'
    presets, cross-modal runs (measured without it) and runs saved before the options the linear view at 5 x 5; a
    flag decides over all of them."""
    import tomllib

    from genkit.config import from_saved, resolve
    from genkit.plugins import registry

    reg = registry()
    audio = reg.domains["audio"]

    def view(**kw):
        options = resolve(audio, reg.losses, **kw).options
        return options.d_view, options.d_kernel

    assert view(data="../fsdd") == (None, 5)  # auto: decided by the data's rate
    assert view(data="../fsdd", preset="quick") == (None, 5)
    for data in ("espeak-digits", None):
        assert view(data=data) == ("both", 3)
    for preset in ("paper", "specgan-paper"):
        assert view(data="../fsdd", preset=preset) == ("linear", 5)
        assert view(preset=preset) == ("linear", 5)
    assert view(data="../fsdd", flags={"condition": "image"}) == ("linear", 5)
    assert view(flags={"condition": "image"}) == ("linear", 5)
    assert view(flags={"model": "wavegan"}) == ("linear", 5)  # WaveGAN has no views: its runs record the paper's
    assert view(flags={"d_view": "linear"}) == ("linear", 3)
    assert view(flags={"d_kernel": 5}) == ("both", 5)
    assert view(data="../fsdd", flags={"d_view": "mel", "d_kernel": 3}) == ("mel", 3)
    old = tomllib.loads((Path(__file__).parent / "fixtures" / "runs-f4f44c4" / "audio" / "config.toml").read_text())
    assert "d_view" not in old["audio"] and "d_kernel" not in old["audio"]
    saved = from_saved(old, audio, "config.toml").options
    assert (saved.d_view, saved.d_kernel) == ("linear", 5)


def test_the_automatic_view_is_both_at_16_khz_and_linear_at_8_khz_and_a_run_records_it(tmp_path, use_shared_cache):
    """auto gives SpecGAN both views at 16 kHz, where the first kHz is 16 rows of the linear axis, and the linear
    view at 8 kHz (32 rows); WaveGAN has no views. config.toml records the view, so samples and resumes read it."""
    import tomllib

    import genkit

    kw = dict(model_size=2, batch_size=6, steps=1, eval_every=0, sample_every=0, checkpoint_every=1, standing_stats=0,
              candidates=1, device="cpu")
    folder = _tone_folder(tmp_path / "tones16", per_class=4)  # 16 kHz
    run = genkit.train("audio", data=str(folder), out=tmp_path / "r16", **kw)
    assert tomllib.loads(run.config_path.read_text())["audio"]["d_view"] == "both"
    assert any(k.startswith("mel_convs.") for k in run.load().discriminator.state_dict())
    run = genkit.train("audio", data=str(folder), out=tmp_path / "r8", sample_rate=8000, **kw)
    assert tomllib.loads(run.config_path.read_text())["audio"]["d_view"] == "linear"
    run = genkit.train("audio", data=str(folder), out=tmp_path / "rw", model="wavegan", **kw)
    assert tomllib.loads(run.config_path.read_text())["audio"]["d_view"] == "linear"


def test_a_two_view_run_records_its_view_samples_and_resumes(cli, tmp_path):
    import tomllib

    out = tmp_path / "run"
    cli("run", "audio", *TINY, "--model", "specgan", "--griffin-lim-iters", "2", "--d-view", "both", "--out", out)
    assert tomllib.loads((out / "config.toml").read_text())["audio"]["d_view"] == "both"
    disc = load_file(str(out / "checkpoints" / "step-00000002" / "discriminator.safetensors"))
    assert any(k.startswith("mel_convs.") for k in disc) and any(k.startswith("convs.") for k in disc)
    assert not any("warp" in k for k in disc)  # the warp is computed from the rate, not saved
    cli("sample", out, "-n", "2", "--out", tmp_path / "s")
    assert len(list((tmp_path / "s").glob("*.wav"))) == 2
    cli("run", "audio", "--resume", out, "--steps", "3", "--quiet")
    assert (out / "checkpoints" / "step-00000003").is_dir()


@pytest.mark.parametrize("model", ["specgan", "wavegan"])
def test_relabel_scores_rows_of_the_last_pass_as_a_second_pass_would(model):
    """The matching-aware term's mismatched reals: ``D.relabel(rows, y)`` after ``D(x, c)`` gives the logits
    ``D(x[rows], y)`` would, and the same gradients for D's weights, from one pass over ``x`` instead of two
    (no augmentation, spectral norm or phase shuffle here, which draw anew at each pass)."""
    from genkit_audio.specgan import SpecGANConfig, SpecGANDiscriminator

    torch.manual_seed(0)
    if model == "specgan":
        D = SpecGANDiscriminator(SpecGANConfig(d=2, num_classes=3, upsample="nn", aux_class=1.0, d_view="both"))
        x = torch.rand(6, 1, 128, 128) * 2 - 1
    else:
        D = WaveGANDiscriminator(WaveGANConfig(length=16384, d=2, num_classes=3, aux_class=1.0, phase_shuffle=0))
        x = torch.rand(6, 1, 16384) * 2 - 1
    c, y = torch.tensor([0, 1, 2, 0, 1, 2]), torch.tensor([1, 2, 0, 2, 0, 1])
    rows = torch.tensor([1, 2, 0, 4, 5, 3])

    def grads(loss):
        D.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in D.parameters() if p.grad is not None]

    d_real = D(x, c)
    shared = D.relabel(rows, y)
    two_pass = D(x[rows], y)
    torch.testing.assert_close(shared, two_pass)
    torch.testing.assert_close(D(x, c), d_real)  # relabel changed nothing of D's state that scoring reads
    one = grads(D(x, c).sum() + D.relabel(rows, y).sum())
    with pytest.raises(RuntimeError, match="relabel"):  # each pass is relabelled once at most
        D.relabel(rows, y)
    two = grads(D(x, c).sum() + D(x[rows], y).sum())
    for a, b in zip(one, two, strict=True):
        torch.testing.assert_close(a, b)
    with torch.no_grad():
        D(x, c)
    with pytest.raises(RuntimeError, match="relabel"):  # an evaluation pass keeps nothing
        D.relabel(rows, y)
    D.requires_grad_(False)
    D(x.requires_grad_(True), c)
    with pytest.raises(RuntimeError, match="relabel"):  # nor does the generator's update, with D frozen
        D.relabel(rows, y)
