"""The command line: help without torch, plugins and info listings, and bad input handled in one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from genkit import __version__


def python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=120)


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["run", "image", "--help"], ["plugins"]])
def test_help_and_listing_do_not_import_torch(args):
    out = python("import sys\nfrom genkit.cli import create_cli\n"
                 f"create_cli().main({args!r}, standalone_mode=False)\n"
                 "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "NO-TORCH"


def test_version(invoke):
    result = invoke("--version")
    assert result.exit_code == 0 and __version__ in result.output


def test_run_help_lists_common_and_domain_options(invoke):
    result = invoke("run", "image", "--help")
    for flag in ("--config", "--data", "--steps", "--batch-size", "--loss", "--lr-g", "--lr-d", "--n-critic", "--seed",
                 "--device", "--out", "--resume", "--checkpoint-every", "--json", "--size", "--channels", "--conditional"):
        assert flag in result.output, flag


def test_plugins_json_names_what_each_plugin_registers(invoke, ring):
    result = invoke("plugins", "--json")
    rows = {p["name"]: p for p in json.loads(result.stdout)}
    assert "image" in rows["image"]["domains"]
    assert {"ns", "wgan-gp", "hinge", "lsgan", "minimax"} <= set(rows["genkit.losses"]["losses"])
    assert rows["ring"]["domains"] == ["ring"]
    assert rows["image"]["version"] == __version__


def test_info_image_json(invoke):
    result = invoke("info", "image", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["sample_shape"] == [1, 28, 28]
    assert info["parameters"]["generator"] > 0 and info["parameters"]["discriminator"] > 0
    assert info["config"]["train"]["loss"] == "ns"
    assert info["config"]["image"]["size"] == 28 or info["config"]["image"]["size"] == 0
    assert info["data"]["examples"] == 5000
    wide = json.loads(invoke("info", "image", "--json", "--g-width", "64").stdout)
    assert wide["parameters"]["generator"] > info["parameters"]["generator"]


def assert_one_line_error(result, *fragments, code=1):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("genkit: error:")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args, fragments, code", [
    (["run", "nosuchdomain"], ["unknown domain 'nosuchdomain'", "image"], 1),
    (["run", "image", "--loss", "nosuchloss"], ["'nosuchloss' is not one of", "'wgan-gp'"], 2),
    (["run", "image", "--data", "/no/such/path"], ["/no/such/path"], 1),
    (["run", "image", "--steps", "0"], ["'--steps': must be positive, got 0"], 2),
    (["run", "image", "--steps", "-5"], ["'--steps': must be positive, got -5"], 2),
    (["run", "image", "--lr-g", "0"], ["'--lr-g': must be positive"], 2),
    (["run", "image", "--lr-d", "inf"], ["'--lr-d': must be a finite number"], 2),
    (["run", "image", "--gp", "nan"], ["'--gp': must be a finite number"], 2),
    (["run", "image", "--r1", "-1"], ["'--r1': must be zero or positive"], 2),
    (["run", "image", "--ema", "1"], ["'--ema': must be in [0, 1)"], 2),
    (["run", "image", "--size", "48"], ["'--size'", "'48' is not one of '28', '32', '64'"], 2),
    (["run", "image", "--g-width", "x"], ["'--g-width'", "'x' is not a valid int"], 2),
    (["run", "image", "--device", "tpu"], ["--device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"], 2),
    (["run", "image", "--pretrain-steps", "3"], ["no pre-training phase"], 2),
    (["run", "image", "--augment", "flip"], ["unknown policy 'flip'"], 2),
    (["run", "image", "--no-such-flag"], ["No such option '--no-such-flag'", "(see 'genkit run image --help')"], 2),
    (["info", "nosuchdomain"], ["unknown domain"], 1),
    (["sample", "/no/such/run"], ["/no/such/run"], 1),
    (["sample", "/no/such/run", "-n", "0"], ["'-n'", "0 is not in the range x>=1"], 2),
])
def test_bad_input_is_one_line_and_writes_nothing(invoke, tmp_path, monkeypatch, args, fragments, code):
    monkeypatch.chdir(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    result = invoke(*args)
    assert_one_line_error(result, *fragments, code=code)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created, not even runs/


def test_an_unknown_domain_says_when_genkit_load_plugins_left_plugins_out(invoke, monkeypatch):
    monkeypatch.setenv("GENKIT_LOAD_PLUGINS", "")
    assert_one_line_error(invoke("run", "sines"), "unknown domain 'sines' (available: audio, image, text); "
                                                  "GENKIT_LOAD_PLUGINS='' limits the third-party plugins loaded")


def test_empty_folder_is_an_error(invoke, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(invoke("run", "image", "--data", empty, "--out", tmp_path / "out"), str(empty), "no images")
    assert not (tmp_path / "out").exists()


def test_resume_on_a_folder_without_a_run(invoke, tmp_path):
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "keep.txt").write_text("user data")
    assert_one_line_error(invoke("run", "image", "--resume", tmp_path / "notarun"), "no genkit run")
    assert sorted(p.name for p in (tmp_path / "notarun").iterdir()) == ["keep.txt"]


def test_config_with_unknown_keys(invoke, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('domain = "image"\n[train]\nsteps = 5\nlearning_rate = 0.1\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"), str(bad), "learning_rate",
                          code=2)
    bad.write_text('[image]\nwidth = 3\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"), "width", code=2)
    bad.write_text('[image]\nsteps = 3\n')  # an engine setting belongs in [train]
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"), "'steps' in [image]",
                          code=2)
    bad.write_text('colour = "blue"\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"), "colour", code=2)
    bad.write_text('[train\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"), "not valid TOML")
    bad.write_text('[train]\nsteps = "many"\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"),
                          f"{bad}: steps must be int, got 'many'", code=2)
    bad.write_text('[train]\nlr_g = nan\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"),
                          f"{bad}: lr_g must be a finite number", code=2)
    bad.write_text('[image]\nd_norm = "weird"\n')
    assert_one_line_error(invoke("run", "image", "--config", bad, "--out", tmp_path / "o"),
                          "d_norm must be one of batch, spectral, layer, none", code=2)
    assert not (tmp_path / "o").exists()


def test_out_folder_with_user_files_is_never_overwritten(invoke, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    assert_one_line_error(invoke("run", "image", "--out", out), "not empty")
    assert (out / "thesis.tex").read_text() == "precious"


def test_bad_flag_is_a_usage_error(invoke):
    result = invoke("run", "image", "--steps", "many")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "genkit: error: Invalid value for '--steps': 'many' is not a valid int (see 'genkit run image --help')"]


def test_unexpected_errors_are_one_line_unless_debugging(tmp_path):
    code = ("from genkit.cli import main\nimport genkit.cli as c\n"
            "def boom(*a, **k):\n    raise RuntimeError('kaboom')\n"
            "c.info_domain = boom\nmain(['info', 'image'])\n")
    quiet = python(code)
    assert quiet.returncode == 1
    assert quiet.stderr.strip().splitlines() == [
        "genkit: error: RuntimeError: kaboom (set GENKIT_DEBUG=1 for the traceback)"]
    loud = python(code, GENKIT_DEBUG="1")
    assert loud.returncode == 1 and "Traceback" in loud.stderr


def test_resume_of_a_run_without_a_checkpoint_starts_it_again(invoke, tmp_path):
    out = tmp_path / "run"
    args = ("--g-width", "8", "--d-width", "8", "--batch-size", "16", "--log-every", "1")
    assert invoke("run", "image", *args, "--steps", "2", "--out", out, "--quiet").exit_code == 0
    first = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    shutil.rmtree(out / "checkpoints")
    refused = invoke("run", "image", "--resume", out, "--quiet")  # a finished run is never retrained over
    assert refused.exit_code == 1 and "no checkpoint to continue from" in refused.stderr
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "checkpoint": None}))
    (out / "metrics.jsonl").write_text('{"step": 7, "loss_d": 1.0, "loss_g": 1.0}\n')  # as a run stopped in pre-training
    result = invoke("run", "image", "--resume", out)  # not --quiet: that silences warnings too
    assert result.exit_code == 0, result.stderr
    assert "stopped before its first checkpoint; starting it again from step 0" in result.stderr
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == first and 7 not in steps  # the stale log was replaced, not appended to
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_writes_a_checkpoint_before_exiting(tmp_path, sig):
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "genkit", "run", "image", "--g-width", "8", "--d-width", "8",
                             "--batch-size", "16", "--steps", "100000", "--log-every", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "GENKIT_CACHE": str(tmp_path / "cache")})
    deadline = time.time() + 90
    while not (out / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, sig), stderr
    assert "Traceback" not in stderr
    assert f"--resume {out}" in stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    ckpt = Path(summary["checkpoint"])
    assert (ckpt / "state.pt").is_file() and (ckpt / "generator.safetensors").is_file()
    assert (out / "checkpoints" / "latest").read_text().strip() == ckpt.name


def test_without_a_terminal_a_run_prints_one_plain_line_per_log_step(invoke, tmp_path):
    """nohup and batch jobs are not silent: one line per --log-every steps with losses, speed and ETA."""
    import re

    result = invoke("run", "image", "--g-width", "4", "--d-width", "4", "--batch-size", "8", "--steps", "4",
                    "--log-every", "2", "--eval-samples", "0", "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if " step " in x]
    assert [re.match(r"genkit: image step (\d)/4 loss_d \d+\.\d{3} loss_g \d+\.\d{3} \| [\d.]+ steps/s, ETA \d+m\d\ds$",
                     x).group(1) for x in lines] == ["2", "4"]
    quiet = invoke("run", "image", "--g-width", "4", "--d-width", "4", "--batch-size", "8", "--steps", "2",
                   "--eval-samples", "0", "--out", tmp_path / "q", "--quiet")
    assert quiet.stderr == ""


def test_without_a_terminal_a_pre_training_phase_prints_plain_lines_too(invoke, tmp_path):
    """The text domain's MLE phase (minutes on a corpus) reports like the adversarial loop: at most about 20 lines,
    each with the phase's own loss, speed and ETA; --quiet silences it."""
    import re

    from genkit.engine import phase_log_every

    assert [phase_log_every(n, k) for n, k in ((1800, 10), (5, 1), (40, 2), (100000, 50))] == [100, 1, 2, 5000]
    args = ["run", "text", "--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--d-embed", "8", "--d-filters", "4",
            "--vocab-size", "300", "--max-len", "12", "--batch-size", "8", "--pretrain-steps", "40", "--steps", "2",
            "--log-every", "1", "--bleu-samples", "10", "--sweep", "1.0", "--eval-every", "0",
            "--checkpoint-every", "0", "--sample-every", "0", "--mle-patience", "0"]
    result = invoke(*args, "--out", tmp_path / "r")
    assert result.exit_code == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if " mle step " in x]
    steps = [re.match(r"genkit: text mle step (\d+)/40 nll \d+\.\d{3} \| [\d.]+ steps/s, ETA \d+m\d\ds$", x).group(1)
             for x in lines]
    assert steps == [str(2 * i) for i in range(1, 21)]  # every 2 steps: 20 lines, not 40
    nll = [float(x.split(" nll ")[1].split()[0]) for x in lines]
    assert nll[-1] < nll[0]  # the running training loss falls
    assert invoke(*args, "--out", tmp_path / "q", "--quiet").stderr == ""
    # with early stopping, the latest check's held-out NLL joins the line once there is one (every 10 steps here)
    result = invoke(*args[:-1], "20", "--mle-check-every", "10", "--out", tmp_path / "e")
    assert result.exit_code == 0, result.stderr
    lines = [x for x in result.stderr.splitlines() if " mle step " in x]
    assert [" heldout " in x for x in lines] == [False] * 5 + [True] * 15


def test_threads_and_the_environment_in_help(invoke, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        genkit_run = invoke("run", "image", "--g-width", "4", "--d-width", "4", "--batch-size", "8", "--steps", "1",
                            "--eval-samples", "0", "--threads", "1", "--out", tmp_path / "r", "--quiet")
        assert genkit_run.exit_code == 0 and torch.get_num_threads() == 1
        assert "threads = 1" in (tmp_path / "r" / "config.toml").read_text()
    finally:
        torch.set_num_threads(before)
    text = invoke("--help").stdout
    import re

    root = Path(__file__).resolve().parents[1]
    read = {m for p in [*root.glob("genkit/*.py"), *root.glob("plugins/*/*.py")]
            for m in re.findall(r"environ\.get\(\"(GENKIT_\w+)\"", p.read_text())}
    assert read >= {"GENKIT_CACHE", "GENKIT_LOAD_PLUGINS", "GENKIT_DEBUG", "GENKIT_PROGRESS"}
    for name in (*read, "_GENKIT_COMPLETE"):  # every variable genkit reads is in genkit --help
        assert name in text, name
