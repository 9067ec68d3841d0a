"""Docs that must not drift from the code: the CLI reference, the hook list, the README's two commands."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

from genkit import hookspecs

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_generated_from_the_code():
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "gen_cli.py")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout == (ROOT / "docs" / "cli.md").read_text(), "docs/cli.md is stale: python docs/gen_cli.py > docs/cli.md"


def test_every_hook_is_documented_with_its_signature():
    doc = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name, fn in vars(hookspecs).items() if name.startswith("genkit_") and callable(fn)]
    assert len(hooks) == 3
    for name in hooks:
        signature = f"{name}{inspect.signature(getattr(hookspecs, name))}"
        assert f"### {signature}" in doc, signature


def test_readme_gives_exactly_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme.split("## Quick start")[1].split("## ")[0], re.S)
    assert len(blocks) == 2
    install_and_run, install_and_test = (b.strip() for b in blocks)
    assert install_and_run.endswith("genkit run image")
    assert install_and_test.endswith("pytest")
    assert install_and_test in (ROOT / ".ci" / "run").read_text()


def test_the_python_api_exists_as_documented():
    import genkit

    doc = (ROOT / "docs" / "python-api.md").read_text()
    train = inspect.signature(genkit.train)
    assert list(train.parameters)[:2] == ["domain", "out"] and train.parameters["out"].default is None
    assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in train.parameters.values())
    assert "## genkit.train(domain, out=None, *, preset=None, data=None, config=None, resume=None, quiet=True, " \
           "**settings) -> Run" in doc
    for name, params in {"sample": ["n", "seed", "best"], "write_samples": ["n", "out_dir", "seed"],
                         "evaluate": ["best"]}.items():
        signature = inspect.signature(getattr(genkit.Run, name))
        assert list(signature.parameters)[1:len(params) + 1] == params, name
        assert f"`run.{name}(" in doc, name
    assert callable(genkit.Run.open) and "`Run.open(path)`" in doc
