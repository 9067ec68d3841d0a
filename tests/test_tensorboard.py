"""--tensorboard: the metrics, learning rates, speed and snapshots of a run, read back with TensorBoard's own reader."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from conftest import read_metrics

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

ENGINE = {"loss_d": "loss/loss_d", "loss_g": "loss/loss_g", "penalty": "loss/penalty", "d_real": "D/real",
          "d_fake": "D/fake"}
IMAGE = ["--g-width", "4", "--d-width", "4", "--batch-size", "8", "--eval-samples", "0", "--log-every", "2"]
TEXT = ["--n-layer", "1", "--n-embd", "32", "--n-head", "2", "--d-embed", "16", "--d-filters", "8",
        "--vocab-size", "300", "--max-len", "12", "--batch-size", "8", "--pretrain-steps", "3", "--steps", "3",
        "--bleu-samples", "20", "--sweep", "1.0", "--eval-every", "0", "--checkpoint-every", "0",
        "--sample-every", "0", "--log-every", "1", "--device", "cpu", "--quiet"]


def board(run: Path) -> EventAccumulator:
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0, "tensors": 0})
    return acc.Reload()


def scalars(acc: EventAccumulator, tag: str) -> dict[int, float]:
    events = acc.Scalars(tag)
    steps = [e.step for e in events]
    assert len(steps) == len(set(steps)), (tag, steps)  # no step twice (not even across a resume)
    return {e.step: e.value for e in events}


def expected(records: list[dict]) -> dict[str, dict[int, float]]:
    """What metrics.jsonl says each scalar tag must hold: the engine's keys by name, every other number as
    eval/NAME (pretrain/NAME on a pre-training phase's line), seconds as time/seconds on the losses' lines."""
    out: dict[str, dict[int, float]] = {}
    for r in records:
        for key, value in r.items():
            if key == "step" or isinstance(value, (bool, str)) or value is None:
                continue
            if key == "seconds":
                if "loss_d" not in r and "phase" not in r:
                    continue
                tag = "time/seconds"
            else:
                tag = ENGINE.get(key) or (f"pretrain/{key}" if "phase" in r else f"eval/{key}")
            out.setdefault(tag, {})[r["step"]] = float(value)
    return out


def assert_scalars_match_metrics(acc: EventAccumulator, run: Path) -> dict[str, dict[int, float]]:
    want = expected(read_metrics(run))
    tags = set(acc.Tags()["scalars"])
    assert set(want) <= tags, sorted(set(want) - tags)
    for tag, by_step in want.items():
        got = scalars(acc, tag)
        assert set(got) == set(by_step), tag
        for step, value in by_step.items():
            assert math.isclose(got[step], value, rel_tol=1e-5, abs_tol=1e-6), (tag, step, got[step], value)
    loss_steps = sorted(r["step"] for r in read_metrics(run) if "loss_d" in r)
    for tag in ("lr/generator", "lr/discriminator"):
        assert sorted(scalars(acc, tag)) == loss_steps
    config = (run / "config.toml").read_text()
    lr_g = float(next(line for line in config.splitlines() if line.startswith("lr_g")).split("=")[1])
    assert all(math.isclose(v, lr_g, rel_tol=1e-6) for v in scalars(acc, "lr/generator").values())
    speed, per_step = scalars(acc, "time/steps_per_second"), scalars(acc, "time/step_seconds")
    assert sorted(speed) == sorted(per_step) and set(speed) <= set(loss_steps)  # (none where seconds did not move)
    assert all(v > 0 and math.isclose(speed[s] * per_step[s], 1.0, rel_tol=1e-4) for s, v in speed.items())
    return want


def test_image_run_scalars_and_snapshots_then_a_resume_appends(invoke, tmp_path):
    run = tmp_path / "run"
    result = invoke("run", "image", *IMAGE, "--r1", "0.1", "--steps", "4", "--sample-every", "2", "--tensorboard",
                    "--out", run, "--quiet")
    assert result.exit_code == 0, result.stderr
    acc = board(run)
    want = assert_scalars_match_metrics(acc, run)
    assert {"loss/loss_d", "loss/loss_g", "loss/penalty", "D/real", "D/fake", "time/seconds"} <= set(want)
    assert sorted(scalars(acc, "loss/loss_d")) == [2, 4]
    assert sorted(scalars(acc, "time/steps_per_second")) == [2, 4]  # measured from the start of the run
    assert acc.Tags()["images"] == ["samples/image"] and acc.Tags()["audio"] == []
    images = {e.step: e for e in acc.Images("samples/image")}
    assert sorted(images) == [2, 4]  # samples/step-00000002.png, then samples/final.png at the last step
    for step, name in ((2, "step-00000002.png"), (4, "final.png")):
        width, height = Image.open(run / "samples" / name).size
        assert (images[step].width, images[step].height) == (width, height)
        decoded = np.asarray(Image.open(__import__("io").BytesIO(images[step].encoded_image_string)).convert("RGB"))
        assert np.array_equal(decoded, np.asarray(Image.open(run / "samples" / name).convert("RGB")))

    # A resume appends an event file; the curves go on from the checkpoint without a step twice.
    result = invoke("run", "image", "--resume", run, "--steps", "6", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    acc = board(run)
    assert_scalars_match_metrics(acc, run)
    assert sorted(scalars(acc, "loss/loss_d")) == [2, 4, 6]
    assert sorted(e.step for e in acc.Images("samples/image")) == [2, 4, 6]


def test_text_run_pretraining_evaluation_and_samples_as_text(invoke, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(f"{s} {v} the {o}.\n" for s in ("The cat", "A dog", "My friend", "The bird")
                              for v in ("sees", "likes", "finds") for o in ("ball", "car", "garden", "owner")))
    config = tmp_path / "tb.toml"
    config.write_text("[train]\ntensorboard = true\n")  # the config file's way to turn it on
    run = tmp_path / "run"
    result = invoke("run", "text", "--data", corpus, "--config", config, "--out", run, *TEXT)
    assert result.exit_code == 0, result.stderr
    acc = board(run)
    want = assert_scalars_match_metrics(acc, run)
    assert any(t.startswith("pretrain/") for t in want) and any(t.startswith("eval/") for t in want)
    final = read_metrics(run)[-1]
    assert final["step"] == 3 and "bleu4_method1" in final
    assert math.isclose(scalars(acc, "eval/bleu4_method1")[3], final["bleu4_method1"], rel_tol=1e-5)
    assert acc.Tags()["tensors"] == ["samples/text/text_summary"]
    (event,) = acc.Tensors("samples/text/text_summary")
    shown = event.tensor_proto.string_val[0].decode()
    lines = (run / "samples" / "final.txt").read_text(encoding="utf-8").splitlines()
    assert event.step == 3 and shown.splitlines() == [f"    {line}" for line in lines]


def test_audio_snapshots_keep_their_sample_rate(invoke, tmp_path):
    data = tmp_path / "clips"
    data.mkdir()
    rs = np.random.RandomState(0)
    for digit, freq in (("1", 400), ("2", 1200)):
        for take in range(4):
            t = np.arange(rs.randint(3000, 6000)) / 8000
            sf.write(str(data / f"{digit}_spk_{take}.wav"), (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32),
                     8000)
    run = tmp_path / "run"
    result = invoke("run", "audio", "--data", data, "--model", "wavegan", "--model-size", "2", "--batch-size", "4",
                    "--steps", "1", "--eval-samples", "0", "--tensorboard", "--out", run, "--quiet")
    assert result.exit_code == 0, result.stderr
    acc = board(run)
    assert_scalars_match_metrics(acc, run)
    wavs = sorted((run / "samples" / "final").glob("*.wav"))
    assert wavs and sorted(acc.Tags()["audio"]) == sorted(f"samples/{w.stem}" for w in wavs)
    for wav in wavs[:4]:
        (event,) = acc.Audio(f"samples/{wav.stem}")
        info = sf.info(str(wav))
        assert (event.step, event.sample_rate, event.length_frames, event.content_type) == \
            (1, 8000, info.frames, "audio/wav")
    assert acc.Tags()["images"] == ["samples/image"]  # the spectrogram grid, samples/final.png


def test_a_third_party_domain_evaluation_and_unknown_files(invoke, ring, tmp_path):
    run = tmp_path / "run"
    result = invoke("run", "ring", "--steps", "3", "--examples", "256", "--log-every", "1", "--tensorboard",
                    "--out", run, "--quiet")
    assert result.exit_code == 0, result.stderr
    acc = board(run)
    want = assert_scalars_match_metrics(acc, run)
    assert any(t.startswith("eval/") for t in want)
    tags = acc.Tags()
    assert tags["images"] == tags["audio"] == tags["tensors"] == []  # its .json snapshot is not TensorBoard's


def test_without_tensorboard_it_is_one_line_and_nothing_is_written(invoke, tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith(("tensorboard.", "torch.utils.tensorboard"))]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard: ImportError
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    config = tmp_path / "tb.toml"
    config.write_text("[train]\ntensorboard = true\n")
    for how in (["--tensorboard"], ["--config", config]):
        out = tmp_path / "run"
        result = invoke("run", "image", *IMAGE, "--steps", "1", *how, "--out", out)
        assert result.exit_code == 1
        assert result.stderr.splitlines() == [
            "genkit: error: --tensorboard needs the tensorboard package: pip install 'genkit[tensorboard]'"]
        assert not out.exists()
    ok = invoke("run", "image", *IMAGE, "--steps", "1", "--out", tmp_path / "plain", "--quiet")
    assert ok.exit_code == 0 and not (tmp_path / "plain" / "tensorboard").exists()  # off by default
    assert json.loads((tmp_path / "plain" / "summary.json").read_text())["status"] == "completed"
