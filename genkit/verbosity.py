"""How much genkit says on stderr: one state per process, set by ``-q/--quiet`` and ``-v/--verbose`` (every command).

* quiet: no progress bar or per-step line, no warnings and no notes; errors (and an interruption's resume hint)
  still print.
* normal: progress (a bar with ETA on a terminal; one plain line per ``--log-every`` steps otherwise), warnings,
  the one-line start of a run.
* verbose: also notes (``genkit: ...``) with detail: the resolved config and device at a run's start, the checkpoint
  that ``sample`` and ``eval`` load, how long a command took.

The CLI sets it for the length of one command; the Python API leaves it alone (``genkit.train(quiet=...)``). This
module imports no torch.
"""

from __future__ import annotations

import click

QUIET, NORMAL, VERBOSE = -1, 0, 1
_level = NORMAL


def set_level(level: int) -> None:
    global _level
    _level = level


def level() -> int:
    return _level


def quiet() -> bool:
    return _level <= QUIET


def verbose() -> bool:
    return _level >= VERBOSE


def note(message: str) -> None:
    """Detail on stderr, only with ``--verbose``; each line of ``message`` is prefixed with ``genkit: ``."""
    if verbose():
        for line in message.splitlines() or [""]:
            click.echo(f"genkit: {line}", err=True)


__all__ = ["NORMAL", "QUIET", "VERBOSE", "level", "note", "quiet", "set_level", "verbose"]
