"""The image domain as a cross-modal SOURCE (``--condition image``) and a user's own pairs (``--pairs FILE``):
docs/cross-modal.md. No built-in domain besides image is a TARGET, so image as a source is tested against
``dots``, a toy target defined here (a 2-D point per class, models that take a condition vector)."""

from __future__ import annotations

import json
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from genkit import Data, Domain, GenkitError, hookimpl, option

TINY = ("--condition-dim", "16", "--condition-warmup", "3", "--g-width", "8", "--d-width", "8", "--batch-size", "4")
TEXT = ("--condition", "text", "--condition-data", "digits")
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


# -- a toy TARGET: one 2-D point per class --------------------------------------------------------------------

class _Generator(nn.Module):
    def __init__(self, latent: int, cond: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(latent + cond, 16), nn.ReLU(), nn.Linear(16, 2))

    def forward(self, z, c=None):
        return self.net(torch.cat([z, c.to(z.dtype)], dim=1))


class _Critic(nn.Module):
    def __init__(self, cond: int):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2))
        self.out, self.project = nn.Linear(16, 1), nn.Linear(cond, 16, bias=False)

    def forward(self, x, c=None):
        h = self.features(x)
        return self.out(h).flatten() + (self.project(c.to(h.dtype)) * h).sum(dim=1)


@dataclass(frozen=True)
class DotsOptions:
    latent_dim: int = option(4, "Dimension of z.", gt=0)


class DotsDomain(Domain):
    name = "dots"
    summary = "a 2-D point per class (a test TARGET of --condition)"
    sample_ext = ".json"
    Options = DotsOptions
    data_names = ("dots",)
    vector_condition = True
    recipe = {"steps": 4, "batch_size": 8, "log_every": 1, "sample_every": 0, "checkpoint_every": 0}

    def load_data(self, spec, options, *, cache_dir):
        from torch.utils.data import TensorDataset

        y = torch.arange(40) % 4
        x = torch.stack([y.float(), -y.float()], dim=1) + 0.05 * torch.randn(40, 2, generator=torch.Generator().manual_seed(0))
        return Data(train=TensorDataset(x, y), conditional=True, num_classes=4, class_names=WORDS[:4])

    def load_examples(self, values, labels, class_names, options, *, cache_dir):
        from torch.utils.data import TensorDataset

        rows = []
        for value in values:
            try:
                rows.append([float(v) for v in value.split()])
            except ValueError:
                raise GenkitError(f"{value}: not two numbers") from None
        return Data(train=TensorDataset(torch.tensor(rows), labels), conditional=True, num_classes=len(class_names),
                    class_names=list(class_names), source="listed points")

    def build_models(self, options, data):
        return _Generator(options.latent_dim, data.cond_dim), _Critic(data.cond_dim)

    def sample_latent(self, n, options, *, rng, device):
        return torch.randn(n, options.latent_dim, generator=rng, device=device)

    def snapshot_size(self, options):
        return 8

    def write_snapshot(self, samples, cond, path, options, data):
        file = path.with_suffix(".json")
        file.write_text(json.dumps(samples.tolist()))
        return [file]

    def write_samples(self, samples, cond, out_dir, options, data):
        return self.write_snapshot(samples, cond, out_dir / "samples", options, data)


@pytest.fixture
def dots():
    from genkit.plugins import register_plugin, unregister_plugin

    def genkit_register_domains(register):
        register(DotsDomain())

    plugin = types.ModuleType("genkit_dots")
    plugin.genkit_register_domains = hookimpl(genkit_register_domains)  # type: ignore[attr-defined]
    register_plugin(plugin, name="dots")
    yield
    unregister_plugin("dots")


def write_digits(folder: Path, digits: list[int], per_digit: int) -> dict[int, list[Path]]:
    """Real MNIST digits (the shipped subset) as PNG files written with PIL: {digit: [files]}."""
    from PIL import Image

    from genkit_image.data import mnist5k

    x, y, _, _ = mnist5k()
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[int, list[Path]] = {}
    for d in digits:
        for j, i in enumerate((y == d).nonzero().flatten()[:per_digit].tolist()):
            path = folder / f"{d}_{j}.png"
            Image.fromarray(x[i, 0].numpy()).save(path)
            files.setdefault(d, []).append(path)
    return files


def image_source():
    from genkit.crossmodal import load_source

    return load_source("image", "", Path("."))


