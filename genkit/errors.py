"""The one error class for expected failures.

Anything a user can cause (a missing file, a bad value, an unknown domain) raises ``GenkitError``.
The CLI prints it as one line on stderr and exits 1 (2 for a bad setting value: a usage error); a
traceback is shown only with ``GENKIT_DEBUG=1``.
"""

from __future__ import annotations

from typing import Any

import click


class GenkitError(click.ClickException):
    """An expected failure, reported to the user as one line.

    ``exit_code`` is 1, or 2 for a bad value of a setting (the shell's convention for usage errors).
    """

    exit_code = 1

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code  # type: ignore[misc]  # click declares it on the class

    def show(self, file=None) -> None:  # one line, no "Error:" noise from click's default formatting
        click.echo(f"genkit: error: {self.format_message()}", err=True)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: what a one-line error or warning quotes."""
    return (str(exc).strip().splitlines() or [""])[0]


_recorders: list[list[str]] = []  # genkit.datacache keeps a decoding's warnings with its cache entry


def recording_warnings() -> Any:
    """A context manager giving the list of every ``warn`` message while it is open (they still print)."""
    import contextlib

    @contextlib.contextmanager
    def record() -> Any:
        said: list[str] = []
        _recorders.append(said)
        try:
            yield said
        finally:
            _recorders.remove(said)

    return record()


def warn(message: str) -> None:
    """A one-line warning on stderr (never stdout, which carries data); nothing under ``--quiet``."""
    from .verbosity import quiet

    for said in _recorders:
        said.append(message)
    if not quiet():
        click.echo(f"genkit: warning: {message}", err=True)


def warn_once(message: str) -> None:
    """``warn``, once per message and process (a registry rebuilt after each registration does not repeat it)."""
    from .verbosity import quiet

    if message in _said or quiet():
        return
    _said.add(message)
    warn(message)


def deprecated(message: str) -> None:
    """A one-line deprecation warning on stderr, once per message and process; nothing under ``--quiet``."""
    from .verbosity import quiet

    if message in _said or quiet():
        return
    _said.add(message)
    click.echo(f"genkit: deprecated: {message}", err=True)


_said: set[str] = set()
