"""-q/--quiet and -v/--verbose on every command, one state per invocation; the progress bar's ETA on a terminal."""

from __future__ import annotations

import io
import json
import shutil

import click
import pytest

from genkit import verbosity
from genkit.errors import deprecated, warn

TINY = ["--g-width", "4", "--d-width", "4", "--batch-size", "8", "--steps", "2", "--eval-samples", "0"]


def commands(cli: click.Group, ctx: click.Context, path: tuple[str, ...] = ()):
    """Every command path of the CLI, the domains' run and info commands included."""
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from commands(cmd, ctx, (*path, name))


def test_every_command_has_quiet_and_verbose(invoke):
    from genkit.cli import create_cli

    cli = create_cli()
    ctx = click.Context(cli)
    found = list(commands(cli, ctx))
    assert {("run", "image"), ("info", "text"), ("sample",), ("eval",), ("plugins",), ("new-plugin",)} <= \
        {path for path, _ in found}
    for path, cmd in [((), cli), *found]:
        flags = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, path
        text = invoke(*path, "--help").stdout
        assert "-q, --quiet" in text and "-v, --verbose" in text, path
    both = invoke("-q", "plugins", "-v")
    assert both.exit_code == 2 and both.stderr.splitlines() == [
        "genkit: error: --quiet and --verbose exclude each other (see 'genkit plugins --help')"]


def test_warnings_and_notes_follow_the_level(capsys):
    try:
        verbosity.set_level(verbosity.QUIET)
        warn("not shown")
        deprecated("not shown either")
        verbosity.note("nor this")
        assert capsys.readouterr().err == ""
        verbosity.set_level(verbosity.NORMAL)
        warn("shown")
        verbosity.note("a note only with --verbose")
        assert capsys.readouterr().err == "genkit: warning: shown\n"
        verbosity.set_level(verbosity.VERBOSE)
        verbosity.note("two\nlines")
        assert capsys.readouterr().err == "genkit: two\ngenkit: lines\n"
    finally:
        verbosity.set_level(verbosity.NORMAL)


@pytest.mark.parametrize("where", ["root", "command"])
def test_quiet_says_nothing_but_errors(invoke, tmp_path, where):
    def genkit(*args):
        return invoke("-q", *args) if where == "root" else invoke(*args, "-q")

    out = tmp_path / "run"
    result = genkit("run", "image", *TINY, "--log-every", "1", "--out", out)
    assert result.exit_code == 0 and result.stderr == ""
    assert verbosity.level() == verbosity.NORMAL  # the level holds for one command only
    # A warning (a resume that starts again from step 0) is silenced too; without -q it is shown.
    shutil.rmtree(out / "checkpoints")
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "checkpoint": None}))
    result = genkit("run", "image", "--resume", out)
    assert result.exit_code == 0 and result.stderr == ""
    shutil.rmtree(out / "checkpoints")
    (out / "summary.json").write_text(json.dumps({**summary, "status": "interrupted", "checkpoint": None}))
    loud = invoke("run", "image", "--resume", out)
    assert "genkit: warning: --resume" in loud.stderr and " step 2/2 " in loud.stderr
    for args in (["sample", out, "-n", "2", "--out", tmp_path / "s"], ["eval", out], ["plugins"],
                 ["info", "image", "--g-width", "4"]):
        result = genkit(*args)
        assert result.exit_code == 0 and result.stderr == "", args
    error = genkit("sample", tmp_path / "nowhere")  # errors still print
    assert error.exit_code == 1 and error.stderr.startswith("genkit: error: ")


def test_verbose_adds_detail(invoke, tmp_path):
    out = tmp_path / "run"
    result = invoke("run", "image", *TINY, "--out", out, "-v")
    assert result.exit_code == 0, result.stderr
    err = result.stderr
    assert "genkit: device cpu (" in err and " parameters" in err
    assert "genkit: resolved config:\n" in err and "genkit: [train]\n" in err and "genkit: steps = 2\n" in err
    assert "genkit: completed: 2 steps" in err and f"checkpoint {out / 'checkpoints' / 'step-00000002'}" in err
    assert err.splitlines()[-1].startswith("genkit: done in ")
    ckpt = out / "checkpoints" / "step-00000002"
    sample = invoke("-v", "sample", out, "-n", "2", "--out", tmp_path / "s")
    assert f"from checkpoint {ckpt}" in sample.stderr and sample.stderr.splitlines()[-1].startswith("genkit: done in ")
    assert sample.stdout.count(".png") == 3  # stdout carries the data only
    evaluated = invoke("eval", out, "--verbose")
    assert f"at checkpoint {ckpt}" in evaluated.stderr
    normal = invoke("sample", out, "-n", "2", "--out", tmp_path / "s2")
    assert normal.stderr == ""


def test_the_bar_on_a_terminal_shows_the_eta(monkeypatch):
    from genkit.progress import progress_bar

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    term = Terminal()
    monkeypatch.setattr("sys.stderr", term)
    monkeypatch.delenv("GENKIT_PROGRESS", raising=False)
    bar = progress_bar(total=10, desc="image")
    assert not bar.disable
    bar.update(4)
    bar.refresh()
    line = term.getvalue().split("\r")[-1]
    assert "image:" in line and "4/10" in line and "<" in line  # [elapsed<remaining, rate]
    bar.close()
    try:
        verbosity.set_level(verbosity.QUIET)
        assert progress_bar(total=10).disable
    finally:
        verbosity.set_level(verbosity.NORMAL)
