"""The image domain: DCGAN shapes, every data source, and a tiny run end to end through the CLI."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from genkit import GenkitError
from genkit.plugins import registry
from genkit_image.model import DCGANConfig, Discriminator, Generator

from conftest import load_weights, read_metrics

TINY = ["--g-width", "8", "--d-width", "8", "--batch-size", "16", "--eval-samples", "0"]


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes(size, channels):
    cfg = DCGANConfig(size=size, channels=channels, g_width=8, d_width=8)
    G, D = Generator(cfg), Discriminator(cfg)
    x = G(torch.randn(5, 100))
    assert x.shape == (5, channels, size, size)
    assert x.min() >= -1 and x.max() <= 1  # tanh output
    assert D(x).shape == (5,)


def test_conditional_dcgan_uses_the_label():
    cfg = DCGANConfig(num_classes=10, g_width=8, d_width=8)
    G, D = Generator(cfg).eval(), Discriminator(cfg).eval()
    z = torch.randn(4, 100)
    a, b = G(z, torch.tensor([0, 1, 2, 3])), G(z, torch.tensor([4, 5, 6, 7]))
    assert not torch.allclose(a, b)
    assert not torch.allclose(D(a, torch.tensor([0, 1, 2, 3])), D(a, torch.tensor([4, 5, 6, 7])))


@pytest.mark.parametrize("norm", ["spectral", "layer", "none"])
def test_discriminator_norm_variants(norm):
    D = Discriminator(DCGANConfig(d_width=8, d_norm=norm))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules())
    assert D(torch.randn(2, 1, 28, 28)).shape == (2,)


def domain():
    return registry().domain("image")


def opts(**kw):
    return domain().Options(**kw)


def test_default_data_is_real_mnist(cache):
    data = domain().load_data("mnist5k", opts(), cache_dir=cache)
    x, y = data.train.tensors
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.uint8
    assert sorted(set(y.tolist())) == list(range(10))
    assert (data.extra["size"], data.extra["channels"]) == (28, 1)
    real = data.transform(x[:8])
    assert real.min() == -1.0 and real.max() == 1.0
    assert x.float().mean() / 255 == pytest.approx(0.13, abs=0.02)  # MNIST's mean intensity


def write_png(path, size=(20, 12), color=(200, 10, 10), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_with_labels_and_a_broken_file(cache, tmp_path, capsys):
    root = tmp_path / "pics"
    for i in range(3):
        write_png(root / "cats" / f"c{i}.png")
        write_png(root / "dogs" / "deep" / f"d{i}.jpg", color=(10, 10, 200))
    (root / "dogs" / "broken.png").write_bytes(b"not a png at all")
    data = domain().load_data(str(root), opts(size=32, conditional=True), cache_dir=cache)
    x, y = data.train.tensors
    assert x.shape == (6, 3, 32, 32)
    assert data.class_names == ["cats", "dogs"] and data.num_classes == 2
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x[0, 0].float().mean() == pytest.approx(200, abs=1) and x[3, 2].float().mean() == pytest.approx(200, abs=2)
    err = capsys.readouterr().err
    assert "broken.png" in err and "skipped 1 unreadable file(s) of 7" in err
    assert data.source == f"{root} (6 images, 2 classes from sub-folders)"
    (root / "birds").mkdir()
    (root / "birds" / "broken.png").write_bytes(b"not a png either")  # a class of unreadable files only
    data = domain().load_data(str(root), opts(size=32, conditional=True), cache_dir=cache)
    assert data.class_names == ["cats", "dogs"] and data.train.tensors[1].tolist() == [0, 0, 0, 1, 1, 1]
    assert f"{root}: no readable image in sub-folder(s) birds; left out of the classes" in capsys.readouterr().err


def test_folder_of_one_image_a_sub_folder_is_unlabelled_unless_asked(cache, tmp_path, capsys):
    root = tmp_path / "album"
    for i in range(4):  # a camera's dated folders, one picture each: identifiers, not classes
        write_png(root / f"2024-05-0{i + 1}" / "img.png")
    data = domain().load_data(str(root), opts(size=32), cache_dir=cache)
    assert not data.conditional and data.class_names == [] and data.extra["labels"] is None
    assert data.source == f"{root} (4 images, unlabelled: identifiers in sub-folders)"
    assert f"genkit: warning: {root}: 4 of its 4 names" in capsys.readouterr().err
    asked = domain().load_data(str(root), opts(size=32, conditional=True), cache_dir=cache)
    assert asked.conditional and asked.num_classes == 4


def test_folder_grayscale_conversion_and_default_size(cache, tmp_path):
    root = tmp_path / "flat"
    write_png(root / "a.png", size=(100, 80))
    write_png(root / "b.png", size=(64, 64))
    data = domain().load_data(str(root), opts(channels=1), cache_dir=cache)
    assert data.train.tensors[0].shape == (2, 1, 64, 64)
    assert not data.conditional and data.source == f"{root} (2 images)"
    with pytest.raises(GenkitError, match="needs class labels"):
        domain().load_data(str(root), opts(conditional=True), cache_dir=cache)


def test_folder_of_only_broken_files(cache, tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"junk")
    with pytest.raises(GenkitError, match="none of the 1 image files could be read"):
        domain().load_data(str(tmp_path / "bad"), opts(), cache_dir=cache)


def test_npz_float_nhwc(cache, tmp_path):
    x = np.random.default_rng(0).random((10, 32, 32, 3)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([5, 7] * 5))
    data = domain().load_data(str(tmp_path / "d.npz"), opts(conditional=True), cache_dir=cache)
    got = data.train.tensors[0]
    assert got.shape == (10, 3, 32, 32)
    assert torch.equal(got[0, :, 0, 0], torch.from_numpy(np.rint(x[0, 0, 0] * 255).astype(np.uint8)))
    assert data.class_names == ["5", "7"] and data.train.tensors[1].tolist() == [0, 1] * 5
    (tmp_path / "bad.npz").write_bytes(b"zip? no")
    with pytest.raises(GenkitError, match="bad.npz"):
        domain().load_data(str(tmp_path / "bad.npz"), opts(), cache_dir=cache)
    np.savez(tmp_path / "nokey.npz", weights=x)
    with pytest.raises(GenkitError, match="no image array"):
        domain().load_data(str(tmp_path / "nokey.npz"), opts(), cache_dir=cache)


def write_idx(path, array, magic):
    with gzip.open(path, "wb") if path.suffix == ".gz" else open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes())


def test_torchvision_mnist_from_the_cache_folder(cache):
    """torchvision's MNIST loader reads a cached copy without touching the network."""
    raw = cache / "torchvision" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12, dtype=np.uint8) % 10
    write_idx(raw / "train-images-idx3-ubyte", images, 0x803)
    write_idx(raw / "train-labels-idx1-ubyte", labels, 0x801)
    write_idx(raw / "t10k-images-idx3-ubyte", images[:2], 0x803)
    write_idx(raw / "t10k-labels-idx1-ubyte", labels[:2], 0x801)
    data = domain().load_data("mnist", opts(), cache_dir=cache)
    x, y = data.train.tensors
    assert torch.equal(x[:, 0], torch.from_numpy(images)) and y.tolist() == labels.tolist()
    assert data.class_names[0].startswith("0")