# -- 1. the image domain as a SOURCE --------------------------------------------------------------------------

def test_image_condition_example_has_the_training_tensors_form_and_bad_files_are_one_line(cache, tmp_path):
    from PIL import Image

    src = image_source()
    files = write_digits(tmp_path, [7], 1)
    example = src.domain.condition_example(str(files[7][0]), src.options, src.data)
    train_x = src.data.train.tensors[0]
    assert example.shape == (1, *train_x.shape[1:]) == (1, 1, 28, 28) and example.dtype == train_x.dtype
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "red.jpg")  # colour, not square: fitted as --data's
    assert src.domain.condition_example(str(tmp_path / "red.jpg"), src.options, src.data).shape == (1, 1, 28, 28)
    encoder = src.domain.condition_encoder(src.options, src.data, 16)
    assert encoder(src.data.transform(train_x[:5])).shape == (5, 16)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    for value, message in [(tmp_path / "nope.png", f"--condition {tmp_path / 'nope.png'}: no such image file"),
                           (tmp_path / "junk.png", f"--condition {tmp_path / 'junk.png'}: not a readable image "
                                                   "(UnidentifiedImageError)")]:
        with pytest.raises(GenkitError) as err:
            src.domain.condition_example(str(value), src.options, src.data)
        assert str(err.value.message) == message


def test_image_as_a_source_trains_a_target_and_samples_from_an_image_file(dots, invoke, cache, tmp_path):
    from safetensors.torch import load_file

    from genkit import Run
    from genkit.crossmodal import use_condition

    out = tmp_path / "run"
    result = invoke("run", "dots", "--condition", "image", "--condition-dim", "8", "--condition-warmup", "3", "--steps", "4",
                    "--out", out)
    assert result.exit_code == 0, result.stderr
    assert 'condition = "image"' in (out / "config.toml").read_text()
    weights = load_file(str(out / "checkpoints" / "step-00000004" / "discriminator.safetensors"))
    assert any(k.startswith("encoder.body.") for k in weights) and "encoder.head.weight" in weights
    seven = write_digits(tmp_path / "digits", [7], 1)[7][0]
    sampled = invoke("sample", out, "-n", "3", "--condition", seven, "--json")
    assert sampled.exit_code == 0, sampled.stderr
    files = json.loads(sampled.stdout)["files"]
    assert json.loads(Path(files[-1]).read_text()) == {"condition": str(seven), "source": "image"}
    loaded = Run.open(out).load()
    use_condition(loaded.generator, loaded.data, str(seven))
    with torch.no_grad():
        a = loaded.generator.embed(torch.tensor([0, 3]))
    assert torch.allclose(a[0], a[1]) and torch.allclose(a.norm(dim=1), torch.ones(2))
    bad = invoke("sample", out, "-n", "2", "--condition", tmp_path / "missing.png", "--out", tmp_path / "s")
    assert bad.exit_code == 1 and bad.stderr.strip() == \
        f"genkit: error: --condition {tmp_path / 'missing.png'}: no such image file"
    # no built-in domain but image is a TARGET: text (and audio) refuse a condition, in one line
    text = invoke("run", "text", "--data", "digits", "--steps", "2", "--condition", "image", "--out", tmp_path / "t")
    assert text.exit_code == 2 and "domain 'text' cannot be conditioned on another domain" in text.stderr


# -- 2. --pairs FILE --------------------------------------------------------------------------------------------

def test_csv_and_jsonl_manifests_parse_alike(tmp_path):
    from genkit.crossmodal import read_manifest

    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "pairs.csv").write_text('Image, text ,key\na.png,"seven, by hand",7\n\nb.png,one,1\nc.png,  7 ,7\n')
    rows = [{"image": "a.png", "text": "seven, by hand", "key": 7}, {"image": "b.png", "text": "one", "key": "1"},
            {"image": "c.png", "text": "7", "key": "7"}]
    (tmp_path / "pairs.jsonl").write_text(json.dumps(rows[0]) + "\n\n" + "\n".join(map(json.dumps, rows[1:])) + "\n")
    csv_m, jsonl_m = (read_manifest(str(tmp_path / f"pairs.{ext}"), "image", "text") for ext in ("csv", "jsonl"))
    for m in (csv_m, jsonl_m):
        assert [r["text"] for r in m.rows] == ["seven, by hand", "one", "7"]
        assert m.keys == [0, 1, 0] and m.key_names == ["7", "1"] and m.keyed
        assert m.lines == [2, 4, 5] if m is csv_m else m.lines == [1, 3, 4]
        assert m.value(0, "image") == str(tmp_path / "a.png")  # a file next to the manifest: its absolute path
        assert m.value(1, "image") == "b.png" and m.value(1, "text") == "one"  # no such file: as written
    (tmp_path / "nokey.csv").write_text("image,text\na.png,seven\nb.png,seven\n")
    m = read_manifest(str(tmp_path / "nokey.csv"), "image", "text")
    assert m.keys == [0, 1] and m.key_names == ["row1", "row2"] and not m.keyed  # every row its own key


