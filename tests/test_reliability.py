"""No run loses work: one process per run folder, divergence stops cleanly and never overwrites good checkpoints,
and every JSON genkit writes stays valid JSON (docs/run-directory.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

import genkit
from genkit import GenkitError


def _strict(text: str):
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _poisoned(from_step: int, until_step: int | None = None):
    """The ring domain whose generated points are NaN from ``from_step`` (until ``until_step``)."""
    import torch

    import genkit_ring

    class Poisoned(genkit_ring.RingDomain):
        def fake(self, generator, z, cond, ctx):
            x = super().fake(generator, z, cond, ctx)
            if ctx.step >= from_step and (until_step is None or ctx.step < until_step):
                x = x * torch.tensor(float("nan"))
            return x

        def evaluate(self, ctx):
            return {**super().evaluate(ctx), "broken_metric": float("nan")}

    return Poisoned()


TINY = dict(hidden=8, examples=64, batch_size=16, log_every=1)


def test_divergence_stops_keeps_the_good_checkpoints_and_writes_valid_json(ring, tmp_path):
    out = tmp_path / "r"
    with pytest.raises(GenkitError) as caught:
        genkit.train(_poisoned(6), out=out, steps=20, checkpoint_every=2, keep_checkpoints=2, **TINY)
    message = caught.value.format_message()
    assert message.startswith("the run diverged at step 6: loss_d is nan; nothing after it was saved and the last "
                              "good checkpoint is ") and message.endswith("checkpoints/step-00000006 (lower --lr-g / --lr-d; "
                                                                    "--on-nan skip skips isolated bad batches)")
    kept = sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("step-"))
    assert kept == ["step-00000004", "step-00000006"]  # pruning kept the newest good ones; no NaN state was saved
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000006"
    summary = _strict((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["checkpoint"].endswith("step-00000006")
    for line in (out / "metrics.jsonl").read_text().splitlines():
        _strict(line)
    # the run goes on from its last good state once the cause is fixed
    run = genkit.train(_poisoned(10**6), resume=out, steps=8)
    assert run.read_summary()["status"] == "completed" and run.read_summary()["steps"] == 8


def test_on_nan_skip_skips_bad_batches_and_nan_metrics_are_null(ring, tmp_path):
    out = tmp_path / "r"
    run = genkit.train(_poisoned(3, 4), out=out, steps=6, on_nan="skip", **TINY)
    summary = _strict(run.summary_path.read_text())
    assert summary["status"] == "completed" and summary["nan_skipped"] == 2  # one D and one G update
    assert summary["metrics"]["broken_metric"] is None and summary["metrics"]["modes"] >= 0
    rows = [_strict(line) for line in run.metrics_path.read_text().splitlines()]
    assert rows[-1]["broken_metric"] is None
    from safetensors.torch import load_file

    weights = load_file(str(run.latest_checkpoint() / "generator.safetensors"))
    assert all(bool(v.isfinite().all()) for v in weights.values())
    with pytest.raises(GenkitError, match=r"diverged at step 4: loss_d is nan, 2 updates in a row \(--nan-skips\)"):
        genkit.train(_poisoned(3), out=tmp_path / "s", steps=10, on_nan="skip", nan_skips=2, **TINY)


def _genkit(*args, **kw):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "genkit", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kw)


def test_one_process_per_run_folder_and_a_killed_run_never_strands_it(tmp_path, cache):
    out = tmp_path / "run"
    args = ("run", "image", "--g-width", "4", "--d-width", "4", "--batch-size", "8", "--eval-samples", "0",
            "--checkpoint-every", "0", "--sample-every", "0")
    first = _genkit(*args, "--steps", "100000", "--out", out, "--quiet")
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").is_file():  # training has started (the lock is held)
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.stderr else ""
            time.sleep(0.2)
        config = (out / "config.toml").read_text()
        again = _genkit(*args, "--steps", "5", "--out", out)
        assert again.wait(timeout=120) == 1 and "already holds a run" in again.stderr.read()
        resume = _genkit("run", "image", "--resume", out)  # validated first, then refused at the lock
        _, err = resume.communicate(timeout=120)
        assert resume.returncode == 1
        assert f"--resume {out}: the run is in use by process {first.pid} on " in err
        assert "one process per run folder" in err
        with pytest.raises(GenkitError, match=f"the run is in use by process {first.pid}"):
            genkit.Run(out).lock()  # what two processes starting at once into one new --out folder meet
        assert (out / "config.toml").read_text() == config  # nothing of the first run was touched
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # killed before its first checkpoint: the kernel released the lock, and --resume starts it again
    resumed = _genkit("run", "image", "--resume", out, "--steps", "3")
    _, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert "stopped before its first checkpoint; starting it again from step 0" in err
    assert _strict((out / "summary.json").read_text())["status"] == "completed"


def test_a_16_bit_png_keeps_its_tones_and_a_decompression_bomb_is_skipped_by_name(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from genkit_image.data import load_folder

    folder = tmp_path / "imgs"
    folder.mkdir()
    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0 .. 65472
    Image.fromarray(ramp).save(folder / "deep.png")
    Image.new("L", (9000, 9000)).save(folder / "huge.png")  # 81 M pixels
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 1_000_000  # so that the test's 81 M pixels count as a bomb (PIL's default: 89 M)
    try:
        x, _, _, _ = load_folder(folder, 32, 1)
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    assert x.shape == (1, 1, 32, 32)
    assert np.array_equal(x[0, 0].numpy(), (ramp >> 8).astype(np.uint8))  # not 99 % of pixels at 255
    assert f"{folder / 'huge.png'}: skipped, too many pixels to decode safely" in capsys.readouterr().err


def test_a_one_line_corpus_is_one_line_error(tmp_path, invoke):
    corpus = tmp_path / "one.txt"
    corpus.write_text("just one line of text\n")
    result = invoke("run", "text", "--data", corpus, "--steps", "2", "--out", tmp_path / "r")
    assert result.exit_code == 1 and not (tmp_path / "r").exists()
    assert result.stderr == (f"genkit: error: --data {corpus}: 1 example of text; the text domain needs at least 2 "
                             "(more for a held-out test split: 10 or more)\n")


def test_ctrl_c_while_genkit_starts_exits_130_without_a_traceback():
    code = ("import genkit.plugins as p\n"
            "def slow(*a, **k):\n    raise KeyboardInterrupt\n"
            "p.load_plugins = slow\nfrom genkit.cli import main\nmain(['plugins'])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 130 and done.stderr == "genkit: interrupted\n"


def _flip_a_weight_byte(path):
    """Change one byte inside the tensor data (not the header) of a safetensors file."""
    import struct

    raw = bytearray(path.read_bytes())
    header = struct.unpack("<Q", raw[:8])[0]
    raw[8 + header + 5] ^= 0xFF
    path.write_bytes(bytes(raw))


def test_weights_carry_a_checksum_verified_on_sample_eval_and_resume(ring, tmp_path, invoke):
    from genkit.checkpoint import file_digest, load_state, weights_digest

    out = tmp_path / "r"
    run = genkit.train("ring", out=out, steps=4, checkpoint_every=2, **TINY)
    ckpt = run.checkpoint()
    recorded = load_state(ckpt)["checksums"]
    assert recorded["generator.safetensors"] == file_digest(ckpt / "generator.safetensors")
    assert recorded["generator.safetensors"] == weights_digest(run.load().generator)
    before = run.sample(4)
    _flip_a_weight_byte(ckpt / "generator.safetensors")
    with pytest.raises(GenkitError, match="generator.safetensors: the weights do not match the checksum"):
        run.sample(4)
    for args in (["sample", str(out), "-n", "2"], ["eval", str(out)], ["run", "ring", "--resume", str(out), "--steps", "6"]):
        result = invoke(*args)
        assert result.exit_code == 1, args
        assert result.stderr.count("\n") == 1 and "do not match the checksum recorded" in result.stderr, args
    assert before.shape[0] == 4


def test_a_hand_edited_config_is_refused_on_resume_naming_the_key(ring, tmp_path):
    out = tmp_path / "r"
    genkit.train("ring", out=out, steps=4, checkpoint_every=2, **TINY)
    config = out / "config.toml"
    original = config.read_text()
    config.write_text(original.replace("batch_size = 16", "batch_size = 32"))
    with pytest.raises(GenkitError, match=r"\[train\] batch_size = 32 in config.toml, but the checkpoint was trained "
                                          r"with 16"):
        genkit.train("ring", resume=out, steps=6)
    config.write_text(original.replace("steps = 4", "steps = 6"))  # a resumable setting: config.toml's value holds
    run = genkit.train("ring", resume=out)
    assert run.read_summary()["steps"] == 6


@pytest.mark.parametrize("failure", ["torch", "safetensors"])
def test_a_full_disk_at_a_checkpoint_is_one_line_and_keeps_the_previous_checkpoint(ring, tmp_path, monkeypatch, failure):
    import errno

    import genkit.checkpoint as checkpoint

    out = tmp_path / "r"
    real = {"torch": checkpoint.torch.save, "safetensors": checkpoint.save_model}[failure]

    def full(obj, path, *args, **kwargs):  # the disk fills up while the step-4 checkpoint is written
        if "step-00000004" in str(path):
            if failure == "torch":
                raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                                   "file data/0: file write failed")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, path, *args, **kwargs)

    if failure == "torch":
        monkeypatch.setattr(checkpoint.torch, "save", full)
    else:
        monkeypatch.setattr(checkpoint, "save_model", full)
    with pytest.raises(GenkitError, match=r"cannot write the checkpoint .*step-00000004 \(.*\); nothing half-written"):
        genkit.train("ring", out=out, steps=8, checkpoint_every=2, **TINY)
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["latest", "step-00000002"]  # no .tmp folder, no half checkpoint
    assert genkit.Run.open(out).sample(2).shape[0] == 2  # the previous checkpoint loads


def test_an_unwritable_out_is_refused_before_training(ring, tmp_path, invoke):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = invoke("run", "ring", "--out", blocker / "run", "--steps", "2")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"genkit: error: --out {blocker / 'run'}: cannot write there") and \
        result.stderr.count("\n") == 1


def test_sigkill_at_random_instants_while_checkpointing_every_step_then_resume_is_bit_exact(tmp_path, cache):
    """kill -9 five times at seeded random instants of a run that writes a checkpoint after every step (so most
    kills land inside a checkpoint write); each time the latest checkpoint loads and its weights pass their checksum,
    --resume carries on, and the finished run's weights equal, bit for bit, those of a run never interrupted."""
    import random

    from safetensors.torch import load_file

    from genkit.checkpoint import load_state, verify_weights

    args = ("--g-width", "4", "--d-width", "4", "--batch-size", "8", "--eval-samples", "0", "--sample-every", "0",
            "--steps", "60", "--seed", "3", "--threads", "1", "--keep-checkpoints", "3")
    straight = _genkit("run", "image", *args, "--checkpoint-every", "0", "--out", tmp_path / "straight", "--quiet")
    out = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    proc = _genkit("run", "image", *args, "--checkpoint-every", "1", "--out", out, "--quiet")
    while kills < 5:
        deadline = time.time() + 120
        while not (out / "checkpoints" / "latest").is_file():  # past start-up: checkpoints are being written
            assert proc.poll() is None and time.time() < deadline, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.4))
        if proc.poll() is not None:  # finished before the kill: the test would prove nothing
            pytest.fail(f"the run ended before kill {kills + 1}; lengthen --steps")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        ckpt = genkit.Run(out).checkpoint()  # the latest pointer names a complete checkpoint
        state = load_state(ckpt)
        for part in ("generator", "discriminator"):
            verify_weights(ckpt / f"{part}.safetensors", state)
        assert ".tmp" not in (out / "checkpoints" / "latest").read_text()  # a half-written folder is never latest
        proc = _genkit("run", "image", "--resume", out, "--quiet")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert straight.wait(timeout=300) == 0
    a = load_file(str(genkit.Run(tmp_path / "straight").checkpoint() / "generator.safetensors"))
    b = load_file(str(genkit.Run(out).checkpoint() / "generator.safetensors"))
    assert a.keys() == b.keys() and all(torch_equal(a[k], b[k]) for k in a)
    assert _strict((out / "summary.json").read_text())["status"] == "completed"
    assert not list((out / "checkpoints").glob(".*.tmp"))  # what a kill left half-written was cleared by later saves