def test_torchvision_offline_is_a_clear_error(cache, monkeypatch):
    import socket

    import torchvision

    with socket.socket() as s:  # a port on this machine that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(torchvision.datasets.FashionMNIST, "mirrors", [f"http://127.0.0.1:{port}/"])
    with pytest.raises(GenkitError, match="could not download fashion-mnist"):
        domain().load_data("fashion-mnist", opts(), cache_dir=cache)


def test_end_to_end_run_and_sample(invoke, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "image", *TINY, "--steps", "4", "--log-every", "2", "--sample-every", "2",
                    "--checkpoint-every", "2", "--ema", "0.9", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary == json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 4 and summary["data_source"].startswith("MNIST")
    final = out / "samples" / "final.png"
    assert summary["samples"] == [str(final)]
    assert Image.open(final).size == (10 * 30 + 2, 10 * 30 + 2)  # a 10 x 10 grid of 28 px digits, 2 px padding
    assert (out / "samples" / "step-00000002.png").is_file()
    assert [r["step"] for r in read_metrics(out)] == [2, 4]
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    assert sorted(p.name for p in (out / "checkpoints" / "step-00000004").iterdir()) == [
        "discriminator.safetensors", "generator.safetensors", "generator_ema.safetensors", "state.pt"]
    assert 'loss = "ns"' in (out / "config.toml").read_text()

    result = invoke("sample", out, "-n", "7", "--seed", "3", "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["weights"] == "generator_ema.safetensors"
    pngs = [p for p in written["files"] if "sample-" in p.rsplit("/", 1)[-1]]
    assert len(pngs) == 7 and Image.open(pngs[0]).size == (28, 28)
    again = json.loads(invoke("sample", out / "checkpoints" / "step-00000004", "-n", "7", "--seed", "3", "--json").stdout)
    assert again["out"] != written["out"]  # a new folder: nothing is overwritten
    assert np.array_equal(np.asarray(Image.open(pngs[0])), np.asarray(Image.open(again["files"][0])))


def test_config_file_reproduces_the_run(invoke, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert invoke("run", "image", *TINY, "--steps", "3", "--seed", "7", "--out", a).exit_code == 0
    assert invoke("run", "image", "--config", a / "config.toml", "--out", b).exit_code == 0
    wa = load_weights(a / "checkpoints" / "step-00000003" / "generator.safetensors")
    wb = load_weights(b / "checkpoints" / "step-00000003" / "generator.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cli_resume_matches_an_uninterrupted_run(invoke, tmp_path):
    full, half = tmp_path / "full", tmp_path / "half"
    common = [*TINY, "--conditional", "--loss", "hinge", "--n-critic", "2"]
    assert invoke("run", "image", *common, "--steps", "6", "--out", full).exit_code == 0
    assert invoke("run", "image", *common, "--steps", "3", "--out", half).exit_code == 0
    result = invoke("run", "image", "--resume", half, "--steps", "6")
    assert result.exit_code == 0, result.output
    for name in ("generator", "discriminator"):
        wa = load_weights(full / "checkpoints" / "step-00000006" / f"{name}.safetensors")
        wb = load_weights(half / "checkpoints" / "step-00000006" / f"{name}.safetensors")
        assert all(torch.equal(wa[k], wb[k]) for k in wa), name
    assert "steps = 6" in (half / "config.toml").read_text()
    again = invoke("run", "image", "--resume", half)
    assert again.exit_code == 1 and "already at step 6 of 6" in again.stderr
    changed = invoke("run", "image", "--resume", half, "--steps", "9", "--loss", "ns", "--g-width", "16")
    assert changed.exit_code == 2 and "--resume: --loss, --g-width cannot change in an existing run" in changed.stderr
    same = invoke("run", "image", "--resume", half, "--steps", "7", "--loss", "hinge")  # unchanged values pass
    assert same.exit_code == 0, same.stderr
    assert "steps = 7" in (half / "config.toml").read_text()


def two_class_npz(path, n=400, seed=0):
    """Class 0: a bright square top-left; class 1: bottom-right; both on noise."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, (n, 28, 28)).astype(np.uint8)
    y = np.arange(n) % 2
    x[y == 0, 2:12, 2:12] = 250
    x[y == 1, 16:26, 16:26] = 250
    np.savez(path, x=x, y=y)
    return path


def test_refnet_metrics_separate_real_from_noise(cache, tmp_path):
    from genkit_image import metrics

    data = domain().load_data(str(two_class_npz(tmp_path / "d.npz")), opts(), cache_dir=cache)
    x, y = data.train.tensors[0], data.extra["labels"]
    net, acc, test_idx = metrics.reference_classifier(x, y, 2, data.source, cache)
    assert acc == 1.0
    assert len(list((cache / "image-refnet").glob("*.safetensors"))) == 1  # cached for the next evaluation
    held_out = x[test_idx]
    train = data.transform(x[np.setdiff1d(np.arange(len(x)), test_idx.numpy())])
    real = metrics.score(net, acc, held_out, train, 2)
    noise = metrics.score(net, acc, held_out, torch.rand(200, 1, 28, 28) * 2 - 1, 2)
    assert real["refnet_is"] == pytest.approx(2.0, abs=0.1) and real["refnet_classes"] == 2
    assert real["refnet_confident"] > 0.95
    assert real["refnet_fd"] < 0.05 * noise["refnet_fd"]
    assert noise["refnet_is"] < 1.5


def test_memorisation_check_is_near_zero_for_copies_and_large_for_noise(cache, tmp_path):
    from genkit.refnet import train_examples
    from genkit_image import metrics

    data = domain().load_data(str(two_class_npz(tmp_path / "d.npz")), opts(), cache_dir=cache)
    x, y = data.train.tensors[0], data.extra["labels"]
    net, acc, test_idx = metrics.reference_classifier(x, y, 2, data.source, cache)
    train_idx = train_examples(len(x), test_idx)
    assert set(train_idx.tolist()).isdisjoint(test_idx.tolist()) and len(train_idx) + len(test_idx) == len(x)
    train = x[train_idx]
    copies = metrics.score(net, acc, x[test_idx], data.transform(train[:100]), 2, train=train)
    fresh = metrics.score(net, acc, x[test_idx], data.transform(x[test_idx]), 2, train=train)  # new real data
    noise = metrics.score(net, acc, x[test_idx], torch.rand(100, 1, 28, 28) * 2 - 1, 2, train=train)
    assert copies["refnet_nn_train"] < 1e-6 and copies["refnet_nn_ratio"] < 1e-6
    assert fresh["refnet_nn_ratio"] == pytest.approx(1.0)
    assert noise["refnet_nn_ratio"] > 3
    assert copies["refnet_nn_self"] > 0  # 100 different training images are not one repeated sample


def test_eval_command_scores_a_run_like_the_run_did(invoke, tmp_path):
    data = two_class_npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--eval-samples", "0")]
    result = invoke("run", "image", "--data", data, *tiny, "--eval-samples", "100", "--steps", "2", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    during = json.loads(result.stdout)["metrics"]
    assert set(during) >= {"refnet_is", "refnet_fd", "refnet_kid", "refnet_confident", "refnet_classes"}
    assert read_metrics(out)[-1]["refnet_fd"] == during["refnet_fd"]
    after = json.loads(invoke("eval", out, "--json").stdout)
    assert after["step"] == 2 and after["weights"] == "generator.safetensors"
    assert after["metrics"] == pytest.approx(during, rel=1e-6)
    assert "refnet_fd:" in invoke("eval", out).stdout


def test_diffaugment_policies():
    from genkit_image.augment import diff_augment, parse_policy

    torch.manual_seed(0)
    x = torch.rand(64, 1, 16, 16, requires_grad=True)
    shifted = diff_augment(x, ("translation",))
    assert shifted.shape == x.shape
    # a pure shift: every output row holds the input's pixels or zeros, and some images moved
    assert (shifted == 0).any() and not torch.equal(shifted, x)
    cut = diff_augment(x, ("cutout",))
    zeros = (cut == 0).flatten(1).sum(1)
    assert torch.all(zeros >= 1) and torch.all(zeros <= 64)  # at most an 8 x 8 square of 16 x 16
    diff_augment(x, parse_policy("color,translation,cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # differentiable: gradients reach the generator
    with pytest.raises(GenkitError, match="unknown policy 'flip'"):
        parse_policy("translation,flip")


def test_augment_is_used_in_training_only():
    D = Discriminator(DCGANConfig(d_width=8, augment=("translation", "cutout")))
    x = torch.rand(4, 1, 28, 28)
    D.eval()
    assert torch.equal(D(x), D(x))
    D.train()
    torch.manual_seed(1)
    a = D(x)
    torch.manual_seed(2)
    assert not torch.allclose(a, D(x))


def test_conditional_is_on_when_the_data_has_labels(invoke, tmp_path):
    labelled = two_class_npz(tmp_path / "d.npz")
    unlabelled = tmp_path / "u.npz"
    np.savez(unlabelled, x=np.load(labelled)["x"])
    cases = [(labelled, [], True), (labelled, ["--no-conditional"], False), (unlabelled, [], False)]
    for i, (data, flags, expected) in enumerate(cases):
        out = tmp_path / f"run{i}"
        result = invoke("run", "image", "--data", data, *TINY, "--steps", "1", *flags, "--out", out, "--quiet")
        assert result.exit_code == 0, result.stderr
        assert f"conditional = {str(expected).lower()}" in (out / "config.toml").read_text()  # resolved, not "auto"