def test_pairs_train_the_target_on_the_manifest_rows(invoke, cache, tmp_path):
    """image <- text from a CSV manifest: the target's examples are the manifest's images, and every condition the
    generator draws is the text of a row of the same key."""
    from genkit import Run

    files = write_digits(tmp_path / "img", [0, 1, 7], 2)
    phrases = {0: ["zero", "a handwritten zero"], 1: ["one", "the number one"], 7: ["seven", "a seven"]}
    lines = ["image,text,key"] + [f"img/{files[d][j].name},{phrases[d][j]},{WORDS[d]}" for d in (0, 1, 7)
                                  for j in range(2)]
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    result = invoke("run", "image", *TEXT, "--pairs", manifest, *TINY, "--steps", "3", "--eval-samples", "20",
                    "--out", out, "--json")
    assert result.exit_code == 0, result.stderr
    assert "refnet_fd" in json.loads(result.stdout)["metrics"]  # evaluated on the manifest's images and keys
    assert f'pairs = "{manifest}"' in (out / "config.toml").read_text()
    meta = json.loads((out / "data.json").read_text())
    assert meta["class_names"] == ["zero", "one", "seven"] and meta["num_classes"] == 3
    assert meta["source"].startswith(f"--pairs {manifest} (6 pairs, 3 keys")

    loaded = Run.open(out).load()
    src = loaded.data.extra["condition_source"]
    rows = torch.cat([src.domain.condition_example(p, src.options, src.data) for d in (0, 1, 7) for p in phrases[d]])
    pairs = loaded.generator.pairs
    assert torch.equal(pairs.x, rows)  # the source examples are the manifest's text column, row by row
    keys = torch.tensor([0, 1, 2] * 40)
    for held_out in (False, True):  # every row trains; snapshots and samples draw from the same pools
        drawn = pairs.draw(keys, held_out, generator=torch.Generator().manual_seed(1))
        row_of = [next(i for i in range(len(rows)) if torch.equal(rows[i], x)) for x in drawn]
        assert all(r // 2 == k for r, k in zip(row_of, keys.tolist()))  # a row of the asked key
        assert set(row_of) == set(range(6))  # fresh draws: both rows of each key
    sampled = invoke("sample", out, "-n", "3", "--json")
    assert sampled.exit_code == 0, sampled.stderr
    assert [Path(f).name for f in json.loads(sampled.stdout)["files"]][:3] == \
        ["sample-00000-zero.png", "sample-00001-one.png", "sample-00002-seven.png"]

    # what training and evaluation do: the run's --data (mnist5k), replaced by the manifest's images, row by row
    import numpy as np
    from PIL import Image

    from genkit.crossmodal import build_models

    data = loaded.run.domain.load_data("mnist5k", loaded.run.config.options, cache_dir=cache)
    build_models(loaded.run.domain, loaded.run.config, data)
    images = torch.stack([torch.from_numpy(np.array(Image.open(files[d][j])))[None] for d in (0, 1, 7)
                          for j in range(2)])
    x, y = data.train.tensors
    assert torch.equal(x, images) and y.tolist() == [0, 0, 1, 1, 2, 2] and data.class_names == meta["class_names"]
    manifest.write_text("\n".join(lines[:3]) + "\n")  # edited after training: its keys no longer match
    edited = invoke("sample", out, "-n", "2", "--out", tmp_path / "s")
    assert edited.exit_code == 1 and edited.stderr.strip() == (
        f"genkit: error: --pairs {manifest}: its keys (zero) are not those this run was trained with (zero, one, "
        "seven); was the manifest edited since?")


def test_pairs_from_jsonl_with_image_as_the_source_and_no_key_column(dots, invoke, cache, tmp_path):
    from genkit import Run

    files = write_digits(tmp_path / "img", [2, 5], 2)
    paths = [files[2][0], files[5][0], files[2][1]]
    manifest = tmp_path / "sub" / "pairs.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("".join(json.dumps({"dots": f"{i} {-i}", "image": f"../img/{p.name}"}) + "\n"
                                for i, p in enumerate(paths)))
    out = tmp_path / "run"
    result = invoke("run", "dots", "--condition", "image", "--pairs", manifest, "--condition-dim", "8",
                    "--condition-warmup", "3",
                    "--batch-size", "3", "--steps", "3", "--out", out)
    assert result.exit_code == 0, result.stderr
    loaded = Run.open(out).load()
    assert loaded.data.class_names == ["row1", "row2", "row3"]
    src = loaded.data.extra["condition_source"]
    expected = src.data.transform(torch.cat([src.domain.condition_example(str(p), src.options, src.data)
                                             for p in paths]))
    pairs = loaded.generator.pairs
    for held_out in (False, True):  # each row is its own key: always that row's image
        assert torch.equal(pairs.draw(torch.tensor([2, 0, 1, 2]), held_out), expected[[2, 0, 1, 2]])