def torch_equal(x, y) -> bool:
    import torch

    return bool(torch.equal(x, y))


@pytest.mark.parametrize("log_every", [1, 5])
def test_deferred_nan_check_stops_at_the_same_step_as_the_per_update_check(ring, tmp_path, monkeypatch, log_every):
    """On an accelerator the NaN check is read at the next log/evaluation/snapshot/checkpoint instead of after every
    update (no host sync per step). Forced on here, on the CPU: the run still stops naming the first bad step and the
    loss, keeps the good checkpoints, and saves nothing non-finite."""
    from genkit.engine import Trainer

    init = Trainer.__post_init__

    def deferred(self):
        init(self)
        self._defer_nan = True

    monkeypatch.setattr(Trainer, "__post_init__", deferred)
    out = tmp_path / "r"
    with pytest.raises(GenkitError) as caught:
        genkit.train(_poisoned(6), out=out, steps=20, checkpoint_every=4, **{**TINY, "log_every": log_every})
    assert caught.value.format_message().startswith("the run diverged at step 6: loss_d is nan; nothing after it was "
                                                    "saved and the last good checkpoint is ")
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000004"
    from safetensors.torch import load_file

    for p in (out / "checkpoints").iterdir():
        if p.name.startswith("step-"):
            assert all(bool(v.isfinite().all()) for v in load_file(str(p / "generator.safetensors")).values())
    for line in (out / "metrics.jsonl").read_text().splitlines():
        assert _strict(line)["step"] <= 6  # nothing logged from the steps after the first bad one


def test_a_refused_resume_leaves_the_running_runs_metrics_alone(ring, tmp_path):
    """--resume of a run another process holds is refused before anything is written: in particular the metrics
    logged after the latest checkpoint (which a resume would drop) stay, and a resume that does go ahead drops them."""
    out = tmp_path / "r"
    genkit.train("ring", out=out, steps=6, checkpoint_every=2, **TINY)
    (out / "checkpoints" / "latest").write_text("step-00000004\n")  # as a run that logged steps 5-6, then was killed
    before = (out / "metrics.jsonl").read_text()
    assert '"step": 6' in before
    handle = genkit.Run(out).lock()  # another process holds the run
    try:
        with pytest.raises(GenkitError, match="the run is in use"):
            genkit.train("ring", resume=out, steps=8)
        assert (out / "metrics.jsonl").read_text() == before
    finally:
        genkit.Run.unlock(handle)
    run = genkit.train("ring", resume=out, steps=8)
    steps = [r["step"] for r in run.metrics() if "loss_d" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 8  # 5 and 6 logged once, by the resumed run
