"""Regenerate docs/cli.md from the commands' own --help (tests/test_docs.py fails when it drifts).

    python docs/gen_cli.py > docs/cli.md
"""

from __future__ import annotations

import os

from click.testing import CliRunner

os.environ["GENKIT_LOAD_PLUGINS"] = ""  # built-in plugins only: the reference documents genkit itself

from genkit.cli import create_cli  # noqa: E402
from genkit.plugins import registry  # noqa: E402


def render() -> str:
    cli = create_cli()
    runner = CliRunner()
    parts = ["# genkit command-line reference",
             "",
             "Generated from each command's `--help` by `python docs/gen_cli.py > docs/cli.md`; a test checks "
             "that it matches the code. The options of `genkit run DOMAIN` and `genkit info DOMAIN` are generated "
             "from the settings' declarations (the engine's `TrainConfig` and the domain's `Options`), and each "
             "`[default: ...]` is that domain's effective default (its recipe applied). Common behaviour: data goes "
             "to stdout, progress and messages to stderr (every command takes `-q/--quiet`: no progress bar, "
             "warnings or notes, errors only; and `-v/--verbose`: also the resolved config and device, the "
             "checkpoint used and timing; before or after the command name); an expected failure prints one line "
             "`genkit: error: ...` "
             "and exits 1 (a traceback only with `GENKIT_DEBUG=1`); a bad value (type, choice, range) or an unknown "
             "flag is a usage error: one line, exit 2, nothing written; a run stopped by Ctrl-C or SIGTERM writes a "
             "checkpoint and exits 130 or 143.",
             ""]
    commands = [[], ["plugins"], ["info"], ["run"]]
    commands += [["run", d] for d in sorted(registry().domains)]
    commands += [["info", d] for d in sorted(registry().domains)]
    commands += [["sample"]]
    commands += [[c] for c in sorted(cli.commands) if [c] not in commands and c not in ("run", "info")]
    for args in commands:
        result = runner.invoke(cli, args + ["--help"], prog_name="genkit", terminal_width=100)
        parts += [f"## genkit {' '.join(args)}".rstrip(), "", "```", result.output.rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(), end="")