def test_bad_manifests_are_one_line_naming_the_file_and_the_row(dots, invoke, cache, tmp_path):
    write_digits(tmp_path, [3], 1)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    run = ("run", "image", *TEXT, *TINY, "--steps", "2", "--eval-samples", "0")
    csv = tmp_path / "m.csv"
    cases = [
        ("m.csv", None, run, "--pairs {m}: no such file"),
        ("m.txt", "image,text\n3_0.png,three\n", run, "--pairs {m}: expected a .csv or .jsonl manifest (columns "
                                                      "image,text[,key])"),
        ("m.csv", "image,text,key\n", run, "--pairs {m}: no rows (the manifest needs columns image,text[,key] and "
                                           "one row per pair)"),
        ("m.csv", "", run, "--pairs {m}: no rows"),
        ("m.csv", "image,words\n3_0.png,three\n", run, "--pairs {m}: no 'text' column (the --condition source's "
                                                       "examples); its columns: image, words"),
        ("m.csv", "image,text\n3_0.png,three\nnope.png,three\n", run,
         "--pairs {m}: line 3, column 'image': nope.png: no such image file"),
        ("m.csv", "image,text\n3_0.png,three\njunk.png,three\n", run,
         "--pairs {m}: line 3, column 'image': {dir}/junk.png: not a readable image (UnidentifiedImageError)"),
        ("m.csv", "image,text,key\n3_0.png,,3\n", run, "--pairs {m}: line 2, column 'text' is empty"),
        ("m.csv", "image,text\n3_0.png,three, by hand\n", run,
         "--pairs {m}: line 2 has 3 fields but the header 2 (quote a value that holds a comma)"),
        ("m.jsonl", '{"image": "3_0.png", "text": "three"}\n{"image": "3_0.png", "text": \n', run,
         "--pairs {m}: line 2 is not valid JSON"),
        ("m.jsonl", '{"image": "3_0.png", "text": "three"}\n["3_0.png", "three"]\n', run,
         "--pairs {m}: line 2 is not a JSON object"),
        ("m.jsonl", '{"dots": "1 2", "image": "nope.png"}\n', ("run", "dots", "--condition", "image", "--steps", "2"),
         "--pairs {m}: line 1, column 'image': nope.png: no such image file"),
        ("m.jsonl", '{"dots": "1 x", "image": "3_0.png"}\n', ("run", "dots", "--condition", "image", "--steps", "2"),
         "--pairs {m}: line 1, column 'dots': 1 x: not two numbers"),
        ("m.csv", "image,text\n3_0.png,three\n", ("run", "image", "--steps", "2"),
         "--pairs needs --condition SOURCE (the domain of the manifest's other column)"),
    ]
    for name, content, args, message in cases:
        m = tmp_path / name
        for old in (csv, tmp_path / "m.txt", tmp_path / "m.jsonl"):
            old.unlink(missing_ok=True)
        if content is not None:
            m.write_text(content)
        result = invoke(*args, "--pairs", m, "--out", tmp_path / "x")
        expected = message.format(m=m, dir=tmp_path)
        assert result.exit_code in (1, 2) and expected in result.stderr, (name, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists(), result.stderr


def test_pairs_auto_size_and_channels_are_the_manifests_images_own(invoke, cache, tmp_path):
    """A manifest of 32 x 32 colour images trains at 32 px RGB by default, whatever --data's images would be
    (MNIST: 28 px grayscale); --size still overrides it."""
    from PIL import Image

    (tmp_path / "img").mkdir()
    lines = ["image,text,key"]
    for d, word in ((0, "zero"), (1, "one")):
        for j in range(2):
            Image.new("RGB", (32, 32), (40 * d + 10 * j, 200, 30)).save(tmp_path / "img" / f"{d}_{j}.png")
            lines.append(f"img/{d}_{j}.png,{word},{word}")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("\n".join(lines) + "\n")
    result = invoke("run", "image", *TEXT, "--pairs", manifest, *TINY, "--steps", "2", "--eval-samples", "0",
                    "--out", tmp_path / "auto")
    assert result.exit_code == 0, result.stderr
    config = (tmp_path / "auto" / "config.toml").read_text()
    assert "size = 32" in config and "channels = 3" in config
    assert "larger than" not in result.stderr  # nothing was shrunk
    result = invoke("run", "image", *TEXT, "--pairs", manifest, *TINY, "--steps", "2", "--eval-samples", "0",
                    "--size", "28", "--channels", "1", "--out", tmp_path / "small")
    assert result.exit_code == 0, result.stderr
    assert "4 of 4 images are larger than 28 px or in colour" in result.stderr


# -- 4. audio as a manifest's TARGET column ---------------------------------------------------------------

def test_pairs_with_an_audio_target_train_on_the_listed_clips_at_their_own_rate(invoke, cache, tmp_path):
    """text -> audio from a manifest of 8 kHz WAV files: the clips are the target's examples row by row, the run's
    rate is theirs (8 kHz in, 8 kHz WAVs out), and a file that does not load is one line naming row and column."""
    import soundfile as sf

    from genkit import Run
    from genkit.plugins import registry

    rows, clips = [], []
    for i, (word, hz) in enumerate([("zero", 300), ("zero", 320), ("one", 600), ("one", 640)]):
        t = torch.arange(4000) / 8000
        wave = (0.5 * torch.sin(2 * torch.pi * hz * t)).numpy()
        sf.write(tmp_path / f"clip{i}.wav", wave, 8000, subtype="PCM_16")
        clips.append(torch.from_numpy(sf.read(tmp_path / f"clip{i}.wav", dtype="int16")[0]))
        rows.append(f"clip{i}.wav,{word},{word}")
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("audio,text,key\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    result = invoke("run", "audio", *TEXT, "--pairs", manifest, "--condition-dim", "16", "--condition-warmup", "3",
                    "--model-size", "2", "--batch-size", "4", "--steps", "2", "--eval-samples", "0", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "sample_rate = 8000" in (out / "config.toml").read_text()
    assert json.loads((out / "data.json").read_text())["class_names"] == ["zero", "one"]
    sampled = invoke("sample", out, "-n", "2", "--json")
    assert sampled.exit_code == 0, sampled.stderr
    wavs = [f for f in json.loads(sampled.stdout)["files"] if f.endswith(".wav")]
    assert len(wavs) == 2 and all(sf.info(f).samplerate == 8000 for f in wavs)

    audio = registry().domain("audio")
    options = Run.open(out).config.options
    data = audio.load_examples([str(tmp_path / f"clip{i}.wav") for i in range(4)], torch.tensor([0, 0, 1, 1]),
                               ["zero", "one"], options, cache_dir=cache)
    x, y = data.train.tensors
    assert x.dtype == torch.int16 and x.shape == (4, 1, options.length) and y.tolist() == [0, 0, 1, 1]
    for i in range(4):  # each row's own samples, then silence to the run's length
        assert torch.equal(x[i, 0, :4000], clips[i]) and not x[i, 0, 4000:].any()

    (tmp_path / "junk.wav").write_bytes(b"RIFF not audio")
    for value, message in [("nope.wav", "line 3, column 'audio': nope.wav: no such audio file"),
                           ("junk.wav", f"line 3, column 'audio': {tmp_path}/junk.wav: not readable audio")]:
        manifest.write_text("audio,text,key\n" + rows[0] + f"\n{value},one,one\n")
        bad = invoke("run", "audio", *TEXT, "--pairs", manifest, "--steps", "2", "--out", tmp_path / "x")
        assert bad.exit_code == 1 and message in bad.stderr and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert not (tmp_path / "x").exists()
